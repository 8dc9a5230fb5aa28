"""One OIDC provider: oauthenticator's GenericOAuthenticator, configured by discovery.

Added on top of the upstream class: endpoints from the issuer's discovery document
(fetched lazily, cached), a `nonce`, and a verified id_token (signature against the JWKS,
issuer, audience, expiry, nonce) for every token response, codes and refreshes alike.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from tornado.httpclient import HTTPClientError
from tornado.httputil import url_concat
from traitlets import Float, Unicode, default

from . import id_token
from .discovery import Discovery, ProviderUnavailable
from .errors import LoginRefused
from .providers import ProviderSettings


class OIDCBackend(GenericOAuthenticator):
    """One configured provider. Owned by KDashAuthenticator (one instance per provider)."""

    provider_id = Unicode(help="The provider's key in KDashAuthenticator.oidc_providers.")
    issuer = Unicode(help="OIDC issuer URL; endpoints come from its discovery document.")
    id_token_leeway = Float(
        0.0, config=True, help="Seconds of clock skew tolerated when checking id_token times.")

    @default("http_request_kwargs")
    def _http_request_kwargs_default(self) -> dict:
        return {"connect_timeout": 5.0, "request_timeout": 10.0}

    def __init__(self, settings: ProviderSettings, **kwargs: Any):
        super().__init__(
            provider_id=settings.id, issuer=settings.issuer, client_id=settings.client_id,
            client_secret=settings.client_secret, scope=list(settings.scope),
            username_claim=settings.username_claim, login_service=settings.display_name,
            oauth_callback_url=settings.callback_url,
            validate_server_cert=settings.validate_server_cert, enable_pkce=True,
            **kwargs,
        )
        self.provider = settings
        self.discovery = Discovery(settings.issuer, self._fetch_json, settings.display_name)

    def get_callback_url(self, handler: Any = None) -> str:
        """The configured callback_url, or /hub/oauth_callback/<provider> of this request."""
        if self.oauth_callback_url:
            return self.oauth_callback_url
        if handler is None:
            raise ValueError(f"{self.provider_id}: no callback_url configured and no request")
        return url_path_join(super().get_callback_url(handler), self.provider_id)

    async def _fetch_json(self, url: str) -> dict[str, Any]:
        try:
            resp = await self.httpfetch(url, label=f"fetching {url}", parse_json=False,
                                        validate_cert=self.validate_server_cert)
        except HTTPClientError as e:
            raise ProviderUnavailable(self.provider.display_name, f"{url}: {e}") from e
        return json.loads(resp.body)

    async def ensure_endpoints(self) -> None:
        """Fill authorize/token/userdata URLs from discovery (raises ProviderUnavailable)."""
        doc = await self.discovery.get()
        self.authorize_url = doc["authorization_endpoint"]
        self.token_url = doc["token_endpoint"]
        self.userdata_url = doc.get("userinfo_endpoint", "")

    async def end_session_url(self, id_token_hint: str | None,
                              post_logout_redirect_uri: str) -> str:
        """Where logout sends the browser to end the provider's session too ("" = nowhere).

        The target is the discovery document's `end_session_endpoint`, never a request
        parameter; the provider itself only returns to a registered post_logout_redirect_uri.
        """
        if not self.provider.end_session:
            return ""
        endpoint = await self.discovery.end_session_endpoint()
        if not endpoint:
            return ""
        params = {"client_id": self.client_id,
                  "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return url_concat(endpoint, params)

    async def get_token_info(self, handler: Any, params: dict) -> dict:
        """Upstream token request, then verify the id_token it returned."""
        await self.ensure_endpoints()
        try:
            token_info = await super().get_token_info(handler, params)
        except HTTPClientError as e:
            if e.code and 400 <= e.code < 500:
                raise LoginRefused(
                    403, "Sign-in failed: the identity provider refused the request "
                    "(expired or already used code or token). Please sign in again.", str(e)) from e
            raise ProviderUnavailable(self.provider.display_name, str(e)) from e
        except OSError as e:
            raise ProviderUnavailable(self.provider.display_name, str(e)) from e
        nonce = None
        if params.get("grant_type") == "authorization_code":
            nonce = id_token.expected_nonce(handler.nonce_secret, handler.state_id())
        token_info["id_token_claims"] = await self.verify_id_token(
            token_info.get("id_token"), nonce)
        return token_info

    async def verify_id_token(self, token: str | None, nonce: str | None) -> dict[str, Any]:
        if not token:
            raise id_token.InvalidIdToken("no id_token in the token response (scope openid?)")
        found = id_token.key_for(token, await self.discovery.get_jwks())
        if found is None:  # key rotation: refetch once
            found = id_token.key_for(token, await self.discovery.get_jwks(force=True))
        if found is None:
            raise id_token.InvalidIdToken("id_token signed with a key the provider doesn't list")
        key, alg = found
        return id_token.verify(token, key, alg, issuer=self.issuer, client_id=self.client_id,
                               nonce=nonce, leeway=self.id_token_leeway)

    async def token_to_user(self, token_info: dict) -> dict[str, Any]:
        """Verified id_token claims, completed by the userinfo endpoint (same `sub` required)."""
        claims = dict(token_info["id_token_claims"])
        if self.userdata_url:
            info = await super().token_to_user(token_info)
            if info.get("sub") != claims["sub"]:
                raise id_token.InvalidIdToken("userinfo sub differs from id_token sub")
            claims.update(info)
        return claims

    def claim(self, user_info: dict, name: str) -> Any:
        value: Any = user_info
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
