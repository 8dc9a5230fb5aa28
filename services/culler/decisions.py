"""One decision per server: keep it, skip it, or cull it, and why — pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .activity import latest, parse_time
from .rules import Rule, RuleSet

CULL, KEEP, SKIP = "cull", "keep", "skip"
NO_PROFILE = "none"


@dataclass(frozen=True)
class Exemptions:
    """Who and what is never culled."""

    admins: bool = False
    groups: frozenset[str] = frozenset()
    servers: frozenset[str] = frozenset()  # "user/server" ("user/" = default server)

    def reason(self, user: dict, server_name: str) -> str | None:
        if self.admins and user.get("admin"):
            return "exempt-admin"
        if self.groups & set(user.get("groups") or ()):
            return "exempt-group"
        if f"{user['name']}/{server_name}" in self.servers:
            return "opt-out"
        return None


def opt_out_servers(group: dict | None) -> frozenset[str]:
    """The servers an admin listed in the opt-out group's `properties.servers`."""
    if not group:
        return frozenset()
    listed = (group.get("properties") or {}).get("servers") or []
    names = set()
    for entry in listed if isinstance(listed, list) else []:
        entry = str(entry)
        names.add(entry if "/" in entry else f"{entry}/")
    return frozenset(names)


@dataclass
class Decision:
    """What the culler decided for one server (or user), with everything a log needs."""

    user: str
    server: str
    profile: str
    rule: str
    action: str
    reason: str
    idle_seconds: float | None = None
    age_seconds: float | None = None
    idle_limit: float | None = None
    max_age: float | None = None
    url: str = ""
    activity_source: str = "hub"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.user}/{self.server}"

    def fields(self) -> dict[str, Any]:
        out = {
            "user": self.user, "server": self.server, "profile": self.profile,
            "rule": self.rule, "action": self.action, "reason": self.reason,
            "idle_seconds": _round(self.idle_seconds), "age_seconds": _round(self.age_seconds),
            "idle_limit": self.idle_limit, "max_age": self.max_age,
            "activity_source": self.activity_source,
        }
        out.update(self.extra)
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def server_profile(server: dict) -> str | None:
    """The profile slug KubeSpawner keeps in `user_options.profile`."""
    options = server.get("user_options") or {}
    profile = options.get("profile") if isinstance(options, dict) else None
    if isinstance(profile, list):  # a form's raw value
        profile = profile[0] if profile else None
    return str(profile) if profile else None


def server_deadlines(lifetimes: Iterable[dict]) -> dict[tuple[str, str], datetime]:
    """{(user, server): deadline} from the hub's lifetime API (entries it can't read: none)."""
    out = {}
    for entry in lifetimes:
        deadline = parse_time(entry.get("deadline")) if isinstance(entry, dict) else None
        if deadline is not None:
            out[(str(entry.get("user")), str(entry.get("server") or ""))] = deadline
    return out


def decide_server(
    user: dict,
    server_name: str,
    server: dict,
    rules: RuleSet,
    now: datetime,
    exemptions: Exemptions,
    last_activity: datetime | None = None,
    deadline: datetime | None = None,
) -> Decision:
    """Cull a server past the lifetime its user chose (`deadline`, kept by the hub; no
    exemption applies: the user chose it), idle longer than its rule's `idle`, or older than
    its `max_age`."""
    profile = server_profile(server)
    rule: Rule = rules.for_server(profile, user.get("groups") or ())
    started = parse_time(server.get("started"))
    activity = latest(parse_time(server.get("last_activity")), last_activity) or started
    decision = Decision(
        user=user["name"], server=server_name, profile=profile or NO_PROFILE,
        rule=rule.name, action=KEEP, reason="within-limits",
        idle_seconds=(now - activity).total_seconds() if activity else None,
        age_seconds=(now - started).total_seconds() if started else None,
        idle_limit=rule.idle, max_age=rule.max_age, url=server.get("url") or "",
    )
    if server.get("pending"):
        decision.action, decision.reason = SKIP, f"pending-{server['pending']}"
        return decision
    if not server.get("ready", True):
        decision.action, decision.reason = SKIP, "not-ready"
        return decision
    if deadline is not None:
        decision.extra["deadline"] = deadline.isoformat()
        if now >= deadline:
            decision.action, decision.reason = CULL, "lifetime"
            return decision
    exempt = exemptions.reason(user, server_name)
    if exempt:
        decision.action, decision.reason = KEEP, exempt
        return decision
    if rule.idle is not None and decision.idle_seconds is not None \
            and decision.idle_seconds >= rule.idle:
        decision.action, decision.reason = CULL, "idle"
    elif rule.max_age is not None and decision.age_seconds is not None \
            and decision.age_seconds >= rule.max_age:
        decision.action, decision.reason = CULL, "max_age"
    return decision


def decide_user(user: dict, now: datetime, after: float, exempt_groups: Iterable[str]
                ) -> Decision:
    """Cull a hub user (never an admin) with no server that was inactive for `after` s."""
    last = parse_time(user.get("last_activity")) or parse_time(user.get("created"))
    idle = (now - last).total_seconds() if last else None
    decision = Decision(user=user["name"], server="", profile=NO_PROFILE, rule="cull_users",
                        action=KEEP, reason="recently-active", idle_seconds=idle,
                        idle_limit=after)
    if user.get("admin"):
        decision.reason = "admin"
    elif set(exempt_groups) & set(user.get("groups") or ()):
        decision.reason = "exempt-group"
    elif any(s.get("ready") or s.get("pending") for s in (user.get("servers") or {}).values()):
        decision.reason = "has-server"
    elif idle is not None and idle >= after:
        decision.action, decision.reason = CULL, "inactive-user"
    return decision

