"""The kubeconfig file that points kubectl, kubernetes_asyncio and KubeSpawner at a cluster.

The emulated API server accepts any bearer token, so the user entry is a plain token user,
exactly what a ServiceAccount token kubeconfig looks like on a real cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_NAME = "kdash-local"
DEFAULT_TOKEN = "kdash-local-token"


def kubeconfig_dict(
    server: str,
    *,
    name: str = DEFAULT_NAME,
    token: str = DEFAULT_TOKEN,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A one-cluster, one-user kubeconfig whose current context is that cluster."""
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }


def write_kubeconfig(path: Path | str, server: str, **kwargs: Any) -> Path:
    """Write the kubeconfig for `server` to `path` (mode 0600, parents created, atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig_dict(server, **kwargs), f, sort_keys=False)
    os.replace(tmp, path)
    return path


def server_of(path: Path | str) -> str:
    """The server URL of the current context of the kubeconfig at `path`."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    current = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    return cluster["server"]
