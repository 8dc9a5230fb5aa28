"""id_token verification (signature against the provider's JWKS, iss, aud, exp, nonce).

oauthenticator 17.4 decodes id_tokens without checking the signature; we check everything
OIDC Core 3.1.3.7 asks for, with PyJWT.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import jwt

from .errors import LoginRefused

ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA"}


class InvalidIdToken(LoginRefused):
    """The id_token is not acceptable; the login is refused."""

    def __init__(self, detail: str):
        message = "Sign-in failed: the identity provider's answer could not be verified."
        super().__init__(403, message, detail)


def expected_nonce(secret: bytes, state_id: str) -> str:
    """The nonce sent with an authorization request, derived from the signed state cookie."""
    return hmac.new(secret, b"kdash-oidc-nonce:" + state_id.encode(), hashlib.sha256).hexdigest()


def key_for(token: str, jwks: dict[str, Any]) -> tuple[Any, str] | None:
    """The (key, alg) from `jwks` matching the token header, or None if no key matches."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise InvalidIdToken(f"malformed id_token: {e}") from e
    alg = header.get("alg")
    if alg not in ASYMMETRIC:
        raise InvalidIdToken(f"id_token algorithm {alg!r} is not allowed")
    try:
        keyset = jwt.PyJWKSet.from_dict(jwks)
    except jwt.PyJWTError as e:
        raise InvalidIdToken(f"provider JWKS unusable: {e}") from e
    kid = header.get("kid")
    for k in keyset.keys:
        if (kid is None or k.key_id == kid) and (k.algorithm_name in (alg, None)):
            return k.key, alg
    return None


def verify(token: str, key: Any, alg: str, *, issuer: str, client_id: str,
           nonce: str | None, leeway: float = 0) -> dict[str, Any]:
    """Decode and check a signed id_token; raise InvalidIdToken saying what was wrong."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[alg], audience=client_id, issuer=issuer, leeway=leeway,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError as e:
        raise InvalidIdToken("id_token expired") from e
    except jwt.InvalidAudienceError as e:
        raise InvalidIdToken("id_token issued for another client (aud)") from e
    except jwt.InvalidIssuerError as e:
        raise InvalidIdToken("id_token from another issuer") from e
    except jwt.InvalidSignatureError as e:
        raise InvalidIdToken("id_token signature invalid") from e
    except jwt.PyJWTError as e:
        raise InvalidIdToken(f"id_token invalid: {e}") from e
    # OIDC Core 3.1.3.7 (4, 5): a token for several audiences must name us as its
    # authorized party; an azp naming another client is refused whatever the audience
    aud, azp = claims["aud"], claims.get("azp")
    if isinstance(aud, list) and len(aud) > 1 and azp is None:
        raise InvalidIdToken("id_token for several audiences without azp")
    if azp is not None and azp != client_id:
        raise InvalidIdToken("id_token azp is not this client")
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise InvalidIdToken("id_token nonce mismatch (replayed or foreign token)")
    return claims
