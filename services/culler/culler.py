"""One cull cycle: list the active servers once, decide, stop in parallel, follow up.

`Culler.run_once()` is the unit the service repeats and the tests drive (with a
ManualClock); `Culler.run_forever()` repeats it, backing off when the hub or the
Kubernetes API is down instead of crashing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .activity import fetch_server_activity
from .clock import Clock, SystemClock
from .decisions import (
    CULL,
    Decision,
    Exemptions,
    decide_server,
    decide_user,
    opt_out_servers,
    server_deadlines,
)
from .hubapi import HubAPI, HubAPIError
from .logs import emit
from .metrics import CullerMetrics
from .rules import RuleSet
from .sideservices import ExpiryResult, SideServiceExpiry


@dataclass
class CycleReport:
    """What one cycle saw and did (the tests and the benchmark read it)."""

    started: datetime
    decisions: list[Decision] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # "user/server"
    pending: list[str] = field(default_factory=list)  # stops the hub answered 202 to
    failed: list[str] = field(default_factory=list)
    users_deleted: list[str] = field(default_factory=list)
    instances: list[ExpiryResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    requests: int = 0

    @property
    def to_cull(self) -> list[str]:
        return sorted(d.full_name for d in self.decisions
                      if d.action == CULL and d.rule != "cull_users")


@dataclass
class CullerOptions:
    dry_run: bool = False
    exempt_admins: bool = False
    exempt_groups: frozenset[str] = frozenset()
    opt_out_group: str = ""
    check_server_status: bool = False
    server_base_url: str = ""
    remove_named_servers: bool = False
    cull_users_after: float | None = None
    side_services: bool = False
    server_lifetimes: bool = False


# how long a missing opt-out group is believed missing (a new one counts within this)
OPT_OUT_RECHECK = timedelta(minutes=10)


class Culler:
    def __init__(self, hub: HubAPI, rules: RuleSet, options: CullerOptions | None = None, *,
                 clock: Clock | None = None, metrics: CullerMetrics | None = None,
                 side_services: SideServiceExpiry | None = None):
        self.hub = hub
        self.rules = rules
        self.options = options or CullerOptions()
        self.clock = clock or SystemClock()
        self.metrics = metrics or CullerMetrics()
        self.side_services = side_services
        self.pending: dict[str, Decision] = {}  # stops answered 202, followed up later
        self._opt_out_missing_at: datetime | None = None  # the last ask found no group

    # --- one cycle --------------------------------------------------------------------

    async def run_once(self) -> CycleReport:
        now = self.clock.now()
        report = CycleReport(started=now)
        t0 = time.perf_counter()
        requests0 = sum(self.hub.requests.values())
        try:
            await self._follow_up_pending(report)
            await self._cull_servers(now, report)
            if self.options.cull_users_after:
                await self._cull_users(now, report)
        except HubAPIError as e:
            self._error(report, "hub", e)
        if self.options.side_services and self.side_services is not None:
            try:
                report.instances = await self.side_services.expire(
                    now, dry_run=self.options.dry_run)
                for r in report.instances:
                    if r.done:
                        self.metrics.expired_instances.labels(r.action).inc()
                    elif r.error:
                        self._error(report, "instance", r.error)
            except Exception as e:  # noqa: BLE001 - Kubernetes down: next cycle retries
                self._error(report, "kubernetes", e)
        report.duration = time.perf_counter() - t0
        report.requests = sum(self.hub.requests.values()) - requests0
        self.metrics.cycle.observe(report.duration)
        self.metrics.pending_stops.set(len(self.pending))
        emit("cycle", duration_seconds=round(report.duration, 3), requests=report.requests,
             servers=len([d for d in report.decisions if d.rule != "cull_users"]),
             stopped=len(report.stopped), pending=len(report.pending),
             failed=len(report.failed), users_deleted=len(report.users_deleted),
             instances=len(report.instances), errors=len(report.errors),
             dry_run=self.options.dry_run)
        return report

    def _error(self, report: CycleReport, kind: str, exc: object) -> None:
        self.metrics.errors.labels(kind).inc()
        report.errors.append(f"{kind}: {exc}")
        emit("error", logging.ERROR, kind=kind, error=str(exc))

    async def _cull_servers(self, now: datetime, report: CycleReport) -> None:
        opt = self.options
        users, group = await asyncio.gather(
            self.hub.list_users("active"),
            self._opt_out_group(now),
        )
        # asked once the hub has answered, and only when some server runs
        lifetimes = await self.hub.list_lifetimes() if opt.server_lifetimes and users else None
        exemptions = Exemptions(opt.exempt_admins, opt.exempt_groups, opt_out_servers(group))
        deadlines = server_deadlines(lifetimes or [])
        decisions = []
        for user in users:
            for name, server in (user.get("servers") or {}).items():
                if name in self.pending_names(user["name"]):
                    continue
                decisions.append(decide_server(user, name, server, self.rules, now,
                                               exemptions,
                                               deadline=deadlines.get((user["name"], name))))
        if opt.check_server_status:
            by_name = {u["name"]: u for u in users}
            decisions = await asyncio.gather(*(
                self._recheck(d, by_name[d.user], now, exemptions)
                if d.action == CULL and d.reason == "idle" else _value(d)
                for d in decisions
            ))
        report.decisions.extend(decisions)
        self.metrics.servers.clear()
        for d in decisions:
            self.metrics.servers.labels(d.profile).inc()
        for d in decisions:
            if d.action != CULL:
                emit("decision", level=logging.DEBUG, **d.fields(), dry_run=opt.dry_run)
        await asyncio.gather(*(self._stop(d, report) for d in decisions if d.action == CULL))
        if report.pending:
            await self._follow_up_pending(report, only=set(report.pending))

    async def _opt_out_group(self, now: datetime) -> dict | None:
        """The opt-out group, or None. One that isn't there (the default name, until an admin
        makes it) is asked for again only every OPT_OUT_RECHECK: each ask is a 404 line in the
        hub's log, which every cycle would fill. Its members are read fresh each cycle."""
        name = self.options.opt_out_group
        missing_at = self._opt_out_missing_at
        if not name or (missing_at is not None and now - missing_at < OPT_OUT_RECHECK):
            return None
        group = await self.hub.get_group(name)
        self._opt_out_missing_at = now if group is None else None
        return group

    def pending_names(self, user: str) -> set[str]:
        return {d.server for d in self.pending.values() if d.user == user}

    async def _recheck(self, d: Decision, user: dict, now: datetime,
                       exemptions: Exemptions) -> Decision:
        """Ask the server itself before culling it for idleness."""
        base = self.options.server_base_url
        try:
            activity = await fetch_server_activity(self.hub, base, d.url)
        except HubAPIError as e:
            d.extra["server_status_error"] = str(e)
            return d
        server = user["servers"][d.server]
        again = decide_server(user, d.server, server, self.rules, now, exemptions,
                              last_activity=activity.last_activity)
        again.activity_source = "server"
        again.extra.update(connections=activity.connections, kernels=activity.kernels,
                           busy_kernels=activity.busy_kernels)
        if activity.in_use and again.action == CULL and again.reason == "idle":
            again.action, again.reason = "keep", "server-in-use"
        return again

    async def _stop(self, d: Decision, report: CycleReport) -> None:
        fields = d.fields()
        if self.options.dry_run:
            self.metrics.would_cull.labels(d.profile, d.reason).inc()
            emit("decision", **fields, dry_run=True, outcome="would-stop")
            return
        remove = self.options.remove_named_servers and bool(d.server)
        try:
            status = await self.hub.stop_server(d.user, d.server, remove=remove)
        except Exception as e:  # noqa: BLE001 - one failing stop doesn't stop the cycle
            report.failed.append(d.full_name)
            self._error(report, "stop", e)
            emit("decision", logging.ERROR, **fields, dry_run=False, outcome="failed",
                 error=str(e))
            return
        if status == 202:
            self.pending[d.full_name] = d
            report.pending.append(d.full_name)
            emit("decision", **fields, dry_run=False, outcome="stopping")
            return
        report.stopped.append(d.full_name)
        self.metrics.culled.labels(d.profile, d.reason).inc()
        emit("decision", **fields, dry_run=False,
             outcome="already-stopped" if status == 404 else "stopped", removed=remove)

    async def _follow_up_pending(self, report: CycleReport, only: set[str] | None = None
                                 ) -> None:
        """Find out how the stops the hub answered 202 to have ended."""
        names = [n for n in self.pending if only is None or n in only]
        if not names:
            return
        users = {self.pending[n].user for n in names}
        models = dict(zip(users, await asyncio.gather(*(self.hub.get_user(u) for u in users)),
                          strict=True))
        for name in names:
            d = self.pending[name]
            server = ((models.get(d.user) or {}).get("servers") or {}).get(d.server)
            if server and server.get("pending") == "stop":
                continue  # still stopping: ask again next time
            self.pending.pop(name)
            if name in report.pending:
                report.pending.remove(name)
            if server is None or not server.get("ready"):
                report.stopped.append(name)
                self.metrics.culled.labels(d.profile, d.reason).inc()
                emit("stop-finished", user=d.user, server=d.server, profile=d.profile,
                     outcome="stopped")
            else:
                report.failed.append(name)
                self._error(report, "stop", f"{name} is still running after a 202 stop")

    async def _cull_users(self, now: datetime, report: CycleReport) -> None:
        after = self.options.cull_users_after or 0
        for user in await self.hub.list_users("inactive"):
            d = decide_user(user, now, after, self.options.exempt_groups)
            if d.action != CULL:
                continue
            report.decisions.append(d)
            if self.options.dry_run:
                emit("user-decision", **d.fields(), dry_run=True, outcome="would-delete")
                continue
            try:
                await self.hub.delete_user(d.user)
            except Exception as e:  # noqa: BLE001
                self._error(report, "delete-user", e)
                continue
            report.users_deleted.append(d.user)
            self.metrics.culled_users.inc()
            emit("user-decision", **d.fields(), dry_run=False, outcome="deleted")

    # --- forever ----------------------------------------------------------------------

    async def run_forever(self, every: float, *, stop: asyncio.Event | None = None) -> None:
        """Repeat cycles every `every` s; after failed cycles retry sooner: 2, 4, 8... s
        (at most `every`), so a hub that comes back is seen soon without hammering it."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                report = await self.run_once()
                hub_down = any(e.startswith("hub:") for e in report.errors)
                failures = failures + 1 if hub_down else 0
            except Exception as e:  # noqa: BLE001 - never crash the service
                failures += 1
                self.metrics.errors.labels("cycle").inc()
                emit("error", logging.ERROR, kind="cycle", error=f"{type(e).__name__}: {e}")
            delay = every if not failures else min(every, 2.0 ** failures)
            try:
                async with asyncio.timeout(delay):  # wait_for (3.11) can lose a cancel
                    await stop.wait()
            except TimeoutError:
                pass


async def _value(d: Decision) -> Decision:
    return d
