"""Hub handlers: per-provider OAuth login/callback, and the account-linking page.

/hub/oauth_login/<id>, /hub/oauth_callback/<id> reuse oauthenticator's handlers (state
cookie, next_url, PKCE, state checks, login) through their public steps, and add the
provider id, discovery before the redirect, and the `nonce`.

/hub/link-accounts lets a signed-in user bind another sign-in method to their account: a
provider (POST, XSRF-checked, then the provider's flow; the callback binds only if the
signed state cookie names the same signed-in user) or the directory (username + password
form). The binding goes into the account's auth_state, which only the hub writes.

/hub/logout is JupyterHub's LogoutHandler (cookies, shutdown_on_logout) that then also ends
the provider's session (RP-initiated logout) for a user who signed in through a provider.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from jupyterhub.handlers import BaseHandler, LogoutHandler
from jupyterhub.utils import url_path_join
from oauthenticator.oauth2 import (
    STATE_COOKIE_NAME,
    OAuthCallbackHandler,
    OAuthLoginHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import web

from . import id_token
from .accounts import Bindings
from .errors import LoginRefused

OIDC_PROVIDER_KEY = "kdash_oidc_provider"
LINK_PATH = "link-accounts"
LINK_TEMPLATE = Path(__file__).with_name("templates") / "link.html"


class _NonceMixin:
    """The nonce secret is the hub's cookie secret: only the hub can derive a login's nonce."""

    settings: dict[str, Any]

    @property
    def nonce_secret(self) -> bytes:
        secret = self.settings["cookie_secret"]
        return secret if isinstance(secret, bytes) else str(secret).encode()


class OIDCLoginHandler(_NonceMixin, OAuthLoginHandler):
    """Redirect to one provider's authorization endpoint: oauthenticator's own `get()` (state
    cookie, next_url, PKCE, redirect), pointed at the provider's backend, with two additions
    through its public steps: `set_state_cookie` also records the provider (and, when
    linking, the signed-in user) and `authorize_redirect` also sends the nonce."""

    _backend: Any = None
    _extra_state: dict[str, Any] = {}
    _nonce: str = ""

    @property
    def authenticator(self) -> Any:
        """Upstream's `get()` reads client_id, scope, PKCE, callback and authorize URLs from
        `self.authenticator`: during a redirect that is this provider's backend."""
        return self._backend if self._backend is not None else super().authenticator

    async def get(self, provider: str) -> None:  # type: ignore[override]
        await self._redirect_to_provider(provider, {})

    async def _redirect_to_provider(self, provider: str, extra_state: dict) -> None:
        backend = self.settings["authenticator"].oidc_backend(provider)  # 404 if unknown
        await backend.ensure_endpoints()
        self._extra_state = {**extra_state, "provider": provider}
        self._backend = backend
        try:
            redirected = super().get()
            if inspect.isawaitable(redirected):  # sync in oauthenticator 17; async later?
                await redirected
        finally:
            self._backend = None

    def set_state_cookie(self, state_cookie_value: str) -> None:
        state = _deserialize_state(state_cookie_value)
        self._nonce = id_token.expected_nonce(self.nonce_secret, state["state_id"])
        super().set_state_cookie(_serialize_state({**state, **self._extra_state}))

    def authorize_redirect(self, *args: Any, extra_params: dict | None = None,
                           **kwargs: Any) -> None:
        if not self._nonce:
            raise RuntimeError("oauthenticator redirected before setting its state cookie")
        super().authorize_redirect(*args, extra_params={**(extra_params or {}),
                                                        "nonce": self._nonce}, **kwargs)


class OIDCCallbackHandler(_NonceMixin, OAuthCallbackHandler):
    """oauthenticator's callback (`check_arguments`, `login_user`, redirect to next_url) for
    one provider: the provider id goes to KDashAuthenticator.authenticate through the public
    `login_user(data)`. A flow started on the linking page binds the identity to the
    signed-in user instead of logging in."""

    _provider: str = ""

    def state_id(self) -> str:
        return _deserialize_state(self.get_state_cookie()).get("state_id") or ""

    async def get(self, provider: str) -> None:  # type: ignore[override]
        backend = self.authenticator.oidc_backend(provider)  # 404 for unknown providers
        self.check_arguments()  # provider error, code present, state cookie == state param
        state = _deserialize_state(self.get_state_cookie())
        if state.get("provider") != provider:
            raise web.HTTPError(400, "OAuth state is for another provider")
        if "link_for" in state:
            await self._link(backend, state["link_for"])
            return
        self._provider = provider
        await super().get()  # checks again (the state cookie is read once), logs in, redirects

    async def login_user(self, data: dict | None = None) -> Any:
        return await super().login_user({**(data or {}), OIDC_PROVIDER_KEY: self._provider})

    async def _link(self, backend: Any, link_for: str) -> None:
        user = self.current_user
        if user is None or user.name != link_for:
            raise LoginRefused(403, "This linking request was started by another session. "
                               "Sign in and start linking again from the account page.")
        auth = self.authenticator
        params = backend.build_access_tokens_request_params(self, None)
        token_info = await backend.get_token_info(self, params)
        username, claims, detail, _ = await auth.oidc_identity(backend, token_info)
        await auth.link_identity(user, backend.provider.backend_name, claims["sub"],
                                 username, detail)
        self.redirect(url_path_join(self.hub.base_url, LINK_PATH) + "?linked="
                      + backend.provider.id)


