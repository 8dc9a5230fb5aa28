"""Figures: the launcher killed (-9) mid-launch and mid-delete, API faults during launches.

Three kill points of a launch, three of a delete, then 20% 500s; running / lost /
half-made / orphan (and, for deletes, deleting / made again) counts before and after, and
the time to recover.

    .venv/bin/python -m benchmarks.bench_launcher_recovery [--launches 10] [--deletes 10]

The experiments are the ones tests/integration/test_crash_launcher.py asserts on (a real
hub, the real launcher as its managed service, the emulator's fault injection).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import _hub_config, start_launcher_env, stop_launcher_env
from tests.integration.test_crash_launcher import (
    EXTRA,
    _present,
    census,
    run_delete_kill_experiment,
    run_fault_experiment,
    run_kill_experiment,
)


def _row(r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    return (f"{r['experiment']:<32} n={r['n']:<3} before: running {b['running']:>2} half-made"
            f" {b['half_made']:>2} orphan {b['orphan']:>2} | after: running {a['running']:>2}"
            f" lost {a.get('lost', 0):>2} half-made {a['half_made']:>2} orphan"
            f" {a['orphan']:>2} | recovered in {r['recover_s']:.1f} s")


def _delete_row(r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    return (f"{r['experiment']:<32} n={r['n']:<3} before: running {b['running']:>2} delete"
            f" begun {b['begun']:>2} not begun {b['not_begun']:>2} orphan {b['orphan']:>2}"
            f" | after: running {a['running']:>2} lost {a['lost']:>2} gone {a['gone']:>2}"
            f" unfinished {a['begun']:>2} made again {a['made_again']:>2} not begun"
            f" {a['not_begun']:>2} half-made {a['half_made']:>2} orphan {a['orphan']:>2}"
            f" | recovered in {r['recover_s']:.1f} s")


async def _leftovers(env: Any, keys: set[str]) -> tuple[int, int]:
    """(instances of `keys` with a record or object left, orphan instances) now."""
    async with api_client_for(env.kubeconfig) as client:
        c = await census(KubeResources(client))
    return len(_present(c) & keys), len(c["orphans"])


async def _run(env: Any, n: int, deletes: int) -> None:
    for point in ("record", "objects", "done"):
        r = await run_kill_experiment(env, point, n)
        print(_row(r) + f" (API JSON again after {r['api_back_s']:.1f} s)", flush=True)
        answers = [(await env.call("DELETE", f"instances/{key}", key.split("/")[0]))[0]
                   for key in sorted(r["mine"])]
        left, orphans = await _leftovers(env, r["mine"])
        print(f"{'  then deleted through the API':<32} n={len(answers):<3} answers"
              f" {sorted(set(answers))}: {left} left, {orphans} orphan", flush=True)
    for point in ("mark", "objects", "record"):
        r = await run_delete_kill_experiment(env, point, deletes)
        print(_delete_row(r) + f" (API JSON again after {r['api_back_s']:.1f} s)",
              flush=True)
        for key in sorted(r["doomed"] & r["after_census"]["complete"]):
            await env.call("DELETE", f"instances/{key}", key.split("/")[0])
    r = await run_fault_experiment(env, n)
    print(_row(r) + f" ({r['launched']} launched, {r['failed']} failed with a JSON message,"
                    f" {r['fired']} faults fired)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10,
                        help="launches in flight at each kill point")
    parser.add_argument("--deletes", type=int, default=10,
                        help="deletes in flight at each kill point")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-launcher-recovery-"))

    def hub_config(*a: Any) -> str:
        return _hub_config(*a) + '\nc.JupyterHub.services[-1]["timeout"] = 300\n'

    with mock.patch("tests.fixtures.launcher.HubProcess",
                    functools.partial(HubProcess, start_timeout=300.0)), \
            mock.patch("tests.fixtures.launcher._hub_config", hub_config):
        env = start_launcher_env(workdir, EXTRA)
    env.launcher_dir = workdir  # type: ignore[attr-defined]
    try:
        asyncio.run(_run(env, args.launches, args.deletes))
    finally:
        stop_launcher_env(env)


if __name__ == "__main__":
    main()
