"""Benchmark of the launcher on the emulated API server (no kubelet: the counters then
count only the launcher's requests).

1. Launch of each shipped template: time and API requests, against a baseline of creating
   the same rendered objects with bare `KubeResources.create` calls (the least any launcher
   could do). Target: one create per object, nothing more (+1 for the instance record).
2. Listing with N instances across U users (default 1,000 / 100): one user's list and an
   admin's list of everyone's, against a baseline of the single list request of the
   records.

    python -m benchmarks.bench_launcher [--quick] [--instances N] [--users U]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config

from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.apiserver import APIServer
from kdash_hub.localcluster.kubeconfig import write_kubeconfig
from kdash_hub.services.launcher import lifecycle
from kdash_hub.services.launcher.instances import Actor, InstanceManager
from kdash_hub.services.launcher.settings import CATALOG_DIR, LauncherSettings
from kdash_hub.templating import load_directories

TEMPLATES = ("postgresql", "minio", "tensorboard", "redis", "filebrowser")
POPULATION = ("postgresql", "minio", "tensorboard", "redis-free", "filebrowser")


def spent(server: APIServer, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in server.request_count.items()
            if v - before.get(k, 0)}


async def timed(coro_factory, repeat: int) -> float:
    """Median seconds of `repeat` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await coro_factory()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def bench_launch(server: APIServer, kube: KubeResources, manager: InstanceManager,
                       repeat: int) -> None:
    print(f"\n== launch of each shipped template (median of {repeat}) ==")
    print(f"{'template':<12} {'objects':>7} {'launch ms':>10} {'baseline ms':>12} {'ratio':>6} "
          f" requests (launch)")
    await kube.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "kdash-bench"}})
    await kube.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "kdash-baseline"}})
    actor = Actor("bench")
    counter = 0
    for template_id in TEMPLATES:
        template = manager.catalog.get(template_id)
        launch_times, base_times, requests = [], [], {}
        for _ in range(repeat):
            counter += 1
            name = f"{template_id[:20]}-{counter}"
            before = dict(server.request_count)
            start = time.perf_counter()
            await manager.launch(actor, template_id, name=name)
            launch_times.append(time.perf_counter() - start)
            requests = spent(server, before)
            await manager.delete(actor, "bench", name)  # singletons: make room again
            # baseline: the same objects, created with nothing around them
            objects, _ = manager.render(template, "baseline", name, None)
            start = time.perf_counter()
            for obj in objects:
                await kube.create(obj)
            base_times.append(time.perf_counter() - start)
        launch, base = statistics.median(launch_times), statistics.median(base_times)
        print(f"{template_id:<12} {len(template.manifests):>7} {launch * 1000:>10.1f} "
              f"{base * 1000:>12.1f} {launch / base:>6.2f}  {requests}")
        creates = requests.get("create", 0)
        assert creates == len(template.manifests) + 1, (template_id, requests)
    print("creates per launch = objects + 1 (the record); other requests: 1 list (the user's"
          " records: names, singleton, limit) + 1 get (the namespace)")


async def populate(manager: InstanceManager, instances: int, users: int) -> float:
    start = time.perf_counter()
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            user = f"user{i % users:03d}"
            await manager.launch(Actor(user), POPULATION[i % len(POPULATION)],
                                 name=f"svc-{i // users}")

    await asyncio.gather(*(one(i) for i in range(instances)))
    return time.perf_counter() - start


