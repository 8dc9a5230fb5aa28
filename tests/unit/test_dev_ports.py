"""free_port: ports no outgoing connection can take as its source port meanwhile."""

from __future__ import annotations

import socket

from kdash_hub.dev import ports


def test_ports_come_from_below_the_ephemeral_range_and_are_free():
    low, _ = ports.ephemeral_range()
    picked = {ports.free_port() for _ in range(50)}
    assert len(picked) > 40  # random, not one port again and again
    for port in picked:
        assert ports.LOWEST_PORT <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        # every random pick lands on the port in use: the kernel's free port then
        monkeypatch.setattr(ports, "LOWEST_PORT", taken)
        monkeypatch.setattr(ports.secrets, "randbelow", lambda n: 0)
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (taken + 5000, 60999))
        port = ports.free_port()
        assert port != taken
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_an_unreadable_range_means_linuxs_default(tmp_path):
    assert ports.ephemeral_range(tmp_path / "missing") == (32768, 60999)
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ports.ephemeral_range(tmp_path / "range") == (40000, 50000)


def _listener() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    return server


def test_a_listener_makes_a_port_busy_until_it_closes():
    server = _listener()
    port = server.getsockname()[1]
    assert not ports.port_is_free("127.0.0.1", port)
    server.close()
    assert ports.port_is_free("127.0.0.1", port)


def test_connections_a_server_closed_do_not_make_its_port_busy():
    """The server closes first (as an HTTP/1.0 server does): its side of the connection
    stays in TIME_WAIT for a minute, which stops no server from binding the port again;
    nor may it stop the pod network from giving a pod's address to the next pod."""
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side first: TIME_WAIT is on the server's port
    client.recv(1)
    client.close()
    server.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        try:  # without SO_REUSEADDR the lingering connection refuses the bind
            plain.bind(("127.0.0.1", port))
            lingering = False
        except OSError:
            lingering = True
    assert lingering, "the closed connection should linger in TIME_WAIT on the port"
    assert ports.port_is_free("127.0.0.1", port)


def test_ports_picked_together_are_different(monkeypatch):
    """Each pick is free until its server binds it: picks made together must still differ
    (CI once gave a hub and its proxy's API one port)."""
    picks = iter([0, 0, 7, 0, 7, 9, 3])
    monkeypatch.setattr(ports.secrets, "randbelow", lambda n: next(picks))
    monkeypatch.setattr(ports, "port_is_free", lambda host, port: True)
    low = ports.LOWEST_PORT
    assert ports.free_ports(3) == [low, low + 7, low + 9]
    assert ports.free_ports(1, taken=(low,)) == [low + 3]
