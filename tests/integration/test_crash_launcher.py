"""The launcher killed (-9) mid-launch and mid-delete, and Kubernetes API faults during
launches: after the restart its reconciler leaves each instance complete and ready or fully
gone (a delete cut short is finished, never undone), no orphans.

A real hub runs the real launcher as a managed service (tests/fixtures/launcher.py); the
kill hits the service's process (found by its config file on the command line), and the
hub starts it again, as in a deployment. Where the kill lands is chosen with the
emulator's fault injection: a long latency on the creates of one kind holds every launch
at that step (record written, no object; ConfigMap and Deployment made, no Service).
A delete is held the same way: at the mark (the record's PATCH to `deleting`), at the
objects (the Deployment's DELETE, the Service already gone), at the record (its DELETE,
every object gone). `run_kill_experiment`, `run_delete_kill_experiment` and
`run_fault_experiment` are shared with benchmarks/bench_launcher_recovery.py, which prints
the figures.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher.reconcile import OBJECT_SELECTOR as OBJECTS
from kdash_hub.services.launcher.records import ANN_RECORD, record_selector
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import (
    LauncherEnv,
    _hub_config,
    start_launcher_env,
    stop_launcher_env,
)
from tests.fixtures.versions import JUPYTERHUB_MAJOR

USERS = ("alice", "bob", "carol", "dave", "erin")
KINDS = ("ConfigMap", "Deployment", "Service")
EXTRA = "\nc.LauncherSettings.reconcile_interval = 2.0\n"
HOLD = 20.0  # seconds the creates of one kind are held, so the kill lands at that step


def _launcher_pid(env: LauncherEnv) -> int:
    """The launcher service's process: the one whose command line names its config."""
    config = str(env.launcher_dir / "launcher_config.py")  # type: ignore[attr-defined]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if config in cmd and "python" in cmd:
            return int(entry)
    raise LookupError("no launcher process")


