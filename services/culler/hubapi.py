"""The few JupyterHub REST API calls the culler makes, over one aiohttp session.

Bounded concurrency (one semaphore for every request), retries with exponential backoff
when the hub can't be reached or answers 5xx/429, the JupyterHub >= 2 paginated list
format (`Accept: application/jupyterhub-pagination+json`) with the remaining pages fetched
in parallel once the first page gives the total, and a count of requests by method.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

PAGINATION = "application/jupyterhub-pagination+json"
RETRY_STATUSES = {429, 500, 502, 503, 504}

log = logging.getLogger("kdash_hub.services.culler")


class HubAPIError(Exception):
    """The hub answered with an error (or not at all, after every retry)."""

    def __init__(self, method: str, url: str, status: int | None, message: str):
        self.method, self.url, self.status = method, url, status
        super().__init__(f"{method} {url}: {status or 'unreachable'} {message}".strip())


class HubAPI:
    """A client of the hub API (and, through the proxy, of servers' /api/status)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        concurrency: int = 20,
        page_size: int = 200,
        retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.page_size = page_size
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.sleep = sleep
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.requests: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._lifetimes_absent: int | None = None  # the lifetime API's 404/403, said once

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"token {self.token}"},
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1, 2, ...)."""
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        allow: tuple[int, ...] = (),
        retry: bool = True,
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); raises HubAPIError unless status is ok/allowed."""
        if not url.startswith("http"):
            url = f"{self.api_url}{url}"
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            message = ""
            try:
                async with self.semaphore:
                    self.requests[method] += 1
                    async with self.session.request(
                        method, url, headers=headers,
                        data=None if body is None else json.dumps(body),
                    ) as resp:
                        status = resp.status
                        text = await resp.text()
                if status in ok or status in allow:
                    return status, json.loads(text) if text.strip() else None
                message = _error_message(text)
                if status not in RETRY_STATUSES:
                    raise HubAPIError(method, url, status, message)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                message = f"{type(e).__name__}: {e}"
            if not retry or attempt > self.retries:
                raise HubAPIError(method, url, status, message)
            delay = self.backoff(attempt)
            log.warning("hub request failed, retrying",
                        extra={"event": "retry", "method": method, "url": url,
                               "status": status, "error": message, "attempt": attempt,
                               "delay": delay})
            await self.sleep(delay)

    async def list_users(self, state: str | None = "active") -> list[dict]:
        """Every user (with `state`, e.g. "active": users with a running/pending server)."""
        params = f"limit={self.page_size}" + (f"&state={state}" if state else "")
        _, first = await self.request(
            "GET", f"/users?{params}&offset=0", headers={"Accept": PAGINATION})
        if isinstance(first, list):  # a hub without pagination
            return first
        users = list(first["items"])
        pagination = first.get("_pagination") or {}
        total = int(pagination.get("total") or 0)
        limit = int(pagination.get("limit") or self.page_size) or self.page_size
        if not pagination.get("next"):
            return users
        offsets = range(int(pagination.get("offset") or 0) + limit, total, limit)
        pages = await asyncio.gather(*(
            self.request("GET", f"/users?{params}&offset={o}", headers={"Accept": PAGINATION})
            for o in offsets
        ))
        for _, page in pages:
            users.extend(page["items"])
        # a page limit lower than ours (api_page_max_limit) or users added meanwhile
        last = pages[-1][1] if pages else first
        next_info = (last.get("_pagination") or {}).get("next")
        while next_info:
            _, page = await self.request("GET", next_info["url"], headers={"Accept": PAGINATION})
            users.extend(page["items"])
            next_info = (page.get("_pagination") or {}).get("next")
        return _unique(users)

    async def list_lifetimes(self) -> list[dict] | None:
        """Running servers' lifetimes (kdash lifetime API); None when the hub has no such
        API (404) or does not let the culler list them (403)."""
        status, body = await self.request("GET", "/kdash/lifetimes", allow=(404, 403))
        if status in (404, 403):
            if self._lifetimes_absent == status:
                return None
            self._lifetimes_absent = status  # said once (again if it changes)
            log.warning("the hub's lifetime API answered %s: server lifetimes not enforced",
                        status, extra={"event": "no-lifetimes", "status": status})
            return None
        return list((body or {}).get("servers") or [])

    async def get_user(self, name: str) -> dict | None:
        status, user = await self.request("GET", f"/users/{quote(name, safe='')}", allow=(404,))
        return None if status == 404 else user

    async def get_group(self, name: str) -> dict | None:
        status, group = await self.request(
            "GET", f"/groups/{quote(name, safe='')}", allow=(404, 403))
        if status == 403:
            log.warning("can't read hub group %s (the culler needs the read:groups scope)",
                        name, extra={"event": "forbidden", "group": name})
            return None
        return None if status == 404 else group

    async def stop_server(self, user: str, server: str, *, remove: bool = False) -> int:
        """Stop (and with `remove`, delete) a server: 204 stopped, 202 stopping."""
        if server:
            url = f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        else:
            url = f"/users/{quote(user, safe='')}/server"
        body = {"remove": True} if (remove and server) else None
        status, _ = await self.request("DELETE", url, body=body, allow=(404,))
        return status

    async def delete_user(self, name: str) -> int:
        status, _ = await self.request("DELETE", f"/users/{quote(name, safe='')}", allow=(404,))
        return status

    async def server_json(self, url: str) -> Any:
        """GET a URL of a user's server through the proxy (one attempt: it's optional)."""
        _, data = await self.request("GET", url, retry=False)
        return data


def _error_message(text: str) -> str:
    try:
        return str(json.loads(text).get("message") or "")[:300]
    except (ValueError, AttributeError):
        return text[:300]


def _unique(users: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for u in users:
        if u["name"] not in seen:
            seen.add(u["name"])
            out.append(u)
    return out
