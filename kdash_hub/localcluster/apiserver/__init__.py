"""The emulated Kubernetes API server.

`APIServer(host="127.0.0.1", port=0)` serves the Kubernetes REST API over plain HTTP on
loopback; see `server.APIServer` for the interface and the modules next to it for each
piece of semantics (store, selectors, patch, validation, quota, gc, controllers, faults).
"""

from .faults import Fault, Faults
from .server import APIServer
from .status import APIError
from .store import Store

__all__ = ["APIServer", "APIError", "Fault", "Faults", "Store"]
