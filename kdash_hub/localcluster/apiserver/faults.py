"""Fault injection for reliability tests: error responses, added latency, dropped watches.

`faults.add(...)` arms a fault for requests whose method and path (with query string) match;
it fires `times` times (None: until removed). A fault with `status=None` only adds latency.
`fraction` (0 < f <= 1) makes it fire on that share of the matching requests, drawn at
random (`seed` for a repeatable draw); a request it passes over goes on to the next armed
fault, so "20% errors, and 200 ms on every create" is two faults.
The same API is served over HTTP under /_kdash/faults so a test can drive an emulator that
runs in another process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import random
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .status import APIError

if TYPE_CHECKING:
    from .store import Store

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
_ids = itertools.count(1)


@dataclass
class Fault:
    method: str | None = None
    path_regex: str | None = None
    status: int | None = 500
    reason: str | None = None
    message: str | None = None
    times: int | None = 1
    latency: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0
    fraction: float = 1.0
    seed: int | None = None
    _draw: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], not {self.fraction}")
        self._draw = random.Random(self.seed)

    def matches(self, method: str, path_qs: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path_regex or re.search(self.path_regex, path_qs) is not None

    def fires(self) -> bool:
        """This matching request is one of the `fraction` it hits."""
        return self.fraction >= 1.0 or self._draw.random() < self.fraction

    def error(self) -> APIError | None:
        if self.status is None:
            return None
        reason = self.reason or _REASONS.get(self.status, "InternalError")
        return APIError(self.status, reason,
                        self.message or f"injected fault #{self.id}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_draw", None)
        return out


class Faults:
    """The armed faults of one API server."""

    def __init__(self, store: Store):
        self._store = store
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once started
        self.faults: list[Fault] = []
        self.fired = 0

    def add(self, method: str | None = None, path_regex: str | None = None,
            status: int | None = 500, reason: str | None = None, times: int | None = 1,
            latency: float = 0.0, message: str | None = None, fraction: float = 1.0,
            seed: int | None = None) -> Fault:
        """Arm a fault; returns it (pass it to `remove`)."""
        if path_regex:
            re.compile(path_regex)
        fault = Fault(method, path_regex, status, reason, message, times, float(latency),
                      fraction=float(fraction), seed=seed)
        self.faults.append(fault)
        return fault

    def remove(self, fault: Fault | int) -> None:
        fid = fault if isinstance(fault, int) else fault.id
        self.faults = [f for f in self.faults if f.id != fid]

    def clear(self) -> None:
        self.faults.clear()

    def match(self, method: str, path_qs: str) -> Fault | None:
        """The first armed fault for this request (its remaining count is used up)."""
        for f in self.faults:
            if f.matches(method, path_qs) and f.fires():
                f.hits += 1
                self.fired += 1
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                return f
        return None

    def drop_watches(self) -> int:
        """Break every open watch connection now; returns how many were dropped.

        Safe to call from another thread (a test driving a cluster run by start_in_thread).
        """
        loop = self.loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or current is loop or not loop.is_running():
            return self._store.drop_watches()
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        loop.call_soon_threadsafe(lambda: done.set_result(self._store.drop_watches()))
        return done.result(timeout=10)
