"""KDashSpawner vs plain KubeSpawner: spawn time and Kubernetes API requests, same cluster.

Part 1 (in-process, one LocalCluster, both spawners in the same run, interleaved):
first spawn of a user (namespace bundle created) and a later spawn of the same user, as
time ratios against plain KubeSpawner (user namespaces + a dynamic PVC, the same pod) and
API requests per spawn. Requests are read from the emulator's request log and split into
what the spawner asked ("spawner"), the kubelet's own traffic, and long-lived watches.

Part 2 (a real hub + proxy, status kubelet): N users spawning at once through the REST
API, with KDashSpawner and with plain KubeSpawner: all reach `ready`, none lost, p50/p95.
Status-mode pods do not serve HTTP, so the hub's "is it up" check is pointed at one stub
HTTP server on 127.0.0.1 (a harness-only subclass overriding `_get_pod_url`).

    python -m benchmarks.bench_spawner [--quick] [--users N] [--hub-users N] [--no-hub]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner, clients

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ports import free_port
from kdash_hub.localcluster import LocalCluster
from kdash_hub.spawner import KDashSpawner
from kdash_hub.spawner.drift import DriftWatch
from tests.fixtures.spawner import build_spawner

POD = dict(cpu_limit=1, cpu_guarantee=0.1, mem_limit="1G", mem_guarantee="256M",
           storage_capacity="10Gi")
PLAIN = dict(POD, enable_user_namespaces=True, user_namespace_template="plain-{username}",
             storage_pvc_ensure=True,
             volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
             volume_mounts=[{"name": "home", "mountPath": "/home/jovyan"}])
KDASH = dict(POD, storage_preset="dynamic", dynamic_storage={"capacity": "10Gi"})
# nfs homes: a per-user PV of the user's directory, made by a Job in the hub namespace once
KDASH_NFS = dict(POD, storage_preset="nfs",
                 nfs_storage={"server": "10.0.0.5", "path": "/export/homes"})


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def classify(method: str, path_qs: str) -> str:
    """Who made a request: the kubelet, a long-lived watch, or the spawner."""
    path = path_qs.split("?", 1)[0]
    if "watch=" in path_qs:
        return "watch"
    if path.endswith("/binding") or path.endswith("/status") or path.startswith("/api/v1/nodes"):
        return "kubelet"
    if method == "POST" and path.endswith("/events"):
        return "kubelet"
    if method == "GET" and path == "/api/v1/pods":
        return "kubelet"
    return "spawner"


async def timed_spawn(spawner, api, seed: int) -> dict:
    # KubeSpawner waits for the pod with exponential_backoff, whose random jitter dominates a
    # spawn's time here: the same seed for both spawners makes their waits comparable
    random.seed(seed)
    start = len(api.request_log)
    t0 = time.perf_counter()
    await spawner.start()
    seconds = time.perf_counter() - t0
    log = list(api.request_log)[start:]
    kinds = [classify(m, p) for m, p, _ in log]
    return {"seconds": seconds, "total": len(log), "spawner": kinds.count("spawner"),
            "paths": [f"{m} {p.split('?')[0]}" for (m, p, _), k in zip(log, kinds, strict=True)
                      if k == "spawner"]}


async def part1(users: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-spawner-"))
    cluster = LocalCluster(nodes=2, kubeconfig_path=tmp / "kubeconfig", workdir=tmp / "nodes",
                           node_cpu="512", node_memory="2048Gi")
    await cluster.start()
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(cluster.kubeconfig_path)
    clients.load_config.cache_clear()
    api = cluster.api
    kinds = {"plain": (KubeSpawner, PLAIN), "kdash": (KDashSpawner, KDASH),
             "kdash-always": (KDashSpawner, dict(KDASH, bundle_drift_check="always")),
             "kdash-nfs": (KDashSpawner, KDASH_NFS)}
    results: dict[str, dict[str, list]] = {k: {"first": [], "later": []} for k in kinds}
    try:
        for label, (cls, traits) in kinds.items():  # warm up: reflectors, clients, watches
            s = build_spawner(cls, username=f"warm-{label}", **traits)
            await s.start()
            await s.stop()
        await asyncio.sleep(0.3)
        for i in range(users):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for label in order:
                cls, traits = kinds[label]
                s = build_spawner(cls, username=f"{label}-user-{i}", user_id=i + 10, **traits)
                results[label]["first"].append(await timed_spawn(s, api, 2 * i))
                await s.stop()
                await asyncio.sleep(0.05)
                s.clear_state()
                results[label]["later"].append(await timed_spawn(s, api, 2 * i + 1))
                await s.stop()
                await asyncio.sleep(0.05)
    finally:
        await DriftWatch.stop_all()
        await KubeSpawner._stop_all_reflectors()
        await cluster.stop()
    summary: dict[str, dict] = {}
    for label, phases in results.items():
        summary[label] = {}
        for phase, runs in phases.items():
            summary[label][phase] = {
                "median_s": statistics.median(r["seconds"] for r in runs),
                "spawner_requests": statistics.median(r["spawner"] for r in runs),
                "all_requests": statistics.median(r["total"] for r in runs),
                "example_paths": runs[-1]["paths"],
            }
    for phase in ("first", "later"):  # same user index, same jitter seed: a fair pair
        pairs = zip(results["kdash"][phase], results["plain"][phase], strict=True)
        ratios = [k["seconds"] / p["seconds"] for k, p in pairs]
        summary["kdash"][phase]["paired_ratio"] = statistics.median(ratios)
        summary["kdash"][phase]["median_extra_ms"] = 1000 * statistics.median(
            k["seconds"] - p["seconds"]
            for k, p in zip(results["kdash"][phase], results["plain"][phase], strict=True))
    return summary


HUB_EXTRA = '''
from kdash_hub.spawner import KDashSpawner
from kubespawner import KubeSpawner

STUB = "http://127.0.0.1:{stub_port}"


class BenchKDash(KDashSpawner):
    def _get_pod_url(self, pod):
        return STUB  # status-mode pods do not serve; the hub checks a stub instead


class BenchPlain(KubeSpawner):
    def _get_pod_url(self, pod):
        return STUB


c.JupyterHub.authenticator_class = "null"
c.JupyterHub.spawner_class = {spawner}
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0
c.JupyterHub.api_page_default_limit = 2000
c.JupyterHub.api_page_max_limit = 2000
c.JupyterHub.log_level = "WARN"
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 300
# KubeSpawner's 3 s default request timeout is not retried for the namespace create:
# with 200 spawns at once the hub's loop stalls longer than that and every plain spawn fails
c.KubeSpawner.k8s_api_request_timeout = 30
c.Spawner.cpu_limit = 1
c.Spawner.mem_limit = "1G"
c.KubeSpawner.enable_user_namespaces = True
c.BenchPlain.user_namespace_template = "plain-{{username}}"
c.KDashSpawner.quota = {{"pods": "5", "limits.cpu": "4", "limits.memory": "8Gi"}}
'''


async def stub_server(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def part2(users: int, spawner: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-spawner-hub-"))
    cluster = LocalCluster(nodes=4, kubeconfig_path=tmp / "kubeconfig", workdir=tmp / "nodes",
                           node_cpu="512", node_memory="2048Gi")
    cluster.start_in_thread()
    stub_port = free_port()
    stub = await stub_server(stub_port)
    config = HUB_EXTRA.format(stub_port=stub_port, spawner=spawner)
    env = {"KUBECONFIG": str(cluster.kubeconfig_path)}
    names = [f"u{i:04d}" for i in range(users)]
    started: dict[str, float] = {}
    ready: dict[str, float] = {}
    statuses: dict[int, int] = {}
    hub = None
    try:
        for attempt in range(3):  # a port picked as free can be taken before the hub binds it
            hub = HubProcess(config, tmp / f"hub-{attempt}", env=env, start_timeout=120)
            try:
                await hub.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, headers=hub.auth_headers()) as session:
            async with session.post(f"{hub.api_url}/users", json={"usernames": names}) as r:
                assert r.status == 201, await r.text()

            failed: set[str] = set()

            async def spawn(name: str) -> None:
                started[name] = time.perf_counter()
                async with session.post(f"{hub.api_url}/users/{name}/server", json={}) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status >= 400:
                        failed.add(name)

            # one warm-up user first (hub imports, reflectors), the same for both spawners
            async with session.post(f"{hub.api_url}/users/warmup", json={}) as r:
                assert r.status == 201, await r.text()
            async with session.post(f"{hub.api_url}/users/warmup/server", json={}) as r:
                assert r.status in (201, 202), await r.text()
            t0 = time.perf_counter()
            posted: set[str] = set()

            async def spawn_and_note(name: str) -> None:
                await spawn(name)
                posted.add(name)

            spawns = asyncio.gather(*(spawn_and_note(n) for n in names))
            deadline = t0 + 900
            while len(ready) + len(failed) < users and time.perf_counter() < deadline:
                await asyncio.sleep(0.25)
                async with session.get(f"{hub.api_url}/users?limit=2000") as r:
                    listing = json.loads(await r.text())
                now = time.perf_counter()
                for user in listing:
                    name = user["name"]
                    if name not in started or name in ready or name in failed:
                        continue
                    server = (user.get("servers") or {}).get("")
                    if server and server.get("ready"):
                        ready[name] = now
                    elif name in posted and not server:
                        failed.add(name)  # the spawn failed after the POST returned
            await spawns
            wall = time.perf_counter() - t0
        pods = cluster.run_in_thread(_running_pods(cluster), 30)
    finally:
        if hub is not None:
            await hub.stop()
        await stub.cleanup()
        cluster.stop_thread()
    latencies = [ready[n] - started[n] for n in ready]
    return {"users": users, "ready": len(ready), "lost": users - len(ready),
            "running_pods": pods, "post_statuses": statuses, "wall_s": wall,
            "p50_s": pct(latencies, 0.5) if latencies else None,
            "p95_s": pct(latencies, 0.95) if latencies else None}


async def _running_pods(cluster) -> int:
    pods = cluster.api.store.list("Pod")
    items = pods.get("items", pods) if isinstance(pods, dict) else pods
    return sum(1 for p in items if (p.get("status") or {}).get("phase") == "Running")


def report(p1: dict | None, p2: dict | None) -> None:
    if p1:
        plain, kdash = p1["plain"], p1["kdash"]
        print("== part 1: spawn time and API requests (median over users) ==")
        for label, phases in p1.items():
            for phase, f in phases.items():
                print(f"{label:13s} {phase:5s}  {f['median_s'] * 1000:7.1f} ms   "
                      f"spawner requests {f['spawner_requests']:5.1f}   "
                      f"all requests {f['all_requests']:5.1f}")
        for phase, target in (("first", 1.3), ("later", 1.05)):
            ratio = kdash[phase]["median_s"] / plain[phase]["median_s"]
            extra = kdash[phase]["spawner_requests"] - plain[phase]["spawner_requests"]
            print(f"kdash/plain {phase} spawn time ratio: {ratio:.3f} of medians, "
                  f"{kdash[phase]['paired_ratio']:.3f} median of paired runs "
                  f"({kdash[phase]['median_extra_ms']:+.1f} ms) (target <= {target}); "
                  f"extra spawner requests: {extra:+.1f}")
        print("kdash later-spawn requests:", kdash["later"]["example_paths"])
        print("plain later-spawn requests:", plain["later"]["example_paths"])
        print("kdash-always later-spawn requests:",
              len(p1["kdash-always"]["later"]["example_paths"]))
        if "kdash-nfs" in p1:
            nfs = p1["kdash-nfs"]
            extra = {ph: nfs[ph]["spawner_requests"] - plain[ph]["spawner_requests"]
                     for ph in ("first", "later")}
            print("kdash-nfs (home Job on first spawn) extra spawner requests vs plain: "
                  f"first {extra['first']:+.1f}, later {extra['later']:+.1f}")
            print("kdash-nfs later-spawn requests:", nfs["later"]["example_paths"])
    if p2:
        print("== part 2: users spawning at once through a real hub ==")
        for label, f in p2.items():
            print(f"{label:6s} users {f['users']}  ready {f['ready']}  lost {f['lost']}  "
                  f"running pods {f['running_pods']}  p50 {f['p50_s']:.2f} s  "
                  f"p95 {f['p95_s']:.2f} s  wall {f['wall_s']:.1f} s  POST {f['post_statuses']}")
        if "plain" in p2 and "kdash" in p2:
            print(f"kdash/plain p95 ratio: {p2['kdash']['p95_s'] / p2['plain']['p95_s']:.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 users in part 1, 20 in part 2")
    parser.add_argument("--users", type=int, default=None, help="users in part 1 (40)")
    parser.add_argument("--hub-users", type=int, default=None, help="users in part 2 (200)")
    parser.add_argument("--no-hub", action="store_true", help="skip part 2")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    users = args.users or (8 if args.quick else 40)
    hub_users = args.hub_users or (20 if args.quick else 200)
    p1 = await part1(users)
    p2 = None
    if not args.no_hub:
        p2 = {"plain": await part2(hub_users, "BenchPlain"),
              "kdash": await part2(hub_users, "BenchKDash")}
    report(p1, p2)
    if args.json:
        print(json.dumps({"part1": p1, "part2": p2}, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())
