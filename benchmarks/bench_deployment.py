"""The demo and the Helm-values hub config: how long the pack takes to come up and go away.

Baseline, measured in the same run: a plain JupyterHub (+ proxy) with the dummy
authenticator and no services, started and stopped by the same HubProcess. Then the demo
(`kdash_hub.demo.Demo`): each part's start time, the hub's start as a ratio of the plain
hub's, a first LDAP login + spawn + notebook answering through the proxy, and the stop.
Also the `custom.kdash` loader (kdash_hub.z2jh) on values.yaml and every example overlay.

    python -m benchmarks.bench_deployment [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from traitlets.config import Config

from kdash_hub import z2jh
from kdash_hub.demo import Demo
from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ports import free_port
from tests.fixtures.helm import EXAMPLES, pack_values

PLAIN = """
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "x"
"""


async def plain_hub(workdir: Path) -> tuple[float, float]:
    hub = HubProcess(PLAIN, workdir)
    t = time.perf_counter()
    await hub.start()
    started = time.perf_counter() - t
    t = time.perf_counter()
    await hub.stop()
    return started, time.perf_counter() - t


async def login_and_spawn(url: str) -> float:
    """alice (LDAP) logs in, spawns cpu-small, and her server answers through the proxy."""
    t = time.perf_counter()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(f"{url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with s.post(f"{url}/hub/login?next=", allow_redirects=False, data={
                "username": "alice", "password": "alice-pw", "_xsrf": xsrf}) as r:
            assert r.status == 302, r.status
        async with s.get(f"{url}/hub/spawn") as r:
            xsrf = re.search(r'xsrf_token: "([^"]+)"', await r.text()).group(1)
        async with s.post(f"{url}/hub/spawn/alice",
                          data={"profile": "cpu-small", "_xsrf": xsrf}) as r:
            assert r.status == 200, r.status
        while True:
            async with s.get(f"{url}/user/alice/files/x"):
                pass
            async with s.get(f"{url}/user/alice/api/status") as r:
                if r.status == 200:
                    return time.perf_counter() - t
            if time.perf_counter() - t > 120:
                raise TimeoutError("alice's server did not answer in 120 s")
            await asyncio.sleep(0.2)


async def demo_run(workdir: Path) -> dict[str, float]:
    demo = Demo(port=free_port(), workdir=workdir, log=lambda m: None)
    demo.workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    try:
        for part in ("cluster", "ldap", "oidc", "hub"):
            t = time.perf_counter()
            await getattr(demo, f"_start_{part}")()
            times[part] = time.perf_counter() - t
        times["login+spawn"] = await login_and_spawn(demo.url)
    finally:
        t = time.perf_counter()
        await demo.stop()
        times["stop"] = time.perf_counter() - t
    return times


def loader_ms(rounds: int) -> tuple[float, int]:
    """Median ms of apply_custom_config over values.yaml + each overlay; sections applied."""
    customs = [pack_values(*([o] if o else []))["custom"]["kdash"] for o in [None, *EXAMPLES]]
    samples, applied = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for custom in customs:
                c = Config()
                c.JupyterHub.services = [{"name": "kdash-launcher", "command": ["x"]},
                                         {"name": "kdash-culler", "command": ["x"]}]
                t = time.perf_counter()
                z2jh.apply_custom_config(c, custom, service_config_dir=Path(tmp))
                samples.append((time.perf_counter() - t) * 1000)
                applied += len(custom)
    return statistics.median(samples), applied // rounds


async def main(quick: bool) -> None:
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="kdash-bench-") as tmp:
        base = [await plain_hub(Path(tmp) / f"plain-{i}") for i in range(rounds)]
        runs = [await demo_run(Path(tmp) / f"demo-{i}") for i in range(rounds)]
    plain_start = statistics.median(b[0] for b in base)
    plain_stop = statistics.median(b[1] for b in base)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"rounds: {rounds} (medians)")
    print(f"plain hub (baseline): start {plain_start:.2f} s, stop {plain_stop:.2f} s")
    for part in ("cluster", "ldap", "oidc"):
        print(f"demo {part:8s} start {med[part]:.2f} s")
    print(f"demo hub      start {med['hub']:.2f} s = {med['hub'] / plain_start:.2f}x plain hub "
          "(KDashAuthenticator, KDashSpawner, launcher + culler services)")
    total = sum(med[p] for p in ("cluster", "ldap", "oidc", "hub"))
    print(f"demo total    start {total:.2f} s = {total / plain_start:.2f}x plain hub")
    print(f"first LDAP login + spawn + server answering: {med['login+spawn']:.2f} s")
    print(f"demo stop {med['stop']:.2f} s = {med['stop'] / plain_stop:.2f}x plain hub stop")
    ms, sections = loader_ms(5 if quick else 20)
    print(f"custom.kdash loader: {ms:.2f} ms median per values file "
          f"({len(EXAMPLES) + 1} files, {sections} sections each round)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    asyncio.run(main(parser.parse_args().quick))
