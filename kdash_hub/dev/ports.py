"""Free TCP ports on the loopback interface for services started by the demo and tests."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# the lowest port picked: above the well-known and most registered service ports
LOWEST_PORT = 10000
# how many random ports are tried before the kernel is asked for any free one
TRIES = 64


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default when
    it cannot be read)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(ip: str, port: int) -> bool:
    """True when nothing on this machine listens on ip:port (another cluster's pod, say).

    Checked as a server binds (SO_REUSEADDR, as tornado, aiohttp, node and http.server all
    do): connections a server closed there linger in TIME_WAIT for a minute and would make
    a plain bind fail, yet they stop no server; a pod's address after its notebook answered
    a request was skipped by the pod network for that minute."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now, picked at random below the
    ephemeral range: a port inside it (what binding port 0 gives) can be taken, between this
    check and the bind of the server it is for, as the source port of any outgoing connection
    on a busy loopback (seen in CI: configurable-http-proxy failing with EADDRINUSE). The
    pick uses `secrets`, not `random`, whose state pytest-randomly sets alike in every
    pytest-xdist worker."""
    low, _ = ephemeral_range()
    if low - LOWEST_PORT >= 1000:
        for _ in range(TRIES):
            port = LOWEST_PORT + secrets.randbelow(low - LOWEST_PORT)
            if port_is_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1", taken: tuple[int, ...] = ()) -> list[int]:
    """`count` different free ports, none of them in `taken`: each is free only until its
    server binds it, so two picks made before either binds could be the same port (seen in
    CI: a hub and its proxy's API given one port)."""
    picked: list[int] = []
    while len(picked) < count:
        port = free_port(host)
        if port not in picked and port not in taken:
            picked.append(port)
    return picked
