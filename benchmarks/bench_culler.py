"""One cull cycle of kdash-culler vs jupyterhub-idle-culler 1.4.0 and 2.0.0 on the same hub.

A real JupyterHub (+ configurable-http-proxy) with 5,000 users and 2,000 running servers
(`--quick`: 500 / 200) of the InstantSpawner (tests/fixtures/culler.py: no process, one
shared responder). The users and servers are written into the hub's database before it
starts (the hub restores them as running servers at startup, routes and all); half the
servers were last active 2 h ago, half 5 min ago. Each culler gets the same hub state (the
database is restored and the hub restarted in between), the same idle timeout (1 h), the
same concurrency (`--concurrency`, 10: jupyterhub-idle-culler's default) and the same hub
API token, and runs one cycle, calling the hub's own API port as services do in z2jh
(`--via-proxy`: through configurable-http-proxy). The baselines: jupyterhub-idle-culler
1.4.0 (what the z2jh 4.4.0 hub image ships) and 2.0.0 (the newest; installed once with
`pip install --target` into ~/.cache/kdash-hub/, or `--idle-culler-2 DIR`), each run in a
process of its own; kdash-culler runs in this one.

Per cycle: the hub's CPU seconds (from /proc: the cost the hub pays, the figure that
matters on a busy hub) and its API requests (from its access log, which names the token's
owner), and the cycle's wall time.

The hub's files (its sqlite database) are on tmpfs (/dev/shm) by default: the hub commits
synchronously in its event loop, and on this shared machine the disk's fsync latency made
single runs vary 2x for both cullers alike. `--on-disk` measures with the database on disk.

    python -m benchmarks.bench_culler [--quick] [--repeat N] [--concurrency N] [--via-proxy]
        [--on-disk] [--idle-culler-2 DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ports import free_port
from tests.fixtures.culler import hub_config

TIMEOUT = 3600
SERVICE = "kdash-culler"


def populate(db_path: Path, users: int, servers: int, port: int) -> set[str]:
    """Write users and running servers into the hub database; returns the idle ones."""
    from jupyterhub import orm

    session = orm.new_session_factory(f"sqlite:///{db_path}")()
    now = datetime.utcnow()  # the hub keeps naive UTC
    idle = set()
    rows = []
    for i in range(users):
        name = f"user{i:05d}"
        user = orm.User(name=name, created=now - timedelta(days=3),
                        last_activity=now - timedelta(hours=3))
        rows.append(user)
        if i < servers:
            stale = i % 2 == 0
            active_at = now - (timedelta(hours=2) if stale else timedelta(minutes=5))
            spawner = orm.Spawner(name="", user=user, state={"running": True},
                                  user_options={"profile": "gpu" if i % 3 else "cpu"},
                                  started=now - timedelta(hours=2, minutes=10),
                                  last_activity=active_at)
            spawner.server = orm.Server(ip="127.0.0.1", port=port, base_url=f"/user/{name}/")
            rows.append(spawner)
            if stale:
                idle.add(f"{name}/")
    session.add_all(rows)
    session.commit()
    session.close()
    return idle


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_requests(log_path: Path, offset: int) -> dict[str, int]:
    text = log_path.read_bytes()[offset:].decode(errors="replace")
    counts: dict[str, int] = {}
    for method in re.findall(rf" \d{{3}} (GET|POST|DELETE|PUT|PATCH) /hub/api/\S* \({SERVICE}@",
                             text):
        counts[method] = counts.get(method, 0) + 1
    counts["total"] = sum(counts.values())
    return counts


async def running_servers(hub: HubProcess, token: str, *, settle: bool = False) -> set[str]:
    """The servers the hub has as running; with `settle`, first wait until the hub has
    finished checking the servers it restored at startup (none pending)."""
    while settle:
        found, pending = await _servers(hub, token)
        if not pending:
            return found
        await asyncio.sleep(1)
    return (await _servers(hub, token))[0]


async def _servers(hub: HubProcess, token: str) -> tuple[set[str], int]:
    import aiohttp

    found: set[str] = set()
    pending = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"token {token}"}) as s:
        offset = 0
        while True:
            async with s.get(f"{hub.api_url}/users?state=active&limit=200&offset={offset}",
                             headers={"Accept": "application/jupyterhub-pagination+json"}
                             ) as resp:
                page = await resp.json()
            for user in page["items"]:
                found.update(f"{user['name']}/{name}" for name in user["servers"])
                pending += sum(1 for s in user["servers"].values() if s.get("pending"))
            if not page["_pagination"]["next"]:
                return found, pending
            offset = page["_pagination"]["next"]["offset"]


VIA_PROXY = False


def api_url(hub: HubProcess) -> str:
    """The hub's own API port, as services in z2jh use it (http://hub:8081/hub/api), or the
    public URL through configurable-http-proxy with --via-proxy."""
    return hub.api_url if VIA_PROXY else f"http://127.0.0.1:{hub.hub_port}/hub/api"


CONCURRENCY = 10
IDLE_CULLER_2: Path | None = None

# one jupyterhub-idle-culler cycle in a process of its own (so two versions can be compared);
# prints its version and the cycle's wall time
IDLE_CULLER_CYCLE = """
import asyncio, inspect, json, logging, sys, time
import jupyterhub_idle_culler as culler
url, token, limit, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kwargs = dict(url=url, api_token=token, inactive_limit=limit, concurrency=concurrency)
if "logger" in inspect.signature(culler.cull_idle).parameters:  # 2.x
    kwargs["logger"] = logging.getLogger("idle-culler")
