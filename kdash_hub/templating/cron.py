"""Standard 5-field cron schedules, as Kubernetes' CronJob reads them (robfig/cron's
`ParseStandard`): minute hour day-of-month month day-of-week, with `*`, `?`, lists, ranges,
steps, month and weekday names, and the `@hourly`-style macros.

The launcher checks a template's schedule with it before anything is made (a bad one is a
400, not a CronJob the API server refuses half-way through a launch), and the local
cluster's CronJob controller uses it to know when the next run is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (name, lowest, highest, names)
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))


class CronError(ValueError):
    """A schedule that isn't a standard cron expression (the message says which part)."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month was `*`/`?`
    any_weekday: bool

    def matches_day(self, when: datetime) -> bool:
        """Cron's rule: when both day fields are restricted, either one matching is enough."""
        dom = when.day in self.days
        dow = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first time strictly after `after` (to the minute) the schedule fires."""
        when = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = when + timedelta(days=366 * 5)
        while when < limit:
            if when.month not in self.months or not self.matches_day(when):
                when = (when + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if when.hour not in self.hours:
                when = (when + timedelta(hours=1)).replace(minute=0)
                continue
            if when.minute not in self.minutes:
                when += timedelta(minutes=1)
                continue
            return when
        raise CronError(f"schedule {self.text!r} never fires")


def _number(text: str, names: dict[str, int], field: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise CronError(f"{field}: {text!r} is not a number")
    return int(text)


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: an empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _number(a, names, field), _number(b, names, field)
        else:
            first = _number(base, names, field)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high):
            raise CronError(f"{field}: {part!r} is outside {low}-{high}")
        if first > last:
            raise CronError(f"{field}: range {part!r} goes backwards")
        values.update(range(first, last + 1, step))
    return values


def parse_cron(text: object) -> Schedule:
    """Parse a schedule (raises CronError saying what is wrong)."""
    if not isinstance(text, str) or not text.strip():
        raise CronError("a schedule is 5 fields: minute hour day-of-month month day-of-week")
    spec = text.strip()
    if spec.upper().startswith(("TZ=", "CRON_TZ=")):
        raise CronError("a time zone in the schedule is not allowed; use the CronJob's"
                        " timeZone field")
    spec = MACROS.get(spec.lower(), spec)
    if spec.startswith("@"):
        raise CronError(f"{spec!r} is not one of {', '.join(MACROS)}")
    parts = spec.split()
    if len(parts) != 5:
        raise CronError(f"{text!r} has {len(parts)} fields; a schedule is 5: minute hour"
                        " day-of-month month day-of-week (e.g. '0 2 * * *': 02:00 daily)")
    sets = [_field(p, name, low, high, names)
            for p, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    return Schedule(text=text, minutes=frozenset(sets[0]), hours=frozenset(sets[1]),
                    days=frozenset(sets[2]), months=frozenset(sets[3]),
                    weekdays=frozenset(sets[4]), any_day=parts[2] in ("*", "?"),
                    any_weekday=parts[4] in ("*", "?"))
