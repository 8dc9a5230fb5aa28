"""Durations as admins write them in culler rules: 3600, "90s", "90m", "1h", "8h30m", "2d".

Compound forms ("8h30m", "1d 12h") are accepted; "never"/"none"/0 mean "no limit".
"""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_WHOLE = re.compile(r"^(?:\s*\d+(?:\.\d+)?\s*[smhdw]\s*)+$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NEVER = ("", "none", "never", "0", "off")


def parse_duration(value: object) -> float | None:
    """Seconds for `value`, or None for "no limit". Raises ValueError saying why not."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration can't be negative: {value!r}")
        return float(value) or None
    text = str(value).strip().lower()
    if text in NEVER:
        return None
    if text.startswith("-"):
        raise ValueError(f"a duration can't be negative: {value!r}")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text) or None
    if not _WHOLE.match(text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 90m, 1h, 8h30m, 2d)")
    seconds = sum(float(n) * _UNIT[u.lower()] for n, u in _PART.findall(text))
    return seconds or None


def format_seconds(seconds: float | None) -> str:
    """A short human form for logs: 1h30m, 45s, never."""
    if seconds is None:
        return "never"
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])