async def bench_list(server: APIServer, kube: KubeResources, manager: InstanceManager,
                     instances: int, users: int, repeat: int) -> None:
    print(f"\n== listing with {instances} instances across {users} users ==")
    took = await populate(manager, instances, users)
    print(f"populated in {took:.1f}s ({instances / took:.0f} launches/s)")
    user, admin = Actor("user007"), Actor("root", admin=True)
    baseline = await timed(lambda: lifecycle.list_records(kube), repeat)
    user_baseline = await timed(
        lambda: lifecycle.list_records(kube, "user007", "kdash-user007"), repeat)
    before = dict(server.request_count)
    mine = await manager.list(user)
    user_requests = spent(server, before)
    before = dict(server.request_count)
    everyone = await manager.list(admin, everyone=True)
    admin_requests = spent(server, before)
    assert len(mine) == instances // users and len(everyone) == instances
    assert all(i["owner"] == "user007" for i in mine)
    user_time = await timed(lambda: manager.list(user), repeat)
    admin_time = await timed(lambda: manager.list(admin, everyone=True), repeat)
    print(f"{'list':<26} {'ms':>9} {'baseline ms':>12} {'ratio':>6}  requests")
    print(f"{'a user (' + str(len(mine)) + ' instances)':<26} {user_time * 1000:>9.1f} "
          f"{user_baseline * 1000:>12.1f} {user_time / user_baseline:>6.2f}  {user_requests}")
    print(f"{'admin (' + str(len(everyone)) + ' instances)':<26} {admin_time * 1000:>9.1f} "
          f"{baseline * 1000:>12.1f} {admin_time / baseline:>6.2f}  {admin_requests}")
    statuses = collections.Counter(i["status"] for i in everyone)
    print(f"statuses: {dict(statuses)} (no kubelet: pods never run, so the list also asks for"
          " the pods — the worst case)")
    # the usual case: everything runs (what a kubelet would report, written directly)
    for pod in await kube.list("Pod", None, label_selector="kdash-hub.io/component=launcher"):
        await kube.patch("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"],
                         {"status": {"phase": "Running", "conditions": [
                             {"type": "Ready", "status": "True"}]}}, subresource="status")
    await asyncio.sleep(0.5)  # the emulator's controllers update the workloads' status
    before = dict(server.request_count)
    ready = await manager.list(admin, everyone=True)
    ready_requests = spent(server, before)
    if collections.Counter(i["status"] for i in ready) == {"ready": instances}:
        ready_user = await timed(lambda: manager.list(user), repeat)
        ready_admin = await timed(lambda: manager.list(admin, everyone=True), repeat)
        print(f"{'all ready: a user':<26} {ready_user * 1000:>9.1f} "
              f"{user_baseline * 1000:>12.1f} {ready_user / user_baseline:>6.2f}")
        print(f"{'all ready: admin':<26} {ready_admin * 1000:>9.1f} "
              f"{baseline * 1000:>12.1f} {ready_admin / baseline:>6.2f}  {ready_requests}")
    else:
        print("(the emulator rewrote the workload status; all-ready case not measured)")
    print("baseline: the one list request of the instance records (no status); the list adds"
          " workloads, Warning events (and pods where not ready) for the status")


async def main(quick: bool, instances: int | None, users: int | None) -> None:
    instances = instances or (100 if quick else 1000)
    users = users or (10 if quick else 100)
    repeat = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        server = APIServer(host="127.0.0.1", port=0)
        await server.start()
        configuration = Configuration()
        kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", server.url)
        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        api = ApiClient(configuration=configuration)
        try:
            kube = KubeResources(api)
            catalog = load_directories([CATALOG_DIR])
            # a non-singleton Redis for the listing population
            redis = catalog.get("redis")
            catalog.templates["redis-free"] = type(redis)(**{**redis.__dict__,
                                                             "id": "redis-free",
                                                             "singleton": False})
            catalog.templates["filebrowser"].singleton = False
            settings = LauncherSettings()
            settings.max_instances_per_user = instances
            settings.ensure_namespace = True  # the population makes 100 namespaces
            manager = InstanceManager(kube, settings, catalog)
            await bench_launch(server, kube, manager, repeat)
            await bench_list(server, kube, manager, instances, users, repeat)
        finally:
            await api.close()
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 instances / 10 users")
    parser.add_argument("--instances", type=int)
    parser.add_argument("--users", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.instances, args.users))
