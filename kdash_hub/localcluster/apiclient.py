"""The kubelet's own small HTTP client for the Kubernetes API: JSON requests and watches.

The emulated kubelet must reach the API over HTTP like a real one (so it sees the same
validation, conflicts, faults and watch semantics as everybody else); a raw aiohttp client
keeps its watch handling explicit: line-delimited events, ERROR events, dropped streams.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `body` the Status object (if any)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body if isinstance(body, dict) else {"message": str(body)}
        super().__init__(f"{status} {self.body.get('reason', '')}: {self.body.get('message', '')}")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeHTTP:
    """JSON over HTTP(S) to one API server, as a bearer token or a client certificate
    (`ssl_context` with the cluster's CA and, for a node, its own certificate)."""

    def __init__(self, url: str, token: str | None, *, user_agent: str = "kdash-kubelet",
                 ssl_context: ssl.SSLContext | None = None):
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context else None
            self._session = aiohttp.ClientSession(headers=self.headers, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        request_timeout: float = 30.0,
    ) -> dict:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method, self.url + path, data=data, params=_params(params), headers=headers,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else {}
            except ValueError:
                payload = {"message": text}
            if resp.status >= 400:
                raise ApiError(resp.status, payload)
            return payload

    async def watch(
        self, path: str, params: dict[str, Any] | None = None, *, timeout_seconds: int = 300
    ) -> AsyncIterator[dict]:
        """Yield watch events ({type, object}) until the server ends the stream.

        Raises WatchExpired for a 410 (as HTTP status or ERROR event), ApiError for other
        errors, and aiohttp/OS errors when the connection drops.
        """
        query = {**(params or {}), "watch": "true", "timeoutSeconds": timeout_seconds}
        async with self.session.get(
            self.url + path, params=_params(query),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                          sock_read=timeout_seconds + 30),
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = {"message": text}
                if resp.status == 410:
                    raise WatchExpired(str(payload))
                raise ApiError(resp.status, payload)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        _raise_for_error_event(event)
                        yield event
            if buffer.strip():
                event = json.loads(buffer)
                _raise_for_error_event(event)
                yield event


def _raise_for_error_event(event: dict) -> None:
    if event.get("type") != "ERROR":
        return
    status = event.get("object") or {}
    if status.get("code") == 410:
        raise WatchExpired(status.get("message", "resource version too old"))
    raise ApiError(int(status.get("code") or 500), status)


def _params(params: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (params or {}).items() if v is not None}