t0 = time.perf_counter()
asyncio.run(culler.cull_idle(**kwargs))
print(json.dumps({"version": culler.__version__, "time": time.perf_counter() - t0}))
"""


async def run_kdash(hub: HubProcess, token: str) -> float:
    from kdash_hub.services.culler.app import CullerApp

    app = CullerApp(hub_api_url=api_url(hub), api_token=token, concurrency=CONCURRENCY,
                    default_rule={"idle": TIMEOUT}, opt_out_group="")
    culler = app.make_culler()
    t0 = time.perf_counter()
    try:
        report = await culler.run_once()
    finally:
        await culler.hub.close()
    elapsed = time.perf_counter() - t0
    assert not report.errors, report.errors
    assert not report.pending and not report.failed, (report.pending, report.failed)
    return elapsed


async def run_idle_culler(hub: HubProcess, token: str, version: str,
                          path: Path | None) -> float:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", IDLE_CULLER_CYCLE, api_url(hub), token,
                         str(TIMEOUT), str(CONCURRENCY)],
        capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == version, result
    return result["time"]


def idle_culler_2(path: Path | None) -> Path:
    """jupyterhub-idle-culler 2.0.0, installed once into a folder of its own (its other
    requirements, tornado, traitlets, packaging, python-dateutil, are in this venv)."""
    if path is not None:
        return path
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    target = Path(base) / "kdash-hub" / "jupyterhub-idle-culler-2.0.0"
    if not (target / "jupyterhub_idle_culler").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), "jupyterhub-idle-culler==2.0.0"], check=True)
    return target


async def measure(name, runner, workdir: Path, snapshot: Path, config: str, token: str,
                  expected: set[str]) -> dict:
    shutil.copy(snapshot, workdir / "jupyterhub.sqlite")
    hub = HubProcess(config, workdir, env={"PYTHONUNBUFFERED": "1"}, start_timeout=600)
    t0 = time.perf_counter()
    await hub.start()
    try:
        before = await running_servers(hub, token, settle=True)
        startup = time.perf_counter() - t0
        offset = hub.log_path.stat().st_size
        cpu0 = cpu_seconds(hub.process.pid)
        elapsed = await runner(hub, token)
        hub_cpu = cpu_seconds(hub.process.pid) - cpu0
        await asyncio.sleep(0.5)  # let the access log reach the file
        requests = count_requests(hub.log_path, offset)
        after = await running_servers(hub, token)
    finally:
        await hub.stop()
    culled = before - after
    print(f"  {name:<28} {elapsed:7.2f} s  hub CPU {hub_cpu:6.2f} s  requests {requests}  "
          f"culled {len(culled)}  (hub start {startup:.1f} s, {len(before)} running)",
          flush=True)
    return {"time": elapsed, "requests": requests, "culled": culled, "running": len(before),
            "hub_cpu": hub_cpu}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 users, 200 servers")
    parser.add_argument("--users", type=int)
    parser.add_argument("--servers", type=int)
    parser.add_argument("--keep", metavar="DIR", help="keep the hub's files in DIR")
    parser.add_argument("--via-proxy", action="store_true",
                        help="call the hub API through configurable-http-proxy")
    parser.add_argument("--on-disk", action="store_true",
                        help="the hub's database in the system temp dir, not /dev/shm")
    parser.add_argument("--repeat", type=int, default=2,
                        help="cycles per culler (rotating order); the best one counts")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="hub API requests at once, for every culler (default 10)")
    parser.add_argument("--idle-culler-2", type=Path, metavar="DIR",
                        help="a folder holding jupyterhub-idle-culler 2.0.0 (pip --target)")
    args = parser.parse_args(argv)
    global VIA_PROXY, CONCURRENCY
    VIA_PROXY = args.via_proxy
    CONCURRENCY = args.concurrency
    import jupyterhub_idle_culler

    assert jupyterhub_idle_culler.__version__ == "1.4.0", jupyterhub_idle_culler.__version__
    culler_2 = idle_culler_2(args.idle_culler_2)
    import kdash_hub.services.culler.app  # noqa: F401 - imports are not part of a cycle's time
    users = args.users or (500 if args.quick else 5000)
    servers = args.servers or (200 if args.quick else 2000)
    logging.getLogger("kdash_hub.services.culler").setLevel(logging.WARNING)
    logging.getLogger("tornado").setLevel(logging.ERROR)

    token = secrets.token_hex(16)
    port = free_port()
    config = hub_config(token, f"c.InstantSpawner.shared_port = {port}\n"
                               "c.JupyterHub.log_level = 'INFO'\n",
                        slow_stop_timeout=10)
    shm = Path("/dev/shm")
    parent = None if args.on_disk or not os.access(shm, os.W_OK) else str(shm)
    contenders = [
        ("idle-1.4", "jupyterhub-idle-culler 1.4.0",
         lambda hub, token: run_idle_culler(hub, token, "1.4.0", None)),
        ("idle-2.0", "jupyterhub-idle-culler 2.0.0",
         lambda hub, token: run_idle_culler(hub, token, "2.0.0", culler_2)),
        ("kdash", "kdash-culler", run_kdash),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-culler-", dir=parent) as tmp:
        workdir = Path(args.keep or tmp)
        print(f"kdash-culler vs jupyterhub-idle-culler 1.4.0 and 2.0.0: {users} users, "
              f"{servers} running servers, idle timeout {TIMEOUT} s, concurrency "
              f"{CONCURRENCY} for all, hub files in {workdir}, API "
              f"{'through the proxy' if VIA_PROXY else 'direct'}", flush=True)
        hub = HubProcess(config, workdir)
        await hub.start()  # creates the database
        await hub.stop()
        expected = populate(workdir / "jupyterhub.sqlite", users, servers, port)
        snapshot = workdir / "snapshot.sqlite"
        shutil.copy(workdir / "jupyterhub.sqlite", snapshot)
        workdir.joinpath("jupyterhub.log").unlink(missing_ok=True)
        runs: dict[str, list[dict]] = {key: [] for key, _, _ in contenders}
        for i in range(args.repeat):
            shift = i % len(contenders)
            for key, label, runner in contenders[shift:] + contenders[:shift]:
                runs[key].append(await measure(label, runner, workdir, snapshot, config,
                                               token, expected))
    best = {key: min(results, key=lambda r: r["hub_cpu"]) for key, results in runs.items()}
    same = all(r["culled"] == expected for results in runs.values() for r in results)
    print(f"best of {args.repeat} (least hub CPU), per cycle of {len(expected)} culls out of "
          f"{best['kdash']['running']} servers:")
    print(f"  {'':<28} {'hub CPU s':>10} {'hub API requests':>17} {'wall s':>8}")
    for key, label, _ in contenders:
        r = best[key]
        print(f"  {label:<28} {r['hub_cpu']:>10.2f} {r['requests']['total']:>17} "
              f"{r['time']:>8.2f}")
    ours = best["kdash"]
    for key in ("idle-1.4", "idle-2.0"):
        cpu = ours["hub_cpu"] / best[key]["hub_cpu"]
        requests = ours["requests"]["total"] / best[key]["requests"]["total"]
        print(f"kdash / {key}: hub CPU {cpu:.2f}x, hub API requests {requests:.2f}x")
    print(f"same servers culled by all: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