def _faults(env: LauncherEnv, method: str, body: Any = None) -> Any:
    assert env.cluster is not None
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(env.cluster.url + "/_kdash/faults", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def census(kube: KubeResources) -> dict[str, Any]:
    """Instances by state: complete (record ready, every object there), half-made (a
    record without all its objects, or still `creating`), orphans (objects, no record)."""
    complete, half, orphans = set(), set(), set()
    made: dict[str, set[str]] = {}
    for user in USERS:
        ns = user_namespace(user, "kdash-")
        records = {}
        for secret in await kube.list("Secret", ns, label_selector=record_selector(user)):
            content = json.loads(secret["metadata"]["annotations"][ANN_RECORD])
            records[content["name"]] = content
        objects: dict[str, set[str]] = {}
        for kind in KINDS:
            for obj in await kube.list(kind, ns, label_selector=OBJECTS):
                inst = obj["metadata"]["labels"]["kdash-hub.io/instance"]
                objects.setdefault(inst, set()).add(kind)
        for name, content in records.items():
            if content.get("phase") == "ready" and objects.get(name) == set(KINDS):
                complete.add(f"{user}/{name}")
            else:
                half.add(f"{user}/{name}")
        made.update({f"{user}/{k}": v for k, v in objects.items()})
        for name in set(objects) - set(records):
            orphans.add(f"{user}/{name}")
    return {"complete": complete, "half": half, "orphans": orphans, "made": made}


def counts(c: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, int]:
    out = {"running": len(c["complete"]), "half_made": len(c["half"]),
           "orphan": len(c["orphans"])}
    if before is not None:
        out["lost"] = len(before["complete"] - c["complete"])
    return out


async def _launch(env: LauncherEnv, user: str, name: str) -> tuple[int, Any]:
    try:
        return await env.call("POST", "instances", user,
                              json_body={"template": "echo", "name": name})
    except Exception as e:  # noqa: BLE001 - the launcher died under this request
        return 0, repr(e)


async def _wait(kube: KubeResources, done, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        c = await census(kube)
        if done(c) or time.monotonic() > deadline:
            return c
        await asyncio.sleep(0.25)


async def _wait_json_api(env: LauncherEnv, within: float = 120.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        try:
            status, body = await env.call("GET", "instances", "alice")
            if status == 200 and isinstance(body, dict):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - still restarting
            pass
        await asyncio.sleep(0.25)
    raise TimeoutError("the launcher didn't come back")


async def run_kill_experiment(env: LauncherEnv, point: str, n: int = 10) -> dict[str, Any]:
    """Kill -9 the launcher with `n` launches at `point` (record | objects | done)."""
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        names = [(USERS[i % len(USERS)], f"{point[:3]}{i}") for i in range(n)]
        hold = {"record": "configmaps", "objects": "services"}.get(point)
        if hold:
            _faults(env, "POST", {"method": "POST", "path_regex": f"/{hold}(\\?|$)",
                                  "status": None, "latency": HOLD, "times": None})
        tasks = [asyncio.ensure_future(_launch(env, u, nm)) for u, nm in names]
        mine = {f"{u}/{nm}" for u, nm in names}

        def reached(c: dict[str, Any]) -> bool:
            if point == "done":
                return mine <= c["complete"]
            if point == "objects":
                return all(c["made"].get(k) == {"ConfigMap", "Deployment"} for k in mine)
            return len(mine & c["half"]) == n

        if point == "done":
            await asyncio.gather(*tasks)
        before = await _wait(kube, reached, 60)
        pid = _launcher_pid(env)
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        if hold:
            _faults(env, "DELETE")
        before_c = counts(before)
        results = await asyncio.gather(*tasks)
        back = await _wait_json_api(env)
        # the dead process's requests still held by the emulator land (as a real API
        # server finishes a request whose client died): the reconciler must cope
        await asyncio.sleep(max(0.0, HOLD + 1 - (time.monotonic() - t_kill)) if hold else 0)
        after = await _wait(kube, lambda c: not (c["half"] & mine) and not c["orphans"], 60)
        recovered = time.monotonic() - t_kill
        return {"experiment": f"kill -9 at {point}", "n": n, "before": before_c,
                "after": counts(after, before), "api_back_s": round(back, 2),
                "recover_s": round(recovered, 2),
                "launch_answers": sorted({r[0] for r in results}),
                "mine": mine, "before_census": before, "after_census": after,
                "new_pid": _launcher_pid(env), "old_pid": pid}


# where a delete is held (method, path) so the kill lands there
DELETE_POINTS = {
    "mark": ("PATCH", r"/secrets/kdash-instance-del"),
    "objects": ("DELETE", r"/deployments/del"),
    "record": ("DELETE", r"/secrets/kdash-instance-del"),
}


async def _delete(env: LauncherEnv, key: str) -> tuple[int, Any]:
    user, name = key.split("/")
    try:
        return await env.call("DELETE", f"instances/{user}/{name}", user)
    except Exception as e:  # noqa: BLE001 - the launcher died under this request
        return 0, repr(e)


def _fired(env: LauncherEnv) -> int:
    return int(_faults(env, "GET")["fired"])


async def run_delete_kill_experiment(env: LauncherEnv, point: str,
                                     n: int = 10) -> dict[str, Any]:
    """Kill -9 the launcher with `n` deletes (API) held at `point` (mark | objects |
    record); one instance of every user that nobody deletes stands by. After the restart:
    every deleted instance fully gone (none made again, none half), the others complete."""
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        doomed = {f"{USERS[i % len(USERS)]}/del{point[:3]}{i}" for i in range(n)}
        keep = {f"{u}/keep{point[:3]}" for u in USERS}
        launched = await asyncio.gather(*(
            _launch(env, *key.split("/")) for key in sorted(doomed | keep)))
        assert all(status == 201 for status, _ in launched), launched
        await _wait(kube, lambda c: (doomed | keep) <= c["complete"], 60)
        method, path = DELETE_POINTS[point]
        fired = _fired(env)
        _faults(env, "POST", {"method": method, "path_regex": path, "status": None,
                              "latency": HOLD, "times": None})
        tasks = [asyncio.ensure_future(_delete(env, key)) for key in sorted(doomed)]
        for _ in range(600):  # until every delete is held at the point (a minute at most)
            if _fired(env) - fired >= n:
                break
            await asyncio.sleep(0.1)
        before = await census(kube)
        pid = _launcher_pid(env)
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        _faults(env, "DELETE")
        results = await asyncio.gather(*tasks)
        back = await _wait_json_api(env)
        await asyncio.sleep(max(0.0, HOLD + 1 - (time.monotonic() - t_kill)))

        def settled(c: dict[str, Any]) -> bool:
            return not (_present(c) & doomed - c["complete"]) and not c["orphans"]

        after = await _wait(kube, settled, 60)
        recovered = time.monotonic() - t_kill
        out = {"experiment": f"kill -9 mid-delete at {point}", "n": n,
               "before": _delete_counts(before, doomed, keep),
               "after": _delete_counts(after, doomed, keep, before),
               "api_back_s": round(back, 2), "recover_s": round(recovered, 2),
               "delete_answers": sorted({r[0] for r in results}), "doomed": doomed,
               "keep": keep, "before_census": before, "after_census": after,
               "new_pid": _launcher_pid(env), "old_pid": pid}
        for key in sorted(keep):  # clean up for the next experiment
            await _delete(env, key)
        return out


def _present(c: dict[str, Any]) -> set[str]:
    """Instances with a record or any object left."""
    return c["complete"] | c["half"] | set(c["made"])


def _delete_counts(c: dict[str, Any], doomed: set[str], keep: set[str],
                   before: dict[str, Any] | None = None) -> dict[str, int]:
    """For deletes. running: complete bystanders; begun: deleted instances whose delete had
    visibly begun (record marked, or an object gone); not_begun: still complete and
    untouched; gone: nothing left; made_again: complete after a delete had begun (only
    after); lost: bystanders complete before and not after; half_made (bystanders) and
    orphan as for launches."""
    begun = (_present(c) & doomed) - c["complete"]
    out = {"running": len(c["complete"] & keep), "begun": len(begun),
           "not_begun": len(c["complete"] & doomed), "gone": len(doomed - _present(c)),
           "half_made": len(c["half"] - doomed), "orphan": len(c["orphans"])}
    if before is not None:
        was_complete = before["complete"] & doomed
        out["not_begun"] = len(c["complete"] & was_complete)
        out["made_again"] = len((c["complete"] & doomed) - was_complete)
        out["lost"] = len((before["complete"] & keep) - c["complete"])
    return out


async def run_fault_experiment(env: LauncherEnv, n: int = 10) -> dict[str, Any]:
    """20% 500s and 200 ms latency on the creates in user namespaces during `n` launches."""
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        ns_creates = r"/namespaces/kdash-[^/]+/[a-z]+(\?|$)"
        _faults(env, "POST", {"method": "POST", "path_regex": ns_creates, "status": 500,
                              "fraction": 0.2, "times": None, "seed": 17})
        _faults(env, "POST", {"method": "POST", "path_regex": ns_creates, "status": None,
                              "latency": 0.2, "times": None})
        t0 = time.monotonic()
        try:
            results = await asyncio.gather(*(
                _launch(env, USERS[i % len(USERS)], f"flt{i}") for i in range(n)))
        finally:
            fired = _faults(env, "GET")["fired"]
            _faults(env, "DELETE")
        during = await census(kube)
        mine = {f"{USERS[i % len(USERS)]}/flt{i}" for i in range(n)}
        status, report = await env.call("POST", "reconcile", "root")
        after = await _wait(kube, lambda c: not (c["half"] & mine) and not c["orphans"], 60)
        return {"experiment": "API faults (20% 500, 200 ms)", "n": n, "fired": fired,
                "launched": sum(1 for r in results if r[0] == 201),
                "failed": sum(1 for r in results if r[0] != 201),
                "results": results, "before": counts(during), "after": counts(after),
                "recover_s": round(time.monotonic() - t0, 2), "reconcile": (status, report),
                "mine": mine, "after_census": after}


@pytest.fixture(scope="module")
def crash_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    workdir = tmp_path_factory.mktemp("crashlauncher")
    # a loaded machine (CI, several suites at once) can take minutes to start a hub
    slow_start = functools.partial(HubProcess, start_timeout=300.0)
    def hub_config(*args: Any) -> str:  # and the launcher's own start, minutes too
        if JUPYTERHUB_MAJOR < 6:  # no Service.timeout before 6
            return _hub_config(*args)
        return _hub_config(*args) + '\nc.JupyterHub.services[-1]["timeout"] = 300\n'

    with mock.patch("tests.fixtures.launcher.HubProcess", slow_start), \
            mock.patch("tests.fixtures.launcher._hub_config", hub_config):
        env = start_launcher_env(workdir, EXTRA)
    env.launcher_dir = workdir  # type: ignore[attr-defined]
    yield env
    stop_launcher_env(env)


@pytest.mark.parametrize("point", ["mark", "objects", "record"])
async def test_kill_launcher_mid_delete(crash_env: LauncherEnv, point: str) -> None:
    """A delete cut short by kill -9 is finished by the restarted launcher: every deleted
    instance fully gone (never made again), nothing half-made, no orphan, nothing else
    lost."""
    r = await run_delete_kill_experiment(crash_env, point, n=5)
    assert r["new_pid"] != r["old_pid"]
    assert r["before"]["running"] == len(USERS), r["before"]
    if point == "mark":
        # killed before the mark was written (the emulator drops a request whose client
        # died before its body was read): the delete never began, each instance is as it
        # was, complete, and the user's delete again removes it
        assert r["before"]["not_begun"] == 5, r["before"]
        assert r["after"] == {"running": len(USERS), "begun": 0, "not_begun": 5, "gone": 0,
                              "made_again": 0, "half_made": 0, "orphan": 0, "lost": 0}, r["after"]
        for key in sorted(r["doomed"]):
            assert (await _delete(crash_env, key))[0] == 204
        async with api_client_for(crash_env.kubeconfig) as client:
            left = await census(KubeResources(client))
        assert not (_present(left) & r["doomed"]) and not left["orphans"], left
    else:  # the mark was written: the restarted launcher finished every delete
        assert r["before"]["begun"] == 5, r["before"]
        assert r["after"] == {"running": len(USERS), "begun": 0, "not_begun": 0, "gone": 5,
                              "made_again": 0, "half_made": 0, "orphan": 0, "lost": 0}, r["after"]
    status, body = await crash_env.call("GET", "reconcile", "root")
    assert status == 200 and body["last"]["orphans"] == [], body
    assert not any(d["action"] == "forward" and d["instance"].startswith("del")
                   for d in body["last"]["decisions"]), body
    for key in r["doomed"]:  # and the API says so: gone, as JSON
        user, name = key.split("/")
        status, info = await crash_env.call("GET", f"instances/{user}/{name}", user)
        assert status == 404 and isinstance(info, dict) and info["message"], info


@pytest.mark.parametrize("point", ["record", "objects", "done"])
async def test_kill_launcher_mid_launch(crash_env: LauncherEnv, point: str) -> None:
    r = await run_kill_experiment(crash_env, point)
    assert r["new_pid"] != r["old_pid"]
    mine, after = r["mine"], r["after_census"]
    report = await crash_env.call("GET", "reconcile", "root")
    assert not (after["half"] & mine), (after, report)  # nothing half-made left
    assert not after["orphans"], after  # no orphan objects
    assert not (r["before_census"]["complete"] - after["complete"])  # nothing lost
    if point == "done":
        assert mine <= after["complete"]
    else:  # each instance complete (rolled forward) or fully gone
        assert r["before"]["half_made"] == len(mine)
    # and the instances are ready again through the API (JSON)
    for key in mine & after["complete"]:
        user, name = key.split("/")
        info = await crash_env.wait_status(user, name, "ready", within=30)
        assert info["status"] == "ready", info
        assert info["phase"] == "ready"
    status, body = await crash_env.call("GET", "reconcile", "root")
    assert status == 200 and body["passes"] >= 1 and body["last"]["orphans"] == []
    for key in mine:  # clean up for the next experiment (and the user limit)
        user, name = key.split("/")
        status, body = await crash_env.call("DELETE", f"instances/{user}/{name}", user)
        assert status in (204, 404), body
    # the deletes ran beside the periodic reconcile (every 2 s): nothing of them is left
    # (the bench once saw a Service and its rollforward outlive their record)
    async with api_client_for(crash_env.kubeconfig) as client:
        left = await census(KubeResources(client))
    assert not (_present(left) & mine) and not left["orphans"], left


async def test_api_faults_during_launches(crash_env: LauncherEnv) -> None:
    r = await run_fault_experiment(crash_env)
    assert r["fired"] > 0
    for status, body in r["results"]:
        assert status in (201, 502, 500, 503), body
        assert isinstance(body, dict) and body.get("message" if status != 201 else "name"), body
    assert not (r["after_census"]["half"] & r["mine"]), r["after_census"]
    assert not (r["after_census"]["orphans"] & r["mine"])
    assert r["reconcile"][0] == 200
    for key in r["mine"] & r["after_census"]["complete"]:
        user, name = key.split("/")
        await crash_env.call("DELETE", f"instances/{user}/{name}", user)


async def test_api_errors_are_json(crash_env: LauncherEnv) -> None:
    for path in ("nope", "instances/alice/nothing-here", "reconcile"):
        status, body = await crash_env.call("GET", path, "alice")
        assert status in (403, 404) and isinstance(body, dict) and body["message"], body
    assert (await crash_env.call("GET", "reconcile", "root"))[0] == 200
