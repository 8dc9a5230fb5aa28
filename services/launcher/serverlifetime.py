"""The signed-in user's own notebook server lifetimes, for the launcher's pages.

The hub keeps each server's deadline (spawner/lifetime_api.py); the launcher only asks it,
with the user's *own* hub token (their launcher login's OAuth token), never its service
token: the hub answers that token for its owner's servers alone, and the path names the
signed-in user, never anything the browser sends. So a user sees and extends their own
servers' lifetimes and nobody else's, and the hub re-checks every extension against the
flavor's bound.

The token can do this when the launcher's OAuth client allows the scopes (`OAUTH_SCOPES`,
set by `hubconfig.launcher_service`): `read:servers!user` to read, `servers!user` to
extend (the lifetime API's own scopes). Without them the page shows no lifetime, or no
extend form, and says to use the hub's home page.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger("kdash_hub.launcher.serverlifetime")
READ_SCOPE, EXTEND_SCOPE = "read:servers!user", "servers!user"
OAUTH_SCOPES = (READ_SCOPE, EXTEND_SCOPE)
HUB_SECONDS = 5.0  # a page waits at most this long for the hub's answers
MAX_SERVERS = 20  # servers asked about per page view (the hub's named-server limit is lower)


class HubRefused(Exception):
    """The hub said no; `message` is its sentence for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServerLifetime:
    """One running server's lifetime as the hub states it (lifetime_api's view)."""

    server: str  # "" for the default server
    deadline: str
    remaining: str
    extend_choices: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"Your server “{self.server}”" if self.server else "Your server"

    @property
    def slug(self) -> str:
        return self.server or "default"


def _lifetime_path(username: str, server: str) -> str:
    if server in (".", ".."):  # dot segments would be resolved away from the server's path
        raise HubRefused(404, f"You have no server named “{server}”.")
    path = "/kdash/lifetime/" + quote(username, safe="")
    return path + ("/" + quote(server, safe="") if server else "")


def _message(status: int, text: str) -> str:
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or f"the hub answered {status}")[:500]


class HubLifetimes:
    """The lifetime API of the hub at `api_url` (…/hub/api), as `token`'s owner `username`."""

    def __init__(self, api_url: str, token: str, username: str, timeout: float = HUB_SECONDS):
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        self.username = username
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, session: aiohttp.ClientSession, method: str, path: str,
                    body: Any = None) -> tuple[int, str]:
        async with session.request(method, self.api_url + path, headers=self.headers,
                                   json=body, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def running(self) -> list[ServerLifetime] | None:
        """The lifetimes of the user's running servers that have one; None when the hub
        can't tell (no scope for it, no lifetime API, or no answer)."""
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                status, text = await self._call(
                    session, "GET", "/users/" + quote(self.username, safe=""))
                if status != 200:
                    log.info("no server lifetimes for %s: the hub answered %d",
                             self.username, status)
                    return None
                servers = (json.loads(text) or {}).get("servers")
                if not isinstance(servers, dict):
                    return None  # the token can't read servers: no scope for it
                found = []
                for name in sorted(servers)[:MAX_SERVERS]:
                    if not (servers[name] or {}).get("ready"):
                        continue
                    status, text = await self._call(
                        session, "GET", _lifetime_path(self.username, name))
                    if status == 200:
                        view = json.loads(text)
                        found.append(ServerLifetime(
                            name, str(view["deadline"]), str(view["remaining"]),
                            [str(c) for c in view.get("extend_choices") or []]))
                    elif status not in (404, 409):  # 409: running without a lifetime
                        log.info("lifetime of %s/%s: the hub answered %d", self.username,
                                 name, status)
                return found
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError,
                TypeError, AttributeError) as e:
            log.warning("server lifetimes of %s: %s: %s", self.username, type(e).__name__, e)
            return None

    async def extend(self, server: str, by: str) -> ServerLifetime:
        """Extend the user's server `server` by `by`; raises HubRefused with the hub's
        sentence (beyond the bound, not running, no scope)."""
        path = _lifetime_path(self.username, server)
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                status, text = await self._call(session, "POST", path, {"extend_by": by})
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("extending %s/%s: %s: %s", self.username, server, type(e).__name__, e)
            raise HubRefused(503, "The hub didn't answer; try again in a minute.") from None
        if status == 403:
            raise HubRefused(403, "Your launcher login can't extend servers; extend it on "
                                  "the hub's home page.")
        if status != 200:
            raise HubRefused(status, _message(status, text))
        view = json.loads(text)
        return ServerLifetime(server, str(view["deadline"]), str(view["remaining"]),
                              [str(c) for c in view.get("extend_choices") or []])
