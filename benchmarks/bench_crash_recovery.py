"""Crash and fault recovery of the hub side, measured with a real hub, real proxy and real
notebook processes on the local cluster (tests/fixtures/crashlab.py).

1. `kill -9` of the hub during N concurrent spawns, at three points (before any pod runs,
   half of them running, all running), then a restart on the same database; with
   `--baseline`, the same at "some running" with the restart check as JupyterHub 6 +
   KubeSpawner 7.1 do it alone (no adoption), for comparison.
2. Kubernetes API faults during 20 first spawns: 20% of the spawner's creates answer 500,
   every create takes 200 ms more; with the default `api_retries` (3) and with none.

For each experiment the counts before and after (running / lost / half-made / orphans, and
pending, false-ready, falsely marked), and the time to recover: seconds from the hub's
restart to every adopted server answering through the proxy with none pending (for the
faults: the time one more start of every failed user takes to repair all).

    python -m benchmarks.bench_crash_recovery [--quick] [--users N] [--fault-users N]
                                              [--baseline] [--skip-faults] [--skip-kills]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from tests.fixtures.crashlab import SPAWNER_CREATES, Counts, CrashLab, human, kill_points

COLUMNS = ("running", "lost", "half_made", "orphans", "pending", "false_ready", "false_marked")
# the restart check as upstream does it: KubeSpawner's poll and JupyterHub's get_url
NO_ADOPTION = """
from kubespawner import KubeSpawner
from kdash_hub.spawner import KDashSpawner


class UpstreamCheckSpawner(KDashSpawner):
    async def poll(self):
        return await KubeSpawner.poll(self)

    async def get_url(self):
        return await KubeSpawner.get_url(self)


