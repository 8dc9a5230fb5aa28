"""KDashSpawner vs plain KubeSpawner: spawn time and Kubernetes API requests, same cluster.

Run on the API emulator (kdash_hub.localcluster; a `kdash-hub local-cluster` child
process, as an API server shares neither the hub's process nor its load's client:
`--emulator-in-process` puts it in the benchmark's own process, in part 1 in its event loop,
where its work queues behind the spawners', in part 2 in a thread), on a real
control plane (kube-apiserver,
controller-manager, scheduler and etcd built from their Go modules; our kubelet in status
mode; one per benchmark run, `kdash-hub local-cluster --control-plane real` in a child
process), or both (the default), and printed side by side.

Part 1 (one process, both spawners in the same run, interleaved in pairs): first spawn of a
user (namespace bundle created) and a later spawn of the same user, as time ratios against
plain KubeSpawner (user namespaces + a dynamic PVC, the same pod) with the absolute
milliseconds, and API requests per spawn. Requests are counted on the client side (every
request kubernetes_asyncio sends from this process: benchmarks/common_kube.py), the same
counter on both control planes, split into what the spawn asked and long-lived watches
(opened once per hub, reopened when they time out). Part 1 talks to the real control plane
with its admin kubeconfig (both spawners share KubeSpawner's process-wide client config).
`--variants plain,kdash,plain-quota` adds plain KubeSpawner whose namespace gets
KDashSpawner's default ResourceQuota and LimitRange before its later spawn: what a pod create
under those guardrails costs, whoever makes the pod.

Part 2 (a real hub + proxy, status kubelet): N users spawning at once through the REST
API, with KDashSpawner and with plain KubeSpawner: all reach `ready`, none lost, p50/p95 of
the time from each POST to the moment the proxy has the user's route (the hub marks the
server ready right after), read from the proxy's log lines (`RouteLog`: no request to the
hub, which a poll of its user list would load, more so the longer a run lasts); the hub is
asked only every FAILURE_POLL_SECONDS for spawns that failed after their POST returned.
Status-mode pods do not serve HTTP, so the hub's "is it up" check is pointed at one stub
HTTP server on 127.0.0.1 (a harness-only subclass overriding `_get_pod_url`). On the real
control plane each hub runs as a ServiceAccount, not as admin: KDashSpawner's hub as the
`hub` account with exactly the roles helm-values/rbac ships (its rights in user namespaces
come from the RoleBinding it makes there), plain KubeSpawner's as a `plain-hub` account with
the cluster-wide ClusterRole it needs for user namespaces. Both hubs' Kubernetes clients skip
aiohttp's per-request proxy and netrc lookups (kdash_hub.kube.without_environment_lookups, which
KDashSpawner applies to KubeSpawner's shared client), as part 1's one shared client does.

    python -m benchmarks.bench_spawner [--quick] [--control-plane emulator|real|both]
        [--users N] [--hub-users 20,200] [--hub-pairs N] [--no-hub | --hub-only] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import secrets
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner, clients

from benchmarks.common_kube import PlaneProcess, RequestCounter, ensure_namespace, rounds
from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ports import free_port
from kdash_hub.localcluster import LocalCluster
from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.spawner import KDashSpawner, bundle
from kdash_hub.spawner.bundle import BundleSpec
from kdash_hub.spawner.drift import DriftWatch
from tests.fixtures.cluster import reset_kubespawner
from tests.fixtures.realcp import HUB_NAMESPACE
from tests.fixtures.spawner import build_spawner

POD = dict(cpu_limit=1, cpu_guarantee=0.1, mem_limit="1G", mem_guarantee="256M",
           storage_capacity="10Gi")
PLAIN = dict(POD, enable_user_namespaces=True, user_namespace_template="plain-{username}",
             storage_pvc_ensure=True,
             volumes=[{"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
             volume_mounts=[{"name": "home", "mountPath": "/home/jovyan"}])
KDASH = dict(POD, storage_preset="dynamic", dynamic_storage={"capacity": "10Gi"},
             hub_namespace=HUB_NAMESPACE)
# nfs homes: a per-user PV of the user's directory, made by a Job in the hub namespace once
KDASH_NFS = dict(KDASH, storage_preset="nfs", pod_security_level="restricted",
                 nfs_storage={"server": "10.0.0.5", "path": "/export/homes"})
VARIANTS = {"plain": (KubeSpawner, PLAIN), "kdash": (KDashSpawner, KDASH),
            "kdash-always": (KDashSpawner, dict(KDASH, bundle_drift_check="always")),
            "kdash-nfs": (KDashSpawner, KDASH_NFS),
            # KDashSpawner ended by KubeSpawner's own wait for the pod (its looks at random
            # moments, seeded alike for every variant): what KDash adds, without what its
            # earlier look at the running pod saves
            "kdash-kubespawner-wait": (KDashSpawner, dict(KDASH, pod_running_check_seconds=0)),
            # plain KubeSpawner whose namespace gets KDashSpawner's default quota and limit
            # range (in force) before its later start: what those guardrails cost a pod create
            "plain-quota": (KubeSpawner, PLAIN)}
GUARDED = {"plain-quota"}
PLANES = ("emulator", "real")
TARGETS = {"first": 1.05, "later": 1.02, "hub_p95": 1.1}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def point_kubespawner_at(kubeconfig: Path) -> None:
    """KubeSpawner loads its client config once per process: make it read `kubeconfig`."""
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    clients.load_config.cache_clear()
    Configuration.set_default(None)


async def timed_spawn(spawner, counter: RequestCounter, seed: int) -> dict:
    # KubeSpawner waits for the pod with exponential_backoff, whose random jitter dominates a
    # spawn's time here: the same seed for both spawners makes their waits comparable
    random.seed(seed)
    mark = counter.mark()
    t0 = time.perf_counter()
    await spawner.start()
    seconds = time.perf_counter() - t0
    sent = counter.since(mark)
    asked = [r for r in sent if r.kind == "request"]
    # how long the spawn took to make its pod; the rest is the wait for it to run
    pod = max((r.end for r in asked if r.method == "POST" and r.path.endswith("/pods")),
              default=t0)
    return {"seconds": seconds, "pod_made_s": pod - t0, "requests": len(asked),
            "watches": len(sent) - len(asked),
            "paths": [str(r) for r in asked], "timeline": rounds(sent, t0)}


async def part1(plane: str, kubeconfig: Path | None, users: int, variants: list[str],
                tag: str) -> dict:
    """First and later spawns, one at a time, the variants interleaved per user."""
    counter = RequestCounter().install()
    cluster = None
    if plane == "emulator" and kubeconfig is None:  # --emulator-in-process
        tmp = Path(tempfile.mkdtemp(prefix="bench-spawner-"))
        cluster = LocalCluster(nodes=2, kubeconfig_path=tmp / "kubeconfig",
                               workdir=tmp / "nodes", node_cpu="512", node_memory="2048Gi")
        await cluster.start()
        kubeconfig = cluster.kubeconfig_path
    assert kubeconfig is not None
    await ensure_namespace(kubeconfig, HUB_NAMESPACE)  # where nfs homes' Job runs
    point_kubespawner_at(kubeconfig)
    kinds = {label: VARIANTS[label] for label in variants}
    results: dict[str, dict[str, list]] = {k: {"first": [], "later": []} for k in kinds}
    try:
        for label, (cls, traits) in kinds.items():  # warm up: reflectors, clients, watches
            s = build_spawner(cls, username=f"w{tag}-{label}", **traits)
            await s.start()
            await s.stop()
        await asyncio.sleep(0.3)
        for i in range(users):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for label in order:
                cls, traits = kinds[label]
                s = build_spawner(cls, username=f"{label}-{tag}-{i}", user_id=i + 10, **traits)
                results[label]["first"].append(await timed_spawn(s, counter, 2 * i))
                await s.stop()
                if label in GUARDED:
                    await guard_namespace(kubeconfig, s.namespace)
                await asyncio.sleep(0.05)
                s.clear_state()
                results[label]["later"].append(await timed_spawn(s, counter, 2 * i + 1))
                await s.stop()
                await asyncio.sleep(0.05)
    finally:
        await DriftWatch.stop_all()
        await reset_kubespawner()
        counter.uninstall()
        if cluster is not None:
            await cluster.stop()
    summary: dict[str, dict] = {}
    for label, phases in results.items():
        summary[label] = {}
        for phase, runs in phases.items():
            summary[label][phase] = {
                "median_ms": 1000 * statistics.median(r["seconds"] for r in runs),
                "pod_made_ms": 1000 * statistics.median(r["pod_made_s"] for r in runs),
                "requests": statistics.median(r["requests"] for r in runs),
                "watches": statistics.median(r["watches"] for r in runs),
                "example_paths": runs[-1]["paths"],
                "example_timeline": runs[-1]["timeline"],
            }
            if label == "plain":
                continue
            # same user index, same jitter seed, back to back: a fair pair
            pairs = list(zip(runs, results["plain"][phase], strict=True))
            summary[label][phase]["paired_ratio"] = statistics.median(
                k["seconds"] / p["seconds"] for k, p in pairs)
            summary[label][phase]["paired_extra_ms"] = 1000 * statistics.median(
                k["seconds"] - p["seconds"] for k, p in pairs)
            summary[label][phase]["pod_made_extra_ms"] = 1000 * statistics.median(
                k["pod_made_s"] - p["pod_made_s"] for k, p in pairs)
            summary[label][phase]["extra_requests"] = statistics.median(
                k["requests"] - p["requests"] for k, p in pairs)
    return summary


async def guard_namespace(kubeconfig: Path, namespace: str) -> None:
    """KDashSpawner's default ResourceQuota and LimitRange in `namespace`, the quota in
    force (its status filled in by the quota controller), as the admin."""
    traits = KDashSpawner.class_traits()
    spec = BundleSpec(username="bench", namespace=namespace, hub_namespace=HUB_NAMESPACE,
                      quota=traits["quota"].default(),
                      limit_range=traits["limit_range"].default())
    api = client_for(kubeconfig)
    try:
        for obj in (bundle.resource_quota(spec), bundle.limit_range(spec)):
            plural = {"ResourceQuota": "resourcequotas", "LimitRange": "limitranges"}[obj["kind"]]
            await api.request("POST", f"/api/v1/namespaces/{namespace}/{plural}", body=obj)
        for _ in range(600):
            quota = await api.request(
                "GET", f"/api/v1/namespaces/{namespace}/resourcequotas/{bundle.QUOTA_NAME}")
            if bundle.quota_enforced(quota):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the quota in {namespace} was not in force after 30 s")
    finally:
        await api.close()


HUB_EXTRA = '''
import os

if os.environ.get("KDASH_BENCH_PROFILE"):  # --profile-hub: where the hub's CPU goes
    import atexit
    import cProfile
    import time
    _profile = cProfile.Profile(time.process_time)
    _profile.enable()
    atexit.register(lambda: _profile.dump_stats(os.environ["KDASH_BENCH_PROFILE"]))

from kdash_hub.kube import without_environment_lookups
from kdash_hub.spawner import KDashSpawner
from kubespawner import KubeSpawner

STUB = "http://127.0.0.1:{stub_port}"


class BenchKDash(KDashSpawner):
    def _get_pod_url(self, pod):
        return STUB  # status-mode pods do not serve; the hub checks a stub instead


class BenchPlain(KubeSpawner):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the same HTTP client settings as KDashSpawner's (part 1's spawners share one
        # client): the comparison is of the spawners, not of aiohttp's environment lookups
        without_environment_lookups(self.api.api_client)

    def _get_pod_url(self, pod):
        return STUB


c.JupyterHub.authenticator_class = "null"
c.JupyterHub.spawner_class = {spawner}
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0
c.JupyterHub.api_page_default_limit = 2000
c.JupyterHub.api_page_max_limit = 2000
c.JupyterHub.log_level = os.environ.get("KDASH_BENCH_HUB_LOG_LEVEL", "WARN")
# the pods are left to the control plane (stopping hundreds of servers is not measured)
c.JupyterHub.cleanup_servers = False
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 300
# KubeSpawner's 3 s default request timeout is not retried for the namespace create:
# with 200 spawns at once the hub's loop stalls longer than that and every plain spawn fails
c.KubeSpawner.k8s_api_request_timeout = 30
c.Spawner.cpu_limit = 1
c.Spawner.mem_limit = "1G"
c.KubeSpawner.enable_user_namespaces = True
c.BenchPlain.user_namespace_template = "plain-{{username}}"
# the same home as KDashSpawner's default `dynamic` preset: a claim in the user's namespace
c.BenchPlain.storage_pvc_ensure = True
c.BenchPlain.storage_capacity = "10Gi"
c.BenchPlain.volumes = [
    {{"name": "home", "persistentVolumeClaim": {{"claimName": "{{pvc_name}}"}}}}]
c.BenchPlain.volume_mounts = [{{"name": "home", "mountPath": "/home/jovyan"}}]
c.KDashSpawner.dynamic_storage = {{"capacity": "10Gi"}}
c.KDashSpawner.hub_namespace = "{hub_namespace}"
c.KDashSpawner.quota = {{"pods": "5", "limits.cpu": "4", "limits.memory": "8Gi"}}
'''
HUB_SPAWNERS = {"plain": "BenchPlain", "kdash": "BenchKDash"}


async def stub_server(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def part2(plane: str, users: int, label: str, tag: str,
                real: PlaneProcess | None = None, admin: bool = False,
                profile_dir: Path | None = None, log_level: str = "",
                emulator_in_process: bool = False, pod_phases: bool = False) -> dict:
    # names differ per run: on the real control plane every run shares one cluster
    prefix = f"{label[0]}{users}{tag}-"
    cluster = emulator = None
    if plane == "emulator":
        tmp = Path(tempfile.mkdtemp(prefix="bench-spawner-hub-"))
        if emulator_in_process:
            cluster = LocalCluster(nodes=4, kubeconfig_path=tmp / "kubeconfig",
                                   workdir=tmp / "nodes", node_cpu="512",
                                   node_memory="2048Gi")
            cluster.start_in_thread()
            kubeconfig = cluster.kubeconfig_path
        else:  # a process of its own, as part 1's (and a real API server)
            emulator = PlaneProcess(workdir=tmp / "emulator", control_plane="emulator")
            await asyncio.to_thread(emulator.start)
            kubeconfig = emulator.admin_kubeconfig
        identity = "admin (the emulator has no RBAC)"
    else:
        assert real is not None and real.admin_kubeconfig is not None
        tmp = Path(tempfile.mkdtemp(prefix="bench-spawner-hub-", dir=real.workdir))
        account = {"kdash": "hub", "plain": "plain-hub"}[label]
        if admin:
            kubeconfig, identity = real.admin_kubeconfig, "admin"
        else:
            kubeconfig = real.identities[account]
            identity = f"ServiceAccount {HUB_NAMESPACE}/{account}"
    stub_port = free_port()
    stub = await stub_server(stub_port)
    config = HUB_EXTRA.format(stub_port=stub_port, spawner=HUB_SPAWNERS[label],
                              hub_namespace=HUB_NAMESPACE)
    env = {"KUBECONFIG": str(kubeconfig)}
    if log_level:
        env["KDASH_BENCH_HUB_LOG_LEVEL"] = log_level
    if profile_dir is not None:  # made by main()
        env["KDASH_BENCH_PROFILE"] = str(profile_dir / f"hub-{plane}-{label}-{users}.prof")
    names = [f"{prefix}{i:04d}" for i in range(users)]
    started: dict[str, float] = {}
    ready: dict[str, float] = {}
    statuses: dict[int, int] = {}
    failed: set[str] = set()
    posted: set[str] = set()
    hub = None
    timeline: PodTimeline | None = None
    wall = hub_cpu = api_cpu = 0.0
    try:
        for attempt in range(3):  # a port picked as free can be taken before the hub binds it
            hub = HubProcess(config, tmp / f"hub-{attempt}", env=env, start_timeout=120)
            try:
                await hub.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        token = await _issued_admin_token(hub)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn,
                                         headers=hub.auth_headers(token)) as session:
            warm = f"{prefix}warm"
            async with session.post(f"{hub.api_url}/users",
                                    json={"usernames": [*names, warm]}) as r:
                assert r.status == 201, await r.text()

            async def spawn(name: str) -> None:
                started[name] = time.time()  # the proxy's log stamps are wall-clock
                async with session.post(f"{hub.api_url}/users/{name}/server", json={}) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status >= 400:
                        failed.add(name)
                posted.add(name)

            # one warm-up user first (hub imports, reflectors, watches), alike for both
            async with session.post(f"{hub.api_url}/users/{warm}/server", json={}) as r:
                assert r.status in (201, 202), await r.text()
            async with asyncio.timeout(300):
                await _wait_ready(session, hub.api_url, warm)
            routes = RouteLog(hub.log_path)
            routes.added()  # the warm-up user's and the hub's own, before t0
            cpu0 = _cpu_seconds(hub.process.pid)
            # the emulator's own process (API server, controllers, kubelet): what the same
            # spawns cost the control plane
            api0 = _cpu_seconds(emulator.proc.pid) if emulator is not None else 0.0
            if pod_phases:
                timeline = PodTimeline(
                    kubeconfig if plane == "emulator" else real.admin_kubeconfig, prefix)
                await timeline.start()
            t0 = time.perf_counter()
            spawns = asyncio.gather(*(spawn(n) for n in names))
            deadline = t0 + 900
            last_check = 0.0
            while len(ready) + len(failed) < users and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
                for name, stamp in routes.added().items():
                    if name in started and name not in failed:
                        ready.setdefault(name, stamp)
                if time.perf_counter() - last_check < FAILURE_POLL_SECONDS:
                    continue
                last_check = time.perf_counter()
                try:  # a spawn that failed after its POST returned: no server any more
                    async with session.get(f"{hub.api_url}/users?state=inactive&limit=2000"
                                           ) as r:
                        listing = json.loads(await r.text())
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    # a kept-alive connection the busy hub closed as this poll reused it:
                    # the next poll asks again (a spawn's own POST is never retried)
                    continue
                for user in listing:
                    name = user["name"]
                    if name in posted and name not in ready:
                        failed.add(name)
            await spawns
            wall = time.perf_counter() - t0
            if timeline is not None:
                await timeline.stop()
            hub_cpu = _cpu_seconds(hub.process.pid) - cpu0
            if emulator is not None:
                api_cpu = _cpu_seconds(emulator.proc.pid) - api0
        pods = await _running_pods(
            kubeconfig if plane == "emulator" else real.admin_kubeconfig, prefix)
    finally:
        if hub is not None:
            if failed:
                print(f"[{plane} {label} {users}] hub log tail (the proxy's lines left out):\n"
                      f"{hub.log_tail(30, hub_only=True)}")
            await hub.stop()
        await stub.cleanup()
        if cluster is not None:
            cluster.stop_thread()
        if emulator is not None:
            await asyncio.to_thread(emulator.stop)
    latencies = [ready[n] - started[n] for n in ready]
    # a spawn that never became ready took for ever: with more than 5 % lost, p95 is
    # unbounded (inf); the survivors' p95 is kept beside it
    every = latencies + [math.inf] * (users - len(ready))
    return {"users": users, "ready": len(ready), "lost": users - len(ready),
            "running_pods": pods, "post_statuses": statuses, "wall_s": wall,
            "identity": identity, "hub_cpu_s": hub_cpu, "api_cpu_s": api_cpu,
            "p50_s": pct(every, 0.5), "p95_s": pct(every, 0.95),
            "p95_ready_s": pct(latencies, 0.95) if latencies else None,
            "pod_phases": timeline.summary(started, ready) if timeline is not None else None}


# how often part 2 asks the hub for spawns that failed after their POST returned (readiness
# itself comes from the proxy's log, which costs the hub nothing)
FAILURE_POLL_SECONDS = 2.0
ROUTE_ADDED = re.compile(r"^(\S+Z) \[ConfigProxy\].*Route added /user/([^/\s]+) -> ")


class PodTimeline:
    """`--pod-phases`: when each user's pod was made, bound to a node and Running, as seen
    by a watch of all pods from the benchmark (one more watcher for both spawners alike),
    and why pods waited for a node (PodScheduled=False messages, numbers blanked). With the
    POST's time and the route's, it tells where a start's time goes."""

    def __init__(self, kubeconfig: Path, prefix: str):
        self.kubeconfig, self.prefix = kubeconfig, prefix
        self.seen: dict[str, dict[str, float]] = {}  # user -> phase -> wall-clock time
        self.unschedulable: dict[str, int] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        api = client_for(self.kubeconfig)
        listing = await api.request("GET", "/api/v1/pods")
        self._task = asyncio.create_task(
            self._watch(api, listing["metadata"]["resourceVersion"]))

    async def _watch(self, api, version: str) -> None:
        try:
            async for event in api.watch("/api/v1/pods", {"resourceVersion": version}):
                self._observe(event.get("object") or {}, time.time())
        finally:
            await api.close()

    def _observe(self, pod: dict, now: float) -> None:
        name = (pod.get("metadata") or {}).get("name", "")
        if self.prefix not in name:
            return
        phases = self.seen.setdefault(name[name.index(self.prefix):], {})
        phases.setdefault("made", now)
        if (pod.get("spec") or {}).get("nodeName"):
            phases.setdefault("bound", now)
        status = pod.get("status") or {}
        if status.get("phase") == "Running":
            phases.setdefault("running", now)
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = re.sub(r"\d+", "N", cond.get("message", ""))
                self.unschedulable[why] = self.unschedulable.get(why, 0) + 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def summary(self, started: dict[str, float], ready: dict[str, float]) -> str:
        parts = []
        for before, after in (("POST", "made"), ("made", "bound"), ("bound", "running"),
                              ("running", "ready")):
            gaps = []
            for user, phases in self.seen.items():
                start = started.get(user) if before == "POST" else phases.get(before)
                end = ready.get(user) if after == "ready" else phases.get(after)
                if start is not None and end is not None:
                    gaps.append(end - start)
            parts.append(f"{before}->{after} " + (
                f"p50 {pct(gaps, 0.5):.2f} p95 {pct(gaps, 0.95):.2f} s" if gaps else "-"))
        waits = "; ".join(f"{count}x {why}" for why, count in
                          sorted(self.unschedulable.items(), key=lambda kv: -kv[1]))
        return ", ".join(parts) + (f"; waited for a node: {waits}" if waits else "")


