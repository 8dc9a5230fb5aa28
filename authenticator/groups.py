"""Group model: backend groups -> hub groups, admin/allowed checks, group -> profiles/quota.

The spawner reads `user.groups` (hub groups, managed by the authenticator) and
`auth_state["groups"]`, `auth_state["profiles"]`, `auth_state["quota"]` built here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def untrusted_groups(provider: str, groups: Iterable[str]) -> list[str]:
    """Groups asserted by an untrusted provider are namespaced so they can't match ours."""
    return [f"{provider}-{g}" for g in groups]


def clean_groups(groups: Iterable[Any]) -> list[str]:
    """Sorted, de-duplicated, non-empty string group names."""
    return sorted({str(g).strip() for g in groups if isinstance(g, str | int) and str(g).strip()})


def profiles_and_quota(
    groups: Iterable[str], group_profiles: Mapping[str, Mapping[str, Any]]
) -> tuple[list[str], dict[str, Any]]:
    """Union of the profiles of the user's groups; for quotas the largest value per key wins."""
    profiles: set[str] = set()
    quota: dict[str, Any] = {}
    for group in groups:
        entry = group_profiles.get(group)
        if not entry:
            continue
        profiles.update(entry.get("profiles", []))
        for key, value in (entry.get("quota") or {}).items():
            quota[key] = value if key not in quota else _larger(quota[key], value)
    return sorted(profiles), quota


def _larger(a: Any, b: Any) -> Any:
    try:
        return max(a, b)
    except TypeError:
        return b