c.JupyterHub.spawner_class = UpstreamCheckSpawner
"""
# what z2jh users meet: the hub's HTTP check of a server gives up after 60 s at most
HTTP_TIMEOUT = "c.KDashSpawner.http_timeout = 60\n"


def row(label: str, counts: Counts, seconds: float | None = None) -> str:
    cells = "".join(f"{getattr(counts, c):>13}" for c in COLUMNS)
    return f"  {label:<28}{cells}" + (f"{seconds:>10.1f}" if seconds is not None else "")


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'':<28}" + "".join(f"{c.replace('_', '-'):>13}" for c in COLUMNS)
          + f"{'seconds':>10}")


async def kill_experiment(workdir: Path, users: int, point: str, adoption: bool = True) -> dict:
    extra = HTTP_TIMEOUT + ("" if adoption else NO_ADOPTION)
    lab = await CrashLab(workdir, users, extra_config=extra).start()
    try:
        began_spawns = time.monotonic()
        spawns = [asyncio.ensure_future(lab.spawn(n)) for n in lab.names]
        await lab.wait_pods(kill_points(users)[point], seconds=600)
        before = await lab.counts(through_proxy=False)
        running_at_kill = await lab.running_pod_users()
        killed_at = time.monotonic() - began_spawns
        lab.kill_hub()
        for spawn in spawns:
            spawn.cancel()
        restarted = await lab.restart_hub()
        hub_up = time.monotonic() - restarted
        pods_ready = asyncio.ensure_future(lab.all_pods_ready())
        recovered = await lab.settle(seconds=900) - restarted
        last_pod_ready = await pods_ready - restarted
        after = await lab.counts(running_at_kill)
        t0 = time.monotonic()
        again = await lab.start_the_rest()
        repaired_in = time.monotonic() - t0
        repaired = await lab.counts()
        title = (f"kill -9 at '{point}' ({users} spawns, killed {killed_at:.0f}s in, "
                 f"{len(running_at_kill)} pods Running)"
                 + ("" if adoption else " — WITHOUT adoption (upstream check)"))
        header(title)
        print(row("at the kill (hub's view)", before))
        print(row("after restart", after, recovered))
        print(row(f"after 1 more start ({len(again)})", repaired, repaired_in))
        print(f"  after the restart: hub API answering {hub_up:.1f}s, last notebook pod ready "
              f"{last_pod_ready:.1f}s, all servers settled and answering {recovered:.1f}s")
        return {"experiment": f"kill:{point}", "adoption": adoption, "users": users,
                "pods_running_at_kill": len(running_at_kill), "before": before.figures(),
                "after": after.figures(), "recover_seconds": round(recovered, 1),
                "hub_up_seconds": round(hub_up, 1),
                "last_pod_ready_seconds": round(last_pod_ready, 1),
                "restarted": len(again), "repaired": repaired.figures(),
                "repair_seconds": round(repaired_in, 1)}
    finally:
        await lab.stop()


async def fault_experiment(workdir: Path, users: int, retries: int | None) -> dict:
    extra = HTTP_TIMEOUT + (f"c.KDashSpawner.api_retries = {retries}\n"
                            if retries is not None else "")
    lab = await CrashLab(workdir, users, extra_config=extra).start()
    try:
        await lab.faults("POST", {"method": "POST", "path_regex": SPAWNER_CREATES,
                                  "status": 500, "times": None, "fraction": 0.2, "seed": 17,
                                  "latency": 0.2})
        await lab.faults("POST", {"method": "POST", "path_regex": SPAWNER_CREATES,
                                  "status": None, "times": None, "latency": 0.2})
        t0 = time.monotonic()
        outcomes = await asyncio.gather(*(lab.spawn(n) for n in lab.names))
        spawn_seconds = time.monotonic() - t0
        faults = (await lab.faults("GET"))["faults"]
        await lab.faults("DELETE")
        await lab.settle(seconds=900)
        after = await lab.counts()
        failed = [o for o in outcomes if o.result != "ready"]
        sentences = sum(1 for o in failed if human(o.message))
        t0 = time.monotonic()
        again = await lab.start_the_rest()
        repaired_in = time.monotonic() - t0
        repaired = await lab.counts()
        label = "default (3)" if retries is None else str(retries)
        header(f"API faults during {users} first spawns: 20% 500s + 200 ms on creates, "
               f"api_retries {label} ({faults[0]['hits']} of "
               f"{faults[0]['hits'] + faults[1]['hits']} creates failed)")
        print(row(f"after the spawns ({len(failed)} failed)", after, spawn_seconds))
        print(row(f"after 1 more start ({len(again)})", repaired, repaired_in))
        print(f"  failures with a sentence: {sentences}/{len(failed)}"
              + "".join(f"\n    e.g. {o.message[:150]}" for o in failed[:2]))
        log = lab.hub.log_path.read_text(errors="replace")
        print(f"  'Unhandled error' in the hub log: {log.count('Unhandled error')}")
        return {"experiment": f"faults:retries={label}", "users": users,
                "failed": len(failed), "with_sentence": sentences, "after": after.figures(),
                "restarted": len(again), "repaired": repaired.figures(),
                "repair_seconds": round(repaired_in, 1),
                "unhandled_errors": log.count("Unhandled error")}
    finally:
        await lab.stop()


async def run(args: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="kdash-crash-bench-") as tmp:
        workdir = Path(tmp)
        if not args.skip_kills:
            for i, point in enumerate(kill_points(args.users)):
                results.append(await kill_experiment(workdir / f"kill-{i}", args.users, point))
            if args.baseline:
                results.append(await kill_experiment(workdir / "baseline", args.users,
                                                     "some-running", adoption=False))
        if not args.skip_faults:
            for i, retries in enumerate([None] if args.quick else [None, 0]):
                results.append(await fault_experiment(workdir / f"faults-{i}",
                                                      args.fault_users, retries))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 users per kill experiment, faults with default retries only")
    parser.add_argument("--users", type=int, default=None,
                        help="concurrent spawns per kill experiment (default 30, quick 10)")
    parser.add_argument("--fault-users", type=int, default=20)
    parser.add_argument("--baseline", action="store_true",
                        help="also the 'some running' kill without adoption (upstream check)")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.users = args.users or (10 if args.quick else 30)
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
