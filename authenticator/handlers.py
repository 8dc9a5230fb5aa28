"""Hub handlers: per-provider OAuth login/callback, and the account-linking page.

/hub/oauth_login/<id>, /hub/oauth_callback/<id> reuse oauthenticator's handlers (state
cookie, PKCE helpers, state checks) and add the provider id, discovery before the redirect,
and the `nonce`.

/hub/link-accounts lets a signed-in user bind another sign-in method to their account: a
provider (POST, XSRF-checked, then the provider's flow; the callback binds only if the
signed state cookie names the same signed-in user) or the directory (username + password
form). The binding goes into the account's auth_state, which only the hub writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from oauthenticator.oauth2 import (
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
    """Redirect to one provider's authorization endpoint."""

    _backend: Any = None

    @property
    def _OAUTH_AUTHORIZE_URL(self) -> str:
        return self._backend.authorize_url

    async def get(self, provider: str) -> None:  # type: ignore[override]
        await self._redirect_to_provider(provider, {"next_url": self._get_next_url()})

    async def _redirect_to_provider(self, provider: str, extra_state: dict) -> None:
        backend = self._backend = self.authenticator.oidc_backend(provider)
        await backend.ensure_endpoints()
        state_id = self._generate_state_id()
        verifier, challenge = self._generate_pkce_params()
        self.set_state_cookie(_serialize_state({
            "state_id": state_id, "provider": provider, "code_verifier": verifier,
            **extra_state,
        }))
        self.authorize_redirect(
            redirect_uri=backend.get_callback_url(self), client_id=backend.client_id,
            scope=backend.scope, response_type="code",
            extra_params={
                **backend.extra_authorize_params,
                "state": _serialize_state({"state_id": state_id}),
                "code_challenge": challenge, "code_challenge_method": "S256",
                "nonce": id_token.expected_nonce(self.nonce_secret, state_id),
            },
        )


class OIDCCallbackHandler(_NonceMixin, OAuthCallbackHandler):
    """Check state, then log in through KDashAuthenticator.authenticate (one user model),
    or, for a flow started on the linking page, bind the identity to the signed-in user."""

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
        user = await self.login_user({OIDC_PROVIDER_KEY: provider})
        if user is None:
            raise web.HTTPError(403, self.authenticator.custom_403_message)
        self.redirect(self.get_next_url(user))

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
