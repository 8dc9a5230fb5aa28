"""Where the culler gets "now" from: the system clock, or a clock a test moves by hand.

Every decision compares hub timestamps with `clock.now()`, so tests drive culling by moving
a ManualClock forward instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None):
        self.current = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self.current += timedelta(seconds=seconds, **kwargs)
        return self.current

    def set(self, when: datetime) -> None:
        self.current = when
