"""The kubeconfig file that points kubectl, kubernetes_asyncio and KubeSpawner at a cluster.

The emulated API server accepts any bearer token, so the user entry is a plain token user,
exactly what a ServiceAccount token kubeconfig looks like on a real cluster.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .apiclient import KubeHTTP

DEFAULT_NAME = "kdash-local"
DEFAULT_TOKEN = "kdash-local-token"


def kubeconfig_dict(
    server: str,
    *,
    name: str = DEFAULT_NAME,
    token: str | None = DEFAULT_TOKEN,
    namespace: str | None = None,
    certificate_authority_data: str | None = None,
    client_certificate_data: str | None = None,
    client_key_data: str | None = None,
) -> dict[str, Any]:
    """A one-cluster, one-user kubeconfig whose current context is that cluster: a token
    user, or (a real control plane) a client-certificate user with the cluster's CA."""
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    cluster: dict[str, Any] = {"server": server}
    if certificate_authority_data:
        cluster["certificate-authority-data"] = certificate_authority_data
    user: dict[str, Any] = {"token": token} if token else {}
    if client_certificate_data and client_key_data:
        user["client-certificate-data"] = client_certificate_data
        user["client-key-data"] = client_key_data
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
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


def client_for(path: Path | str, *, user_agent: str = "kdash-hub") -> KubeHTTP:
    """A KubeHTTP for the current context of a kubeconfig: its server, its CA (verified) and
    its token or client certificate, as kubectl would use them."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    current = config.get("current-context")
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next((u["user"] for u in config.get("users") or []
                 if u["name"] == context.get("user")), {}) or {}
    context_ssl = None
    if cluster["server"].startswith("https://"):
        ca = cluster.get("certificate-authority-data")
        context_ssl = ssl.create_default_context(
            cadata=base64.b64decode(ca).decode() if ca else None,
            cafile=cluster.get("certificate-authority"))
        if user.get("client-certificate-data") and user.get("client-key-data"):
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "c.crt", Path(tmp) / "c.key"
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                context_ssl.load_cert_chain(cert, key)
    return KubeHTTP(cluster["server"], user.get("token"), user_agent=user_agent,
                    ssl_context=context_ssl)
