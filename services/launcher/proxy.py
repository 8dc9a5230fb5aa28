"""The authenticating reverse proxy to an instance, HTTP and WebSocket.

`<prefix>proxy/<owner>/<instance>/<path>` is forwarded only for the instance's exact owner
(and admins when `admin_proxy_access` is on); anyone else gets the same 404 as for an
instance that doesn't exist. It connects only to a ready pod of the instance's own
workload (`targets.py`). Only the request headers of `proxy_forward_headers` go on; the
hub's and the launcher's credentials never do (no Authorization, none of their cookies),
and an instance can't set cookies under their names.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from tornado import httpclient, web, websocket
from tornado.httputil import HTTPHeaders

from .handlers import LauncherHandler
from .instances import LauncherError

log = logging.getLogger("kdash_hub.launcher.proxy")
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length",
}
# WebSocket handshake headers the client library sets itself
WS_HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                "sec-websocket-protocol"}
# the hub's cookies (jupyterhub/handlers/base.py, objects.py, user.py): its login session,
# its own login cookie, each server's login cookie and OAuth state, the old services cookie
HUB_COOKIES = ("jupyterhub-session-id", "jupyterhub-hub-login", "jupyterhub-services")
HUB_COOKIE_PREFIXES = ("jupyterhub-user-",)
# JupyterHub's xsrf cookie, which the launcher (a HubOAuth service) sets on its path
XSRF_COOKIE = "_xsrf"


class CookieFilter:
    """Which cookie names are the hub's or the launcher's, by exact name: the launcher's
    own names come from its running HubOAuth (`service-kdash-launcher`, its OAuth state
    cookies `...-oauth-state` and `...-oauth-state-<8 letters>`); any of them may carry
    JupyterHub's `__Host-` prefix."""

    def __init__(self, launcher_cookie: str, launcher_state_cookie: str):
        self.exact = {*HUB_COOKIES, XSRF_COOKIE, launcher_cookie.removeprefix("__Host-"),
                      launcher_state_cookie.removeprefix("__Host-")}
        self.state = launcher_state_cookie.removeprefix("__Host-")

    def protected(self, name: str) -> bool:
        bare = name.strip().removeprefix("__Host-")
        if bare in self.exact or bare.startswith(HUB_COOKIE_PREFIXES):
            return True
        suffix = bare.removeprefix(self.state + "-")
        return suffix != bare and len(suffix) == 8 and suffix.isascii() and suffix.isalpha()

    def strip(self, header: str) -> str:
        kept = []
        for part in header.split(";"):
            name = part.strip().split("=", 1)[0]
            if name and not self.protected(name):
                kept.append(part.strip())
        return "; ".join(kept)

    def set_cookie_allowed(self, value: str) -> bool:
        return not self.protected(value.split("=", 1)[0])


_COOKIE_PATH = re.compile(r"(;\s*path=)(/[^;]*)", re.IGNORECASE)


def rewrite_header(key: str, value: str, prefix: str) -> str:
    """Keep an app that thinks it lives at `/` inside its proxy path (`prefix`):
    absolute redirects and cookie paths get the prefix."""
    if not prefix:
        return value
    lower = key.lower()
    if lower == "location" and value.startswith("/") and not value.startswith("//"):
        return prefix + value
    if lower == "set-cookie":
        return _COOKIE_PATH.sub(lambda m: m.group(1) + (prefix + m.group(2)).rstrip("/"), value)
    return value


