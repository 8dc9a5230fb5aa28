"""Durations as people write them in templates and requests: 90, "90s", "30m", "8h", "2d"."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> int | None:
    """Seconds for `value`; None for "no expiry" (None, 0, "", "none", "never").

    Raises ValueError with a message for anything else.
    """
    if value is None or value is False:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration can't be negative: {value}")
        return value or None
    text = str(value).strip().lower()
    if text in ("", "none", "never", "0"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 90m, 8h, 2d)")
    return int(match.group(1)) * _UNIT[match.group(2).lower()] or None


def format_duration(seconds: float | None) -> str:
    """A short human form: 2d3h, 45m, 30s."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return "".join(parts)
