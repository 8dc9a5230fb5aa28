"""Which uid/gid a user's pod runs as: the directory's, from auth_state, else the default.

The authenticator hands `auth_state = {backend, uid, gid, groups, email}` with uid/gid ints
or None. Root (0) or anything that is not a plain non-negative int is ignored, so a bad
directory entry can never make a notebook run as root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _valid_id(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            return None
    return value if value > 0 else None


def uid_gid(auth_state: Mapping[str, Any] | None, default_uid: int | None,
            default_gid: int | None) -> tuple[int | None, int | None]:
    """(uid, gid) for the pod: auth_state's when valid, else the admin defaults."""
    state = auth_state or {}
    uid = _valid_id(state.get("uid"))
    gid = _valid_id(state.get("gid"))
    return (uid if uid is not None else default_uid,
            gid if gid is not None else default_gid)


def group_names(user: Any, auth_state: Mapping[str, Any] | None = None) -> list[str]:
    """The user's group names: the hub's groups, plus auth_state's `groups` when present."""
    names: set[str] = set()
    for g in getattr(user, "groups", None) or []:
        names.add(g if isinstance(g, str) else getattr(g, "name", str(g)))
    extra: Iterable[Any] = (auth_state or {}).get("groups") or []
    names.update(str(g) for g in extra)
    return sorted(names)
