"""Server lifetimes (the ATLAS time-to-live): the user picks one within the flavor's bounds,
the hub keeps the deadline, the owner may extend it up to the bound, the culler stops the
server once it is past.

A flavor's bounds::

    "lifetime": {"default": "8h", "max": "3d", "min": "1h",
                 "choices": ["4h", "8h", "1d", "3d"]}

`max` is required and finite; `min` defaults to 1 minute; `default` to `max`; `choices` (what
the chooser and the home page offer; any duration within the bounds is accepted through the
API) to `default` and `max`. The user's choice is user_options["lifetime"].

Where the deadline lives: only where the hub writes. KDashSpawner keeps {flavor, started,
seconds} in its state (the hub's database); an extension is re-checked against the flavor's
bound *from the hub's configuration*, counted from the server's start (many small extensions
never go beyond `max`). The pod carries the deadline as an annotation for people reading the
cluster, but nothing reads it back: a user who edits it changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kdash_hub.durations import format_duration, parse_duration

from .refusals import _listing, _name, _quoted, refusal

OPTION = "lifetime"  # the user_options key
DEADLINE_ANNOTATION = "kdash-hub.io/deadline"  # informative only, never read back
MAX_TEXT = 40  # longer values are refused before parsing


class LifetimeError(ValueError):
    """A flavor's `lifetime` setting can't be used; the message names the flavor."""


@dataclass(frozen=True)
class Bounds:
    min: int
    default: int
    max: int
    choices: tuple[int, ...]

    def describe(self) -> str:
        return (f"between {format_duration(self.min)} and {format_duration(self.max)}"
                if self.min > 60 else f"at most {format_duration(self.max)}")


def bounds(flavor: Mapping[str, Any]) -> Bounds | None:
    """The flavor's bounds in seconds (None: the flavor has no lifetime)."""
    setting = flavor.get("lifetime")
    if not setting:
        return None
    where = f"flavor {flavor.get('slug') or flavor.get('display_name')}: lifetime"
    if not isinstance(setting, Mapping):
        raise LifetimeError(f"{where} must be a mapping like {{default: 8h, max: 3d}}")
    try:
        top = parse_duration(setting.get("max"))
        low = parse_duration(setting.get("min", 60)) or 60
        default = parse_duration(setting.get("default", setting.get("max")))
        listed = [parse_duration(c) for c in setting.get("choices") or []]
    except ValueError as e:
        raise LifetimeError(f"{where}: {e}") from None
    if top is None:
        raise LifetimeError(f"{where}.max must be a finite duration (e.g. 3d)")
    if default is None or not low <= default <= top or low > top:
        raise LifetimeError(f"{where}: need min <= default <= max")
    choices = sorted({c for c in [*listed, default, top] if c is not None and low <= c <= top}
                     if listed else {default, top})
    return Bounds(low, default, top, tuple(choices))


def _seconds(value: Any) -> int | None:
    """A duration the user sent: text or a whole number; anything else is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a duration")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a duration")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError("too long")
    return parse_duration(value)


def chosen(flavor: Mapping[str, Any], user_options: Mapping[str, Any]) -> int | None:
    """Seconds of lifetime a spawn of `flavor` asks for (its default when none is sent), or
    refuse with 400. None: the flavor has no lifetime."""
    value = user_options.get(OPTION)
    b = bounds(flavor)
    if b is None:
        if value in (None, ""):
            return None
        raise refusal(400, f"{_name(flavor)} has no lifetime to choose; start it without "
                           "one.")
    if value in (None, ""):
        return b.default
    offer = _listing([format_duration(c) for c in b.choices])
    try:
        seconds = _seconds(value)
    except (ValueError, OverflowError):
        raise refusal(400, f"{_quoted(value)} is not a lifetime: choose {offer} (or any "
                           f"duration {b.describe()}).") from None
    if seconds is None or not b.min <= seconds <= b.max:
        raise refusal(400, f"A lifetime of {_quoted(value)} is out of bounds for "
                           f"{_name(flavor)}: it must be {b.describe()}; choose {offer}.")
    return seconds


@dataclass
class Lifetime:
    """What the spawner keeps in its state (the hub's database)."""

    flavor: str
    started: float
    seconds: int

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def to_state(self) -> dict[str, Any]:
        return {"flavor": self.flavor, "started": self.started, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: Any) -> Lifetime | None:
        try:
            return cls(str(state["flavor"]), float(state["started"]), int(state["seconds"]))
        except (KeyError, TypeError, ValueError):
            return None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def extend(current: Lifetime, flavor: Mapping[str, Any] | None, body: Mapping[str, Any],
           now: float | None = None) -> Lifetime:
    """The lifetime after an owner's request {"extend_by": "2h"} or {"lifetime": "1d"} (the
    new total, from the start), checked against the flavor's bound as configured now."""
    now = time.time() if now is None else now
    b = bounds(flavor) if flavor else None
    if b is None:
        raise refusal(409, "This server's profile no longer has a lifetime to extend.")
    if not isinstance(body, Mapping) or len(set(body) & {"extend_by", "lifetime"}) != 1:
        raise refusal(400, "Send {\"extend_by\": \"2h\"} or {\"lifetime\": \"1d\"} (the "
                           "whole lifetime, counted from the start).")
    key = "extend_by" if "extend_by" in body else "lifetime"
    try:
        amount = _seconds(body[key])
    except (ValueError, OverflowError):
        amount = -1
    if amount is None or amount < 0 or (key == "extend_by" and amount == 0):
        raise refusal(400, f"{_quoted(body[key])} is not a duration to extend by (e.g. 1h, "
                           "30m).")
    total = current.seconds + amount if key == "extend_by" else amount
    if total > b.max:
        left = max(0, b.max - current.seconds)
        raise refusal(400, f"{_name(flavor or {})} servers live at most "
                           f"{format_duration(b.max)} from their start ({iso(current.started)}"
                           f"); this one can get {format_duration(left, none='0s')} more at "
                           "most.")
    if current.started + total <= now:
        raise refusal(400, "That deadline is already past; extend by more, or stop the "
                           "server.")
    return Lifetime(current.flavor, current.started, total)


def view(current: Lifetime, flavor: Mapping[str, Any] | None,
         now: float | None = None) -> dict[str, Any]:
    """The lifetime as the home page and the API show it."""
    now = time.time() if now is None else now
    b = bounds(flavor) if flavor else None
    room = max(0, (b.max if b else current.seconds) - current.seconds)
    steps = [s for s in (900, 3600, 4 * 3600, 86400) if s <= room] if room else []
    return {"flavor": current.flavor, "started": iso(current.started),
            "lifetime_seconds": current.seconds, "deadline": iso(current.deadline),
            "remaining_seconds": max(0, int(current.deadline - now)),
            "remaining": format_duration(max(0, current.deadline - now), none="0s"),
            "max_seconds": b.max if b else current.seconds,
            "extend_choices": [format_duration(s) for s in steps] +
                              ([format_duration(room)] if room and room not in steps else [])}


def chooser_entry(flavor: Mapping[str, Any]) -> dict[str, Any] | None:
    """The chooser's lifetime field of `flavor`: choices (value, label), default, a line."""
    b = bounds(flavor)
    if b is None:
        return None
    return {"choices": [(format_duration(c), format_duration(c)) for c in b.choices],
            "default": format_duration(b.default),
            "text": f"Stopped when its lifetime ends ({b.describe()}; you can extend it from "
                    "the home page)"}
