"""Figures: the launcher killed (-9) mid-launch at three points, and API faults during
launches; running / lost / half-made / orphan counts before and after, time to recover.

    .venv/bin/python -m benchmarks.bench_launcher_recovery [--launches 10]

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
from tests.fixtures.launcher import _hub_config, start_launcher_env, stop_launcher_env
from tests.integration.test_crash_launcher import (
    EXTRA,
    run_fault_experiment,
    run_kill_experiment,
)


def _row(r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    return (f"{r['experiment']:<32} n={r['n']:<3} before: running {b['running']:>2} half-made"
            f" {b['half_made']:>2} orphan {b['orphan']:>2} | after: running {a['running']:>2}"
            f" lost {a.get('lost', 0):>2} half-made {a['half_made']:>2} orphan"
            f" {a['orphan']:>2} | recovered in {r['recover_s']:.1f} s")


async def _run(env: Any, n: int) -> None:
    for point in ("record", "objects", "done"):
        r = await run_kill_experiment(env, point, n)
        print(_row(r) + f" (API JSON again after {r['api_back_s']:.1f} s)", flush=True)
        for key in r["mine"]:
            user, name = key.split("/")
            await env.call("DELETE", f"instances/{user}/{name}", user)
    r = await run_fault_experiment(env, n)
    print(_row(r) + f" ({r['launched']} launched, {r['failed']} failed with a JSON message,"
                    f" {r['fired']} faults fired)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=10)
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
        asyncio.run(_run(env, args.launches))
    finally:
        stop_launcher_env(env)


if __name__ == "__main__":
    main()
