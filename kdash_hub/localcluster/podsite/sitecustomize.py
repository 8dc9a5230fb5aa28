"""Loaded by every Python process the process-mode kubelet starts for a pod (its directory
is first on PYTHONPATH): outgoing connections to loopback addresses leave from the pod's
own address (KDASH_POD_IP), as they would from a pod's network namespace, so a server
sees the pod's IP as the client address, not 127.0.0.1.

Only sockets that are not bound yet and connect to 127.0.0.0/8 are bound; anything else
is left alone. Another sitecustomize further down the path is still loaded after this one.
"""

import importlib.util
import os
import socket
import sys

_POD_IP = os.environ.get("KDASH_POD_IP", "")
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _bind_to_pod(sock: socket.socket, address: object) -> None:
    if sock.family != socket.AF_INET or not isinstance(address, tuple) or not address:
        return
    host = str(address[0])
    if not host.startswith("127.") and host != "localhost":
        return
    try:
        if sock.getsockname()[1] == 0:  # not bound yet
            sock.bind((_POD_IP, 0))
    except OSError:
        pass  # the pod's address is gone (the pod is stopping): connect as before


def connect(self: socket.socket, address: object) -> None:
    _bind_to_pod(self, address)
    return _connect(self, address)


def connect_ex(self: socket.socket, address: object) -> int:
    _bind_to_pod(self, address)
    return _connect_ex(self, address)


if _POD_IP and not _POD_IP.startswith("127.0.0."):
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


def _chain() -> None:
    """Load the sitecustomize this one shadows (e.g. a distribution's), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_kdash_next_sitecustomize",
                                                          candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_chain()
