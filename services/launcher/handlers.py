"""The base of every launcher handler: hub authentication (OAuth cookie or API token),
the acting user, errors as JSON (API) or a page (UI), and the security headers of every
launcher answer (a strict Content-Security-Policy: no inline script can run)."""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web

from .instances import Actor, InstanceManager, LauncherError

# pages load their script and styles from this origin only; nothing inline runs
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class LauncherHandler(HubOAuthenticated, web.RequestHandler):
    """Authenticates once per request (async) and knows the manager and settings."""

    api = False  # API handlers answer 403 JSON instead of redirecting to the login

    def set_default_headers(self) -> None:
        for key, value in SECURITY_HEADERS.items():
            self.set_header(key, value)

    @property
    def manager(self) -> InstanceManager:
        return self.settings["manager"]

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        user = None
        if model:
            try:
                user = self.check_hub_user(model)
            except UserNotAllowed:
                raise web.HTTPError(
                    403, "your token doesn't have the scope access:services!service="
                         "kdash-launcher (ask an admin to grant it)") from None
        if user and {"kdash-pending", "kdash-rejected"} & set(user.get("groups") or []):
            raise web.HTTPError(403, "your hub account is not approved (onboarding approval:"
                                     " pending or rejected), so the launcher is closed to it")
        self._hub_auth_user_cache = user
        if user is None:
            if self.api or self.request.method not in ("GET", "HEAD"):
                raise web.HTTPError(403, "authentication required: log in to the hub or send"
                                         " a hub API token (Authorization: token ...)")
            self.redirect(self.get_login_url())
            return

    @property
    def actor(self) -> Actor:
        user = self.current_user
        return Actor(name=user["name"],
                     admin=bool(user.get("admin")) and user.get("kind", "user") == "user")

    @property
    def is_user(self) -> bool:
        return (self.current_user or {}).get("kind", "user") == "user"

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        for key, value in SECURITY_HEADERS.items():
            self.set_header(key, value)
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif isinstance(exc, LauncherError):
            message = exc.message
        if self.api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))
        else:
            self.render("error.html", status=status_code, message=message)

    def log_exception(self, typ, value, tb) -> None:  # LauncherErrors are answers, not bugs
        if isinstance(value, LauncherError):
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, LauncherError):
            if self._finished:
                return
            self.set_status(e.status)
            self.write_error(e.status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)

    def get_template_namespace(self) -> dict[str, Any]:
        ns = super().get_template_namespace()
        ns.update(
            prefix=self.manager.settings.service_prefix,
            hub_prefix=self.hub_auth.hub_prefix,
            user=self.current_user,
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes)
            else self.xsrf_token,
        )
        return ns