class OIDCLogoutHandler(LogoutHandler):
    """JupyterHub's logout, then a redirect to the provider's end_session_endpoint when the
    user signed in through a provider that offers one. Query parameters are ignored: the
    target comes from discovery, the way back is the provider's registered
    post_logout_redirect_uri (default: this hub's login page)."""

    _end_session_url: str = ""

    async def handle_logout(self) -> None:
        # upstream cleared the login cookie; current_user is still the one logging out
        self.clear_cookie(STATE_COOKIE_NAME)
        user = self.current_user
        if user is None:
            return
        if self.request.headers.get("Sec-Fetch-Site") == "cross-site":
            # a link or image on another site: logging out of the hub is upstream's (GET)
            # behaviour, but another site must not also end the person's whole SSO session
            self.log.info("Logout of %s came from another site: the provider session is "
                          "kept", user.name)
            return
        self._end_session_url = await self.authenticator.end_session_url(
            user, self.hub_login_url())

    def hub_login_url(self) -> str:
        """This hub's login page as the browser reached it (the provider must have it
        registered, or the provider refuses the logout request)."""
        path = url_path_join(self.hub.base_url, "login")
        return f"{self.request.protocol}://{self.request.host}{path}"

    async def render_logout_page(self) -> None:
        if self._end_session_url:
            self.redirect(self._end_session_url)
            return
        await super().render_logout_page()


class LinkPageHandler(BaseHandler):
    """The signed-in user's sign-in methods, with a way to link the others."""

    @web.authenticated
    async def get(self) -> None:
        await self.render_link_page()

    async def render_link_page(self, error: str = "", status: int = 200) -> None:
        auth = self.authenticator
        user = self.current_user
        bound = Bindings.from_state(await user.get_auth_state()).identities
        methods = []
        if auth.ldap is not None:
            methods.append({"backend": "ldap", "name": auth.describe("ldap"),
                            "linked": "ldap" in bound})
        for p in auth.providers.values():
            methods.append({"backend": p.backend_name, "id": p.id, "name": p.display_name,
                            "linked": p.backend_name in bound})
        linked = self.get_argument("linked", "")
        notice = ""
        if linked in auth.providers or linked == "ldap":
            notice = f"Linked: you can now sign in with {auth.describe(_backend(linked))}."
        body = self.settings["jinja2_env"].from_string(LINK_TEMPLATE.read_text())
        html = await body.render_async(
            **self.template_namespace, link_base=url_path_join(self.hub.base_url, LINK_PATH),
            methods=methods, error=error, notice=notice, username=user.name)
        self.set_status(status)
        self.finish(html)


def _backend(linked: str) -> str:
    return "ldap" if linked == "ldap" else f"oidc:{linked}"


class LinkOIDCHandler(OIDCLoginHandler):
    """POST (XSRF-checked): start the provider's flow to link it to the signed-in user."""

    async def get(self, provider: str) -> None:  # type: ignore[override]
        raise web.HTTPError(405, "Start linking from the account-linking page.")

    @web.authenticated
    async def post(self, provider: str) -> None:
        await self._redirect_to_provider(provider, {"link_for": self.current_user.name})


class LinkLDAPHandler(LinkPageHandler):
    """POST (XSRF-checked) the directory username and password to link them."""

    @web.authenticated
    async def post(self) -> None:
        auth = self.authenticator
        if auth.ldap is None:
            raise web.HTTPError(404, "Password sign-in is not enabled here.")
        try:
            name = auth.rule.check(self.get_body_argument("username", ""))
            password = self.get_body_argument("password", "")
            identity = None
            if password.strip() and len(password) <= auth.max_password_length:
                identity = await auth.ldap.login(name, password)
            if identity is None:
                raise LoginRefused(403, "Invalid username or password.")
            await auth.link_identity(self.current_user, "ldap", identity.uid,
                                     auth.ldap_username(identity),
                                     auth.ldap_detail(identity))
        except LoginRefused as e:
            await self.render_link_page(error=e.message, status=e.status_code)
            return
        self.redirect(url_path_join(self.hub.base_url, LINK_PATH) + "?linked=ldap")
