"""Durations as admins and users write them, one grammar for the whole pack.

Template TTLs, launch requests and culler rules all accept the same forms: seconds (3600,
"90"), a unit ("90s", "30m", "8h", "2d", "1w"), compounds ("8h30m", "1d 12h") and fractions
("1.5h"). "never", "none", "off", "" and 0 mean no limit.
"""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_WHOLE = re.compile(r"^(?:\s*\d+(?:\.\d+)?\s*[smhdw]\s*)+$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NEVER = ("", "none", "never", "0", "off")


def parse_duration(value: object) -> int | None:
    """Whole seconds (rounded up) for `value`, or None for "no limit".

    Raises ValueError saying why `value` is not a duration.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration can't be negative: {value!r}")
        return math.ceil(value) or None
    text = str(value).strip().lower()
    if text in NEVER:
        return None
    if text.startswith("-"):
        raise ValueError(f"a duration can't be negative: {value!r}")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return math.ceil(float(text)) or None
    if not _WHOLE.match(text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 90m, 1h, 8h30m, 2d)")
    return math.ceil(sum(float(n) * _UNIT[u.lower()] for n, u in _PART.findall(text))) or None


def format_duration(seconds: float | None, *, none: str = "never") -> str:
    """A short human form, the two largest units: 1d1h, 1h30m, 45s; `none` for no limit."""
    if seconds is None:
        return none
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])
