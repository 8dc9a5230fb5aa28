"""The launcher's calls to the hub's REST API with its own service token (not a user's).

One call today: have the hub make a user's namespace bundle (spawner/namespace_api.py), so a
side service launched before the first notebook lands in a namespace with its quota, limits
and network policy, and the user's home claim (a template that mounts the home finds it),
made by the hub's identity; the launcher's own identity can't make namespaces.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

log = logging.getLogger("kdash_hub.launcher")
NAMESPACE_PATH = "/kdash/namespace/"


class HubUnavailable(Exception):
    """The hub didn't answer, or answered what isn't a decision about the namespace."""


@dataclass
class HubAnswer:
    """The hub's answer: its status and its message (or the namespace and outcome)."""

    status: int
    message: str = ""
    namespace: str = ""
    outcome: str = ""


class HubClient:
    """Calls to `api_url` (…/hub/api) with `token` (the service's JUPYTERHUB_API_TOKEN)."""

    def __init__(self, api_url: str | None = None, token: str | None = None,
                 timeout: float = 120.0):
        self.api_url = (api_url or os.environ.get("JUPYTERHUB_API_URL", "")).rstrip("/")
        self.token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        return bool(self.api_url and self.token)

    async def provision_namespace(self, username: str) -> HubAnswer:
        """POST kdash/namespace/<user>: the hub's answer, whatever its status; raises
        HubUnavailable when there is none."""
        url = self.api_url + NAMESPACE_PATH + quote(username, safe="")
        headers = {"Authorization": f"token {self.token}"}
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as session, \
                    session.post(url, headers=headers, json={}) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.error("the hub didn't answer %s: %s: %s", url, type(e).__name__, e)
            raise HubUnavailable(f"{type(e).__name__}: {e}") from None
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200:
            return HubAnswer(status, namespace=str(body.get("namespace", "")),
                             outcome=str(body.get("outcome", "")))
        return HubAnswer(status, message=str(body.get("message") or text[:200]))
