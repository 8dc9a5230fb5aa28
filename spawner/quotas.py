"""Per-group grants for ResourceQuota and LimitRange: the largest grant of the user's groups wins.

Admins give defaults and, per group, overrides. For every key a group sets, the largest
value among the user's groups replaces the default (so a group may also lower it); keys no
group sets keep the default.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from kdash_hub.quantities import parse_quantity


def quantity_str(value: Any) -> str:
    """A quantity as the string Kubernetes objects carry (ints stay ints)."""
    return str(value)


def _largest(values: list[Any]) -> Any:
    return max(values, key=parse_quantity)


def merge_grants(
    default: Mapping[str, Any],
    group_grants: Mapping[str, Mapping[str, Any]],
    groups: Iterable[str],
) -> dict[str, Any]:
    """The effective grant: `default`, with each key any of `groups` sets replaced by the
    largest value those groups give. Nested dicts (a LimitRange's `default`, `max`, ...)
    merge key by key the same way."""
    grants = [group_grants[g] for g in sorted(set(groups)) if g in group_grants]
    return _merge(default, grants)


def _merge(default: Mapping[str, Any], grants: list[Mapping[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = copy.deepcopy(dict(default))
    keys = {k for g in grants for k in g}
    for key in sorted(keys):
        values = [g[key] for g in grants if key in g]
        if all(isinstance(v, Mapping) for v in values):
            base = result.get(key) if isinstance(result.get(key), Mapping) else {}
            result[key] = _merge(base, [v for v in values])
        else:
            result[key] = quantity_str(_largest(values))
    return result


def exceeds(requested: Mapping[str, Any], hard: Mapping[str, Any],
            used: Mapping[str, Any] | None = None) -> list[str]:
    """The quota keys where `used + requested` would go over `hard`, worded for a person."""
    problems = []
    used = used or {}
    for key, amount in requested.items():
        if key not in hard:
            continue
        want = parse_quantity(amount)
        have = parse_quantity(used.get(key, 0))
        limit = parse_quantity(hard[key])
        if have + want > limit:
            problems.append(
                f"{key}: asking for {amount}"
                + (f" with {used[key]} in use" if key in used and have else "")
                + f", quota is {hard[key]}"
            )
    return problems
