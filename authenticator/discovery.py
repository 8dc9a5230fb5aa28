"""OIDC discovery document and JWKS, fetched lazily and cached per provider.

A provider that is down only breaks its own button: nothing is fetched at hub start-up, and
failures are retried at the next login rather than cached.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from tornado import web

from .errors import LoginRefused

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


class ProviderUnavailable(LoginRefused):
    """The identity provider could not be reached or answered nonsense."""

    def __init__(self, display_name: str, detail: str):
        message = (f"Sign-in with {display_name} is unavailable right now. "
                   "Try again later or use another sign-in method.")
        super().__init__(503, message, detail)


@dataclass
class Discovery:
    """Cached `.well-known/openid-configuration` and JWKS of one issuer."""

    issuer: str
    fetch: Fetch
    display_name: str = ""
    ttl: float = 3600.0
    document: dict[str, Any] | None = None
    jwks: dict[str, Any] | None = None
    fetched_at: float = 0.0
    jwks_fetched_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def get(self) -> dict[str, Any]:
        if self.document and time.monotonic() - self.fetched_at < self.ttl:
            return self.document
        async with self._lock:
            if self.document and time.monotonic() - self.fetched_at < self.ttl:
                return self.document
            doc = await self._fetch(self.url)
            if doc.get("issuer") != self.issuer:
                raise ProviderUnavailable(
                    self.display_name or self.issuer,
                    f"discovery issuer {doc.get('issuer')!r} != configured {self.issuer!r}")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not doc.get(key):
                    raise ProviderUnavailable(self.display_name or self.issuer,
                                              f"discovery document has no {key}")
            self.document, self.fetched_at = doc, time.monotonic()
            return doc

    async def end_session_endpoint(self) -> str:
        """The provider's RP-initiated logout endpoint, or "" if it advertises none (or one
        that is not an http(s) URL, or plain http for an https issuer)."""
        endpoint = (await self.get()).get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return ""
        url = urlparse(endpoint)
        allowed = ("https", "http") if urlparse(self.issuer).scheme == "http" else ("https",)
        if url.scheme not in allowed or not url.netloc or url.fragment:
            return ""
        return endpoint

    async def get_jwks(self, force: bool = False) -> dict[str, Any]:
        """The provider's keys; `force` refetches (key rotation), at most every 10 s."""
        if self.jwks and not (force and time.monotonic() - self.jwks_fetched_at > 10):
            return self.jwks
        doc = await self.get()
        self.jwks = await self._fetch(doc["jwks_uri"])
        self.jwks_fetched_at = time.monotonic()
        return self.jwks

    async def _fetch(self, url: str) -> dict[str, Any]:
        try:
            doc = await self.fetch(url)
        except web.HTTPError:
            raise
        except (OSError, ValueError, json.JSONDecodeError, Exception) as e:  # noqa: B014
            raise ProviderUnavailable(self.display_name or self.issuer, f"{url}: {e}") from e
        if not isinstance(doc, dict):
            raise ProviderUnavailable(self.display_name or self.issuer, f"{url}: not a JSON object")
        return doc
