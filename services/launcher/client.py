"""A small client of the launcher's REST API, for notebooks and scripts.

    from kdash_hub.services.launcher.client import LauncherClient
    launcher = LauncherClient()          # JUPYTERHUB_API_TOKEN and the hub URL from the env
    db = launcher.launch("postgresql", values={"POSTGRES_DB": "sales"}, ttl="4h")
    launcher.list()

Synchronous on purpose (stdlib only): it works the same in a script and in a notebook
cell, which already runs an event loop.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlparse

from .settings import SERVICE_NAME


class LauncherClientError(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


def default_launcher_url() -> str:
    """$KDASH_LAUNCHER_URL, else the hub's public URL (or API URL's host) + the service path."""
    explicit = os.environ.get("KDASH_LAUNCHER_URL")
    if explicit:
        return explicit
    hub = os.environ.get("JUPYTERHUB_PUBLIC_URL") or ""
    if not hub:
        api = urlparse(os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8000/hub/api"))
        hub = f"{api.scheme}://{api.netloc}"
    return f"{hub.rstrip('/')}/services/{SERVICE_NAME}/"


class LauncherClient:
    def __init__(self, url: str | None = None, token: str | None = None,
                 user: str | None = None, timeout: float = 60.0):
        self.url = (url or default_launcher_url()).rstrip("/") + "/"
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self._user = user or os.environ.get("JUPYTERHUB_USER")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + "api/" + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Accept": "application/json",
                     **({"Content-Type": "application/json"} if data else {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                text = resp.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message", e.reason)
            except ValueError:
                message = e.reason
            raise LauncherClientError(e.code, message) from None

    @property
    def user(self) -> str:
        if not self._user:
            self._user = self.request("GET", "whoami")["name"]
        return self._user

    def _path(self, name: str, owner: str | None = None) -> str:
        return f"instances/{quote(owner or self.user, safe='')}/{quote(name, safe='')}"

    def templates(self) -> list[dict]:
        return self.request("GET", "templates")["templates"]

    def list(self, everyone: bool = False) -> list[dict]:
        return self.request("GET", "instances" + ("?all=1" if everyone else ""))["instances"]

    def launch(self, template: str, *, name: str | None = None,
               values: dict[str, Any] | None = None, ttl: str | int | None = None) -> dict:
        body: dict[str, Any] = {"template": template}
        if name:
            body["name"] = name
        if values:
            body["values"] = values
        if ttl is not None:
            body["ttl"] = ttl
        return self.request("POST", "instances", body)

    def get(self, name: str, owner: str | None = None) -> dict:
        return self.request("GET", self._path(name, owner))

    def stop(self, name: str, owner: str | None = None) -> dict:
        return self.request("POST", self._path(name, owner) + "/stop", {})

    def start(self, name: str, owner: str | None = None) -> dict:
        return self.request("POST", self._path(name, owner) + "/start", {})

    def extend(self, name: str, by: str | int, owner: str | None = None) -> dict:
        return self.request("POST", self._path(name, owner) + "/extend", {"by": by})

    def delete(self, name: str, owner: str | None = None) -> None:
        self.request("DELETE", self._path(name, owner))

    def kubeconfig(self) -> str:
        """A kubeconfig (YAML) for your own namespace, with a fresh short-lived token."""
        req = urllib.request.Request(
            self.url + "api/kubeconfig",
            headers={"Authorization": f"token {self.token}", "Accept": "application/yaml"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.read().decode()
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message", e.reason)
            except ValueError:
                message = e.reason
            raise LauncherClientError(e.code, message) from None