class ProxyHandler(LauncherHandler, websocket.WebSocketHandler):
    """One handler for both: a plain request is forwarded with the HTTP client, an
    Upgrade request becomes a WebSocket relayed to a WebSocket opened upstream."""

    upstream_ws: websocket.WebSocketClientConnection | None = None

    def set_default_headers(self) -> None:  # the instance's answers carry its own headers
        pass

    @property
    def api(self) -> bool:  # errors as a page for browsers, JSON for programs
        return "text/html" not in self.request.headers.get("Accept", "")

    def check_xsrf_cookie(self) -> None:
        # requests the proxied app makes from its own pages are same-origin
        if self.request.headers.get("Sec-Fetch-Site") in ("same-origin", "none"):
            return
        super().check_xsrf_cookie()

    async def _target(self, owner: str, name: str, path: str, scheme: str) -> str:
        base, strip = await self.manager.upstream(self.actor, owner, name)
        self._strip = strip
        if strip:  # from the raw path, so the app gets the encoding the client sent
            tail = self.request.path[len(self.manager.settings.service_prefix + "proxy/"):]
            parts = tail.split("/", 2)
            target = "/" + (parts[2] if len(parts) > 2 else "")
        else:
            target = self.request.path
        if scheme == "ws":
            base = "ws" + base[len("http"):]
        query = self.request.query
        return base.rstrip("/") + target + (f"?{query}" if query else "")

    @property
    def cookie_filter(self) -> CookieFilter:
        return CookieFilter(self.hub_auth.cookie_name, self.hub_auth.state_cookie_name)

    def _forward_headers(self, owner: str, name: str) -> HTTPHeaders:
        allowed = {h.lower() for h in self.manager.settings.proxy_forward_headers}
        allowed -= {"authorization", "proxy-authorization", *HOP_BY_HOP, *WS_HANDSHAKE}
        cookies = self.cookie_filter
        headers = HTTPHeaders()
        for key, value in self.request.headers.get_all():
            lower = key.lower()
            if lower not in allowed:
                continue
            if lower == "cookie":
                value = cookies.strip(value)
                if not value:
                    continue
            headers.add(key, value)
        headers["X-Forwarded-Host"] = self.request.host
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-For"] = self.request.remote_ip or ""
        headers["X-Forwarded-Prefix"] = self.manager.path_prefix(owner, name)
        headers["X-Forwarded-User"] = self.actor.name
        return headers

    # --- HTTP ----------------------------------------------------------------------
    async def get(self, owner: str, name: str, path: str = "") -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._authorise_ws(owner, name, path)
            await websocket.WebSocketHandler.get(self, owner, name, path)
            return
        await self._proxy_http(owner, name, path)

    async def _proxy_http(self, owner: str, name: str, path: str = "") -> None:
        url = await self._target(owner, name, path, "http")
        method = self.request.method
        body = self.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        request = httpclient.HTTPRequest(
            url, method=method, headers=self._forward_headers(owner, name), body=body,
            follow_redirects=False, decompress_response=False, allow_nonstandard_methods=True,
            request_timeout=self.settings.get("proxy_timeout", 300),
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as e:
            raise LauncherError(502, f"instance {name!r} is not reachable: {e}") from None
        if response.code == 599:
            raise LauncherError(502, f"instance {name!r} is not reachable: {response.error}")
        self.set_status(response.code, response.reason)
        for default in ("Content-Type", "Server", "Date"):
            self.clear_header(default)
        prefix = self.manager.path_prefix(owner, name) if self._strip else ""
        cookies = self.cookie_filter
        for key, value in response.headers.get_all():
            lower = key.lower()
            if lower in HOP_BY_HOP:
                continue
            if lower == "set-cookie" and not cookies.set_cookie_allowed(value):
                log.warning("instance %s/%s tried to set the protected cookie %s", owner, name,
                            value.split("=", 1)[0][:64])
                continue
            self.add_header(key, rewrite_header(key, value, prefix))
        if response.code not in (204, 304) and method != "HEAD" and response.body:
            self.write(response.body)
        self.finish()

    post = put = patch = delete = head = options = _proxy_http

    # --- WebSocket --------------------------------------------------------------------
    async def _authorise_ws(self, owner: str, name: str, path: str) -> None:
        self._ws_url = await self._target(owner, name, path, "ws")
        self._ws_headers = self._forward_headers(owner, name)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        self._subprotocols = subprotocols
        return subprotocols[0] if subprotocols else None

    async def open(self, owner: str, name: str, path: str = "") -> None:
        request = httpclient.HTTPRequest(self._ws_url, headers=self._ws_headers)
        try:
            self.upstream_ws = await websocket.websocket_connect(
                request, on_message_callback=self._from_upstream,
                subprotocols=getattr(self, "_subprotocols", None) or None,
            )
        except Exception as e:  # noqa: BLE001 - any failure closes the client side
            log.warning("websocket to %s failed: %s", self._ws_url, e)
            self.close(1011, "instance not reachable")

    def _from_upstream(self, message: Any) -> None:
        if message is None:
            if self.ws_connection is not None:
                self.close()
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream_ws is not None:
            await self.upstream_ws.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream_ws is not None:
            self.upstream_ws.close()
            self.upstream_ws = None

    def on_ping(self, data: bytes) -> None:
        if self.upstream_ws is not None:
            self.upstream_ws.ping(data)

    # errors before the upgrade are ordinary HTTP answers
    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        web.RequestHandler.send_error(self, status_code, **kwargs)


def proxy_routes(prefix: str) -> list[tuple[str, type]]:
    return [
        (prefix + r"proxy/([^/]+)/([^/]+)/?(.*)", ProxyHandler),
    ]
