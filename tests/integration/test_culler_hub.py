"""kdash-culler against a real hub: rules per profile and group, exemptions, dry run,
slow and failing stops, pagination, user culling, an unreachable hub. Time is a
ManualClock moved by the tests; activity is posted to the hub's activity API."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from kdash_hub.services.culler.hubapi import HubAPI
from tests.fixtures.culler import Fault

RULES = {
    "known_profiles": ["gpu", "cpu"],
    "default_rule": {"idle": "1h"},
    "profile_rules": {"gpu": {"idle": "30m", "max_age": "50m"}, "cpu": {"idle": "2h"}},
}


def make_culler(hub, clock, api_url=None, **settings):
    config = {**RULES, **settings}
    app = CullerApp(hub_api_url=api_url or hub.api_url, api_token=hub.culler_token, retries=1,
                    backoff_base=0.01, **config)
    culler = app.make_culler(clock=clock)
    return culler


@pytest.fixture
async def cleanup(culler_hub, user_prefix):
    created = []
    yield created
    await culler_hub.stop_all(user_prefix)
    for c in created:
        await c.hub.close()


def mine(names, prefix):
    return sorted(n for n in names if n.startswith(prefix))


async def test_profile_rules_idle_and_max_age(culler_hub, user_prefix, cleanup):
    hub, p = culler_hub, user_prefix
    start = datetime.now(UTC)
    await hub.create_users(*(p + n for n in ("gpuidle", "gpubusy", "cpu", "named", "plain")))
    await hub.spawn(p + "gpuidle", profile="gpu")
    await hub.spawn(p + "gpubusy", profile="gpu")
    await hub.spawn(p + "cpu", profile="cpu")
    await hub.spawn(p + "named", "work", profile="gpu")
    await hub.spawn(p + "named", "", profile="cpu")
    await hub.spawn(p + "plain")
    clock = ManualClock(start + timedelta(minutes=40))
    await hub.activity(p + "gpubusy", "", start + timedelta(minutes=38))
    culler = make_culler(hub, clock)
    cleanup.append(culler)

    report = await culler.run_once()
    assert mine(report.stopped, p) == [f"{p}gpuidle/", f"{p}named/work"]
    assert report.errors == []
    by_name = {d.full_name: d for d in report.decisions}
    idle = by_name[f"{p}gpuidle/"]
    assert (idle.profile, idle.rule, idle.reason, idle.idle_limit) == (
        "gpu", "profile:gpu", "idle", 1800)
    assert 2390 < idle.idle_seconds < 2410
    assert by_name[f"{p}cpu/"].reason == "within-limits"
    assert by_name[f"{p}plain/"].profile == "none" and by_name[f"{p}plain/"].rule == "default"
    assert by_name[f"{p}gpubusy/"].action == "keep"
    assert await hub.running(p) == {f"{p}gpubusy/", f"{p}cpu/", f"{p}named/", f"{p}plain/"}
    # the named server was stopped, not removed
    assert (await hub.server(p + "named", "work")) is None
    assert "work" in (await hub.call("GET", f"/users/{p}named?include_stopped_servers=1")
                      )["servers"]

    # 55 minutes after start: the active GPU server is past its max age
    clock.set(start + timedelta(minutes=55))
    await hub.activity(p + "gpubusy", "", start + timedelta(minutes=54))
    report = await culler.run_once()
    assert mine(report.stopped, p) == [f"{p}gpubusy/"]
    assert {d.full_name: d.reason for d in report.decisions}[f"{p}gpubusy/"] == "max_age"
    samples = {(s.labels.get("profile"), s.labels.get("reason")): s.value
               for m in culler.metrics.registry.collect() for s in m.samples
               if s.name == "kdash_culler_culled_servers_total"}
    assert samples[("gpu", "idle")] >= 2 and samples[("gpu", "max_age")] >= 1


async def test_group_rules_and_exemptions(culler_hub, user_prefix, cleanup):
    hub, p = culler_hub, user_prefix
    start = datetime.now(UTC)
    names = [p + n for n in ("long", "vip", "optout", "control")]
    await hub.create_users(*names)
    await hub.create_users(p + "admin", admin=True)
    for name in [*names, p + "admin"]:
        await hub.spawn(name, profile="gpu")
    await hub.spawn(p + "optout", "other", profile="gpu")
    await hub.add_to_group(f"{p}long-jobs", p + "long")
    await hub.add_to_group(f"{p}vip", p + "vip")
    await hub.set_group_properties(f"{p}optout", {"servers": [f"{p}optout/"]})
    culler = make_culler(hub, ManualClock(start + timedelta(minutes=45)),
                         group_rules={f"{p}long-jobs": {"idle": "3h"}},
                         exempt_groups=[f"{p}vip"], exempt_admins=True,
                         opt_out_group=f"{p}optout")
    cleanup.append(culler)
    report = await culler.run_once()
    assert mine(report.stopped, p) == [f"{p}control/", f"{p}optout/other"]
    reasons = {d.full_name: (d.reason, d.rule) for d in report.decisions}
    assert reasons[f"{p}long/"] == ("within-limits", f"profile:gpu+group:{p}long-jobs")
    assert reasons[f"{p}vip/"][0] == "exempt-group"
    assert reasons[f"{p}admin/"][0] == "exempt-admin"
    assert reasons[f"{p}optout/"][0] == "opt-out"


async def test_dry_run_logs_every_decision_and_stops_nothing(
        culler_hub, user_prefix, cleanup, caplog):
    hub, p = culler_hub, user_prefix
    start = datetime.now(UTC)
    await hub.create_users(p + "a", p + "b")
    await hub.spawn(p + "a", profile="gpu")
    await hub.spawn(p + "b", profile="cpu")
    culler = make_culler(hub, ManualClock(start + timedelta(minutes=45)), dry_run=True)
    cleanup.append(culler)
    with caplog.at_level(logging.DEBUG, logger="kdash_hub.services.culler"):
        report = await culler.run_once()
    assert report.stopped == [] and f"{p}a/" in report.to_cull
    assert await hub.running(p) == {f"{p}a/", f"{p}b/"}
    logged = {r.fields["user"]: r.fields for r in caplog.records
              if getattr(r, "event", "") == "decision" and r.fields["user"].startswith(p)}
    assert logged[p + "a"]["outcome"] == "would-stop" and logged[p + "a"]["dry_run"] is True
    assert {"user", "server", "profile", "rule", "idle_seconds", "action"} <= set(
        logged[p + "a"])
    assert logged[p + "b"]["action"] == "keep"
    # the JSON formatter writes it as one JSON object
    from kdash_hub.services.culler.logs import JSONFormatter

    record = next(r for r in caplog.records if getattr(r, "fields", {}).get("user") == p + "a")
    line = json.loads(JSONFormatter().format(record))
    assert line["event"] == "decision" and line["profile"] == "gpu" and line["rule"] == \
        "profile:gpu"
    exposition = culler.metrics.exposition().decode()
    assert 'kdash_culler_dry_run_servers_total{profile="gpu",reason="idle"}' in exposition


async def test_slow_stop_is_followed_up_and_a_failing_stop_does_not_stop_the_cycle(
        culler_hub, user_prefix, cleanup, hub_proxy):
    hub, p = culler_hub, user_prefix
    start = datetime.now(UTC)
    await hub.create_users(p + "slow", p + "broken", p + "fine")
    await hub.spawn(p + "slow", profile="gpu", slow_stop=1.0)
    await hub.spawn(p + "broken", profile="gpu")
    await hub.spawn(p + "fine", profile="gpu")
    # the hub swallows a spawner's stop errors (204), so the failure is injected in front
    hub_proxy.faults.append(Fault("DELETE", f"/users/{p}broken/server", 500))
    culler = make_culler(hub, ManualClock(start + timedelta(minutes=45)),
                         api_url=hub_proxy.url + "/hub/api")
    cleanup.append(culler)
    report = await culler.run_once()
    assert mine(report.stopped, p) == [f"{p}fine/"]
    assert mine(report.pending, p) == [f"{p}slow/"]
    assert mine(report.failed, p) == [f"{p}broken/"]
    assert any("stop" in e for e in report.errors)
    assert hub_proxy.requests["DELETE"] == 2 + 2  # slow, fine; broken: one try + one retry
    errors = {s.labels["kind"]: s.value for m in culler.metrics.registry.collect()
              for s in m.samples if s.name == "kdash_culler_errors_total"}
    assert errors["stop"] >= 1
    # wait (by polling the hub, not the culler) until the slow stop is over
    for _ in range(100):
        if await hub.server(p + "slow") is None:
            break
        import asyncio

        await asyncio.sleep(0.05)
    report = await culler.run_once()
    assert f"{p}slow/" in report.stopped and f"{p}slow/" not in culler.pending


async def test_pagination_sees_every_active_user(culler_hub, user_prefix, cleanup):
    hub, p = culler_hub, user_prefix
    names = [f"{p}{i}" for i in range(8)]
    await hub.create_users(*names)
    for name in names:
        await hub.spawn(name, profile="cpu")
    culler = make_culler(hub, ManualClock(), concurrency=4)
    cleanup.append(culler)
    report = await culler.run_once()
    seen = {d.user for d in report.decisions}
    assert set(names) <= seen
    active = len(seen)
    pages = -(-active // 3)  # the test hub's api_page_max_limit is 3
    # the pages (limit 3) plus the opt-out group and the server lifetimes
    assert culler.hub.requests["GET"] == pages + 2


async def test_inactive_users_are_deleted_but_never_admins(culler_hub, user_prefix, cleanup):
    hub, p = culler_hub, user_prefix
    await hub.create_users(p + "gone", p + "running", p + "vip")
    await hub.create_users(p + "admin", admin=True)
    await hub.spawn(p + "running", profile="cpu")
    await hub.add_to_group(f"{p}keep", p + "vip")
    clock = ManualClock(datetime.now(UTC) + timedelta(minutes=50))
    culler = make_culler(hub, clock, cull_users_after="40m", exempt_groups=[f"{p}keep"],
                         default_rule={"idle": "never"}, profile_rules={})
    cleanup.append(culler)
    report = await culler.run_once()
    assert mine(report.users_deleted, p) == [p + "gone"]
    users = {u["name"] for u in await hub.users()}
    assert {p + "running", p + "vip", p + "admin"} <= users and p + "gone" not in users


async def test_unreachable_hub_backs_off_and_does_not_crash(culler_hub):
    from kdash_hub.dev.ports import free_port

    delays = []

    async def record(seconds):
        delays.append(seconds)

    app = CullerApp(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api",
                    api_token="x", opt_out_group="", **RULES)
    hub = HubAPI(app.hub_api_url, "x", retries=4, backoff_base=0.1, sleep=record)
    culler = app.make_culler(hub=hub)
    report = await culler.run_once()
    await hub.close()
    assert delays == [0.1, 0.2, 0.4, 0.8]
    assert report.errors and report.errors[0].startswith("hub:")
    errors = {s.labels["kind"]: s.value for m in culler.metrics.registry.collect()
              for s in m.samples if s.name == "kdash_culler_errors_total"}
    assert errors == {"hub": 1.0}


async def test_kdash_hub_culler_command_dry_run_once(culler_hub, user_prefix, cleanup):
    import asyncio
    import sys

    hub, p = culler_hub, user_prefix
    await hub.create_users(p + "cli")
    await hub.spawn(p + "cli", profile="gpu")
    # the rule below culls after 1 s idle; the command itself can start in less than that
    await asyncio.sleep(1.2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kdash_hub.cli", "culler", "--dry-run", "--once",
        "--set", f"hub_api_url={hub.api_url}", "--set", f"api_token={hub.culler_token}",
        "--set", "default_rule={\"idle\": \"1s\"}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    mine_ = [x for x in lines if x.get("event") == "decision" and x.get("user") == p + "cli"]
    assert mine_ and mine_[0]["outcome"] == "would-stop" and mine_[0]["profile"] == "gpu", err
    assert any(x["event"] == "cycle" and x["dry_run"] for x in lines)
    assert await hub.running(p) == {f"{p}cli/"}



async def test_a_missing_opt_out_group_is_asked_for_every_ten_minutes(
        culler_hub, user_prefix, cleanup):
    """Not every cycle: each ask of a group that isn't there is a 404 line in the hub's log.
    Once the group exists it is read every cycle, so its members are always fresh."""
    hub, p = culler_hub, user_prefix
    await hub.create_users(p + "kept")
    await hub.spawn(p + "kept", profile="cpu")
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=2))  # idle beyond every rule
    culler = make_culler(hub, clock, opt_out_group=f"{p}optout", dry_run=True)
    cleanup.append(culler)
    asks: list[str] = []
    ask = culler.hub.get_group

    async def counted(name: str) -> dict | None:
        asks.append(name)
        return await ask(name)

    culler.hub.get_group = counted
    for _ in range(3):
        assert f"{p}kept/" in (await culler.run_once()).to_cull
    assert asks == [f"{p}optout"]
    # an admin makes the group: believed missing until the recheck is due...
    await hub.add_to_group(f"{p}optout", p + "kept")
    await hub.set_group_properties(f"{p}optout", {"servers": [f"{p}kept/"]})
    clock.set(clock.now() + timedelta(minutes=5))
    assert f"{p}kept/" in (await culler.run_once()).to_cull and len(asks) == 1
    # ...then read every cycle
    clock.set(clock.now() + timedelta(minutes=6))
    for n in (2, 3):
        report = await culler.run_once()
        assert len(asks) == n and f"{p}kept/" not in report.to_cull
        assert [d.reason for d in report.decisions if d.user == p + "kept"] == ["opt-out"]
