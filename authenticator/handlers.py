"""Per-provider OAuth login/callback handlers: /hub/oauth_login/<id>, /hub/oauth_callback/<id>.

They reuse oauthenticator's handlers (state cookie, PKCE helpers, state checks) and add the
provider id, discovery before the redirect, and the `nonce`.
"""

from __future__ import annotations

from typing import Any

from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import web

from . import id_token

OIDC_PROVIDER_KEY = "kdash_oidc_provider"


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
        backend = self._backend = self.authenticator.oidc_backend(provider)
        await backend.ensure_endpoints()
        state_id = self._generate_state_id()
        verifier, challenge = self._generate_pkce_params()
        self.set_state_cookie(_serialize_state({
            "state_id": state_id, "next_url": self._get_next_url(), "provider": provider,
            "code_verifier": verifier,
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
    """Check state, then log in through KDashAuthenticator.authenticate (one user model)."""

    def state_id(self) -> str:
        return _deserialize_state(self.get_state_cookie()).get("state_id") or ""

    async def get(self, provider: str) -> None:  # type: ignore[override]
        self.authenticator.oidc_backend(provider)  # 404 for unknown providers
        self.check_arguments()  # provider error, code present, state cookie == state param
        if _deserialize_state(self.get_state_cookie()).get("provider") != provider:
            raise web.HTTPError(400, "OAuth state is for another provider")
        user = await self.login_user({OIDC_PROVIDER_KEY: provider})
        if user is None:
            raise web.HTTPError(403, self.authenticator.custom_403_message)
        self.redirect(self.get_next_url(user))