class RouteLog:
    """When the proxy added each user's route, read from the hub's log (configurable-http-
    proxy logs it, with a millisecond wall-clock stamp, at every log level of the hub).

    The hub marks a server ready once that route is in place, right after the spawn and its
    HTTP check: so this is the time a user's URL starts to work, measured to the
    millisecond, with no request to the hub (polling its user list, which costs it O(users)
    of CPU per poll, loaded the slower hub more and made its own result worse)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def added(self) -> dict[str, float]:
        """Routes added since the last call: user name -> wall-clock time (s)."""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += end
        found: dict[str, float] = {}
        for line in chunk[:end].decode(errors="replace").splitlines():
            match = ROUTE_ADDED.match(line)
            if match:
                stamp = datetime.fromisoformat(match.group(1)).timestamp()
                found.setdefault(unquote(match.group(2)), stamp)
        return found


BENCH_ADMIN = "bench-admin"


async def _issued_admin_token(hub: HubProcess) -> str:
    """An admin user's token issued by the hub, for part 2's requests. The hub checks a
    token it issued with one hash round; the configured service token HubProcess starts
    with is hashed with 16384 rounds on every request (JupyterHub cannot trust its
    entropy), ~11 ms of the hub's one core per spawn's POST, alike for both spawners: it
    would hide part of what the spawners themselves cost the hub."""
    async with aiohttp.ClientSession(headers=hub.auth_headers()) as setup:
        async with setup.post(f"{hub.api_url}/users/{BENCH_ADMIN}",
                              json={"admin": True}) as r:
            assert r.status in (201, 409), await r.text()
        async with setup.post(f"{hub.api_url}/users/{BENCH_ADMIN}/tokens",
                              json={"note": "bench_spawner part 2"}) as r:
            assert r.status == 201, await r.text()
            return (await r.json())["token"]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process so far (a hub, the emulator)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_ready(session: aiohttp.ClientSession, api_url: str, name: str) -> None:
    while True:
        async with session.get(f"{api_url}/users/{name}") as r:
            server = ((await r.json()).get("servers") or {}).get("")
        if server and server.get("ready"):
            return
        await asyncio.sleep(0.2)


async def _running_pods(admin_kubeconfig: Path, prefix: str) -> int:
    api = client_for(admin_kubeconfig)
    try:
        pods = await api.request("GET", "/api/v1/pods",
                                 params={"fieldSelector": "status.phase=Running"})
    finally:
        await api.close()
    return sum(1 for p in pods.get("items") or []
               if p["metadata"]["name"].startswith(f"jupyter-{prefix}"))


# --- report ------------------------------------------------------------------------------


def _cell(text: str, width: int = 46) -> str:
    return f"{text:<{width - 1}s} "  # a longer text still ends with a space


def report(figures: dict) -> None:
    planes = [p for p in PLANES if p in figures]
    header = "".join(_cell(p) for p in planes)
    if any("part1" in figures[p] for p in planes):
        print("== part 1: one spawn at a time, KDashSpawner vs plain KubeSpawner (medians over "
              "users; ratio = median of paired runs; pod = ms until the pod was made) ==")
        width = max(24, *(len(lb) + 9 for lb in VARIANTS))  # "later <label> " fits
        print(f"{'':{width}s}{header}")
        labels = [lb for lb in VARIANTS if any(lb in figures[p].get("part1", {})
                                                for p in planes)]
        for phase in ("first", "later"):
            for label in labels:
                cells = []
                for p in planes:
                    f = figures[p].get("part1", {}).get(label, {}).get(phase)
                    cells.append(_cell("-" if f is None else
                                       f"{f['median_ms']:6.1f} ms (pod {f['pod_made_ms']:5.1f})"
                                       f" {f['requests']:4.1f} req {f['watches']:3.1f} w"))
                print(f"{phase + ' ' + label:{width}s}{''.join(cells)}")
            for label in labels[1:]:
                cells = []
                for p in planes:
                    f = figures[p].get("part1", {}).get(label, {}).get(phase)
                    cells.append(_cell("-" if f is None else
                                       f"{f['paired_ratio']:.3f}x ({f['paired_extra_ms']:+.1f} ms"
                                       f" [pod {f['pod_made_extra_ms']:+.1f}],"
                                       f" {f['extra_requests']:+.0f} req)"))
                print(f"{'  ' + label + '/plain':{width}s}{''.join(cells)}"
                      + (f"target <= {TARGETS[phase]}x" if label == "kdash" else ""))
        for p in planes:
            part1 = figures[p].get("part1")
            if not part1:
                continue
            for phase in ("first", "later"):
                for label in ("plain", "kdash"):
                    if label in part1:
                        print(f"[{p}] {label} {phase}-spawn requests (last user):")
                        for line in part1[label][phase]["example_timeline"]:
                            print(f"    {line}")
    hub_users = sorted({n for p in planes for n in figures[p].get("part2", {})})
    if hub_users:
        print("== part 2: N users spawning at once through a real hub (time to ready; "
              "medians over pairs, ratio per pair [each pair]) ==")
        print(f"{'':24s}{header}")
        for n in hub_users:
            for label in ("plain", "kdash"):
                cells = []
                for p in planes:
                    runs = [pair[label] for pair in figures[p].get("part2", {}).get(n, [])]
                    cells.append(_cell("-" if not runs else
                                       f"ready {sum(f['ready'] for f in runs)}/"
                                       f"{sum(f['users'] for f in runs)} p50 "
                                       f"{_seconds(statistics.median(f['p50_s'] for f in runs))}"
                                       f" p95 "
                                       f"{_seconds(statistics.median(f['p95_s'] for f in runs))}"))
                print(f"{f'{n} users {label}':24s}{''.join(cells)}")
            cells = []
            for p in planes:
                pairs = figures[p].get("part2", {}).get(n, [])
                cells.append(_cell(_p95_ratio(pairs)))
            print(f"{f'  {n} kdash/plain':24s}{''.join(cells)}target <= {TARGETS['hub_p95']}x")
        for p in planes:
            for n, pairs in figures[p].get("part2", {}).items():
                for i, pair in enumerate(pairs):
                    for label, f in pair.items():
                        print(f"[{p}] {n} users pair {i + 1} {label}: identity {f['identity']}, "
                              f"running pods {f['running_pods']}, lost {f['lost']}, "
                              f"wall {f['wall_s']:.1f} s, hub CPU "
                              f"{1000 * f['hub_cpu_s'] / f['users']:.0f} ms per spawn, "
                              + (f"emulator CPU {1000 * f['api_cpu_s'] / f['users']:.0f} ms "
                                 "per spawn, " if f.get("api_cpu_s") else "")
                              + f"POST {f['post_statuses']}"
                              + (f"; {f['pod_phases']}" if f.get("pod_phases") else ""))


def _seconds(value: float) -> str:
    return "unbounded (spawns lost)" if math.isinf(value) else f"{value:.2f} s"


def _p95_ratio(pairs: list[dict]) -> str:
    """KDashSpawner's p95 over plain KubeSpawner's, median over pairs, each pair's in
    brackets. A p95 is unbounded when more than 5 % of the spawns never became ready: a
    finite one beats it (ratio 0), and the survivors' ratio is shown beside; when only some
    pairs have one, the median over the pairs where both finished is shown too."""
    if not pairs:
        return "-"
    ratios, extra = [], []
    for pair in pairs:
        kdash, plain = pair["kdash"]["p95_s"], pair["plain"]["p95_s"]
        ratios.append(0.0 if math.isinf(plain) and not math.isinf(kdash) else
                      math.inf if math.isinf(kdash) else kdash / plain)
        extra.append(kdash - plain)
    median = statistics.median(ratios)
    each = f" [{' '.join(f'{r:.2f}' for r in ratios)}]" if len(ratios) > 1 else ""
    if 0 < median < math.inf:
        text = f"p95 {median:.2f}x ({1000 * statistics.median(extra):+.0f} ms){each}"
        both = [r for r in ratios if 0 < r < math.inf]
        if len(both) < len(ratios):  # a pair with a lost spawner's 0 (or inf) in the median
            text += f"; {statistics.median(both):.2f}x over the {len(both)} where both finished"
        return text
    survivors = [pair["kdash"]["p95_ready_s"] / pair["plain"]["p95_ready_s"]
                 for pair in pairs
                 if pair["kdash"]["p95_ready_s"] and pair["plain"]["p95_ready_s"]]
    who = "plain" if median == 0 else "kdash"
    lost = ", ".join(str(pair[who]["lost"]) for pair in pairs)
    return (f"{who} p95 unbounded (lost {lost} of {pairs[0][who]['users']}); "
            f"ready ones' p95 {statistics.median(survivors):.2f}x" if survivors else
            f"{who} p95 unbounded (lost {lost})")


# --- main --------------------------------------------------------------------------------


def _users_list(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


async def run_plane(plane: str, args: argparse.Namespace, real: PlaneProcess | None,
                    users: int, hub_users: list[int]) -> dict:
    # user names of this run only: on a reused real control plane, and in this process's
    # memory of namespaces it has seen, a first spawn stays a first spawn
    tag = secrets.token_hex(2)
    out: dict = {}
    kubeconfig = real.admin_kubeconfig if real is not None else None
    variants = args.variants or list(VARIANTS)
    if not args.hub_only:
        out["part1"] = await part1(plane, kubeconfig, users, variants, tag)
    if not args.no_hub:
        out["part2"] = {}
        turn = 0
        for n in hub_users:
            out["part2"][n] = []
            for r in range(args.hub_pairs):
                # a pair of runs back to back, the order alternating
                order = ["plain", "kdash"] if turn % 2 == 0 else ["kdash", "plain"]
                turn += 1
                pair = {}
                for label in order:
                    pair[label] = await part2(plane, n, label, f"{tag}r{r}", real,
                                              admin=args.hub_admin,
                                              profile_dir=args.profile_hub,
                                              log_level=args.hub_log_level,
                                              emulator_in_process=args.emulator_in_process,
                                              pod_phases=args.pod_phases)
                out["part2"][n].append(pair)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="6 users in part 1, 20 in part 2")
    parser.add_argument("--control-plane", choices=("emulator", "real", "both"), default="both",
                        help="which control plane(s) to measure on (default both)")
    parser.add_argument("--users", type=int, default=None, help="users in part 1 (30)")
    parser.add_argument("--hub-users", type=_users_list, default=None,
                        help="users spawning at once in part 2, comma-separated (20,200)")
    parser.add_argument("--no-hub", action="store_true", help="skip part 2")
    parser.add_argument("--hub-pairs", type=int, default=1,
                        help="part-2 runs per size and spawner (pairs, order alternating); "
                             "the ratio is the median over pairs")
    parser.add_argument("--hub-only", action="store_true", help="skip part 1")
    parser.add_argument("--variants", type=lambda t: t.split(","), default=None,
                        help=f"part 1 spawners (default {','.join(VARIANTS)}; plain first)")
    parser.add_argument("--hub-admin", action="store_true",
                        help="part 2 on the real control plane as admin, not ServiceAccounts")
    parser.add_argument("--real-kubeconfig", type=Path, default=None,
                        help="use this running real control plane (admin kubeconfig) instead "
                             "of starting one")
    parser.add_argument("--profile-hub", type=Path, default=None,
                        help="write a cProfile of each part-2 hub to this directory")
    parser.add_argument("--hub-log-level", default="",
                        help="log level of the part-2 hubs (WARN; their logs stay in the "
                             "temporary directory)")
    parser.add_argument("--emulator-in-process", action="store_true",
                        help="the emulator in the benchmark's own process (part 1: in its "
                             "event loop, sharing one core with the spawners; part 2: in a "
                             "thread, beside the load's client); by default it runs in a "
                             "process of its own, as a real API server")
    parser.add_argument("--pod-phases", action="store_true",
                        help="part 2: watch the pods too and print, per run, where a start's "
                             "time goes (POST -> pod made -> bound -> Running -> route) and "
                             "why pods waited for a node")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    users = args.users or (6 if args.quick else 30)
    hub_users = args.hub_users or ([20] if args.quick else [20, 200])
    planes = PLANES if args.control_plane == "both" else (args.control_plane,)
    if args.profile_hub:
        args.profile_hub.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    if "emulator" in planes:
        emulator = None
        if not args.emulator_in_process and not args.hub_only:
            emulator = PlaneProcess(workdir=Path(tempfile.mkdtemp(prefix="bench-spawner-emu-")),
                                    control_plane="emulator", nodes=2)
            emulator.start()
        print("part 1 on the emulator "
              + ("in this process" if emulator is None else "in a process of its own"))
        try:
            figures["emulator"] = asyncio.run(run_plane("emulator", args, emulator, users,
                                                        hub_users))
        finally:
            if emulator is not None:
                emulator.stop()
    if "real" in planes:
        workdir = Path(tempfile.mkdtemp(prefix="bench-spawner-real-"))
        # part 2 leaves its pods running (each run's users are new) and a node takes 110:
        # enough nodes that the last run's pods are not left Pending by the first runs'
        kept = 0 if args.no_hub else sum(2 * args.hub_pairs * (n + 1) for n in hub_users)
        real = PlaneProcess(workdir=workdir, nodes=max(6, 2 + kept // 100))
        if args.real_kubeconfig:
            real.admin_kubeconfig = args.real_kubeconfig
        else:
            t0 = time.perf_counter()
            real.start()
            print(f"real control plane up in {time.perf_counter() - t0:.0f} s ({workdir})")
        try:
            asyncio.run(real.install_identities())
            figures["real"] = asyncio.run(run_plane("real", args, real, users, hub_users))
        finally:
            real.stop()
    report(figures)
    if args.json:
        print(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
