"""Culling rules: an idle timeout and a maximum age, per profile, per group, and a default.

Which rule a server gets: start from the default rule; a rule for the server's profile
(`user_options.profile`) replaces the fields it sets; then, when the user is in groups
that have rules, the most lenient of those group rules replaces the fields it sets (a
group rule exists to give some people more time, e.g. a "long-jobs" group). A field set
to "never" means no limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kdash_hub.durations import parse_duration

RULE_KEYS = ("idle", "max_age")
_UNSET = object()


class RuleError(ValueError):
    """A rule setting that can't be used; the message names the setting."""


@dataclass(frozen=True)
class Rule:
    """Limits in seconds; None means no limit. `name` says where the rule came from."""

    name: str
    idle: float | None = None
    max_age: float | None = None

    def merged(self, other: PartialRule) -> Rule:
        return replace(
            self,
            name=f"{self.name}+{other.name}" if self.name != "default" else other.name,
            idle=self.idle if other.idle is _UNSET else other.idle,
            max_age=self.max_age if other.max_age is _UNSET else other.max_age,
        )


@dataclass(frozen=True)
class PartialRule:
    """A rule that sets only some fields (the others are `_UNSET`)."""

    name: str
    idle: Any = _UNSET
    max_age: Any = _UNSET


def _lenient(a: Any, b: Any) -> Any:
    """The more generous of two limits (None = unlimited beats any number)."""
    if a is _UNSET:
        return b
    if b is _UNSET:
        return a
    if a is None or b is None:
        return None
    return max(a, b)


def parse_rule(setting: str, name: str, value: Any) -> PartialRule:
    """One rule from config, e.g. {"idle": "1h", "max_age": "8h"}; errors name `setting`."""
    if not isinstance(value, Mapping):
        raise RuleError(f"{setting}: must be a mapping like {{idle: 1h, max_age: 8h}}, "
                        f"got {value!r}")
    unknown = sorted(set(value) - set(RULE_KEYS))
    if unknown:
        raise RuleError(f"{setting}: unknown key(s) {', '.join(unknown)}; "
                        f"a rule has {', '.join(RULE_KEYS)}")
    fields: dict[str, Any] = {}
    for key in RULE_KEYS:
        if key in value:
            try:
                fields[key] = parse_duration(value[key])
            except ValueError as e:
                raise RuleError(f"{setting}.{key}: {e}") from None
    return PartialRule(name, **fields)


@dataclass(frozen=True)
class RuleSet:
    default: Rule
    profiles: Mapping[str, PartialRule]
    groups: Mapping[str, PartialRule]

    @classmethod
    def from_config(
        cls,
        default: Mapping[str, Any],
        profiles: Mapping[str, Any],
        groups: Mapping[str, Any],
        known_profiles: Iterable[str] | None,
        *,
        prefix: str = "CullerApp",
    ) -> RuleSet:
        """Check and build the rules; RuleError names the setting at fault."""
        base = parse_rule(f"{prefix}.default_rule", "default", default)
        default_rule = Rule(
            "default",
            None if base.idle is _UNSET else base.idle,
            None if base.max_age is _UNSET else base.max_age,
        )
        known = set(known_profiles or ())
        parsed_profiles = {}
        for slug, value in (profiles or {}).items():
            setting = f"{prefix}.profile_rules[{slug!r}]"
            if known and slug not in known:
                raise RuleError(f"{setting}: unknown profile {slug!r}; known profiles "
                                f"(CullerApp.known_profiles): {', '.join(sorted(known))}")
            parsed_profiles[slug] = parse_rule(setting, f"profile:{slug}", value)
        parsed_groups = {
            group: parse_rule(f"{prefix}.group_rules[{group!r}]", f"group:{group}", value)
            for group, value in (groups or {}).items()
        }
        return cls(default_rule, parsed_profiles, parsed_groups)

    def for_server(self, profile: str | None, groups: Iterable[str]) -> Rule:
        """The rule for a server of `profile` owned by a member of `groups`."""
        rule = self.default
        if profile and profile in self.profiles:
            rule = rule.merged(self.profiles[profile])
        matching = [self.groups[g] for g in sorted(set(groups)) if g in self.groups]
        if matching:
            combined = PartialRule(
                "+".join(p.name for p in matching),
                idle=_combine(p.idle for p in matching),
                max_age=_combine(p.max_age for p in matching),
            )
            rule = rule.merged(combined)
        return rule


def _combine(values: Iterable[Any]) -> Any:
    result: Any = _UNSET
    for v in values:
        result = _lenient(result, v)
    return result
