"""What one Kubernetes API request costs the hub's CPU, and the floor that puts under
KDashSpawner's ratio when many users start at once.

Both spawners send their requests from the hub's one thread, through kubernetes_asyncio's
REST client (aiohttp). With 200 first starts at once on the emulator that thread is what
every start waits for: in `bench_spawner`'s part 2 the p95 ratio follows the ratio of the
hub's CPU per spawn, pair by pair. So each request a spawner adds to a start costs every
start its client CPU. This measures that cost in this process, with the client set up as
the hub's (one shared ApiClient, no per-request environment lookups), against a control
plane in a process of its own:

- baseline: a GET of a namespace, one at a time (a later start's one request);
- a RoleBinding create (the bundle's most frequent object), one at a time and N at once
  (at most `--concurrency` in flight: kubernetes_asyncio's connection pool).

It prints ms of client CPU per request (median of `--rounds` rounds), each against the
baseline, and what KDashSpawner's 9 extra requests per first start cost at least. With
`--plain-hub-cpu-ms` (plain KubeSpawner's hub CPU per spawn, from `bench_spawner`'s part-2
lines), it also prints the lowest p95 ratio those requests allow on a hub-bound plane.

    python -m benchmarks.bench_request_cost [--quick] [--control-plane emulator|real]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common_kube import PlaneProcess
from kdash_hub.kube import KubeResources, without_environment_lookups
from tests.fixtures.cluster import api_client_for

NAMESPACE = "bench-request-cost"
# what a first start of KDashSpawner sends that plain KubeSpawner's does not: the bundle's
# 8 objects and the completion mark (bench_spawner part 1 counts them: 12 against 3)
EXTRA_REQUESTS = 9


def role_binding(name: str) -> dict:
    """A RoleBinding shaped as the bundle's (spawner/bundle.py): labels, one subject."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "kdash-hub",
                                    "kdash-hub.io/user": "bench"},
                         "annotations": {"kdash-hub.io/username": "bench"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench",
                          "namespace": NAMESPACE}]}


async def cpu_per_request(make_requests) -> float:
    """ms of this process's CPU per request for `make_requests()` (returns the count)."""
    start = time.process_time()
    count = await make_requests()
    return 1000 * (time.process_time() - start) / count


async def measure(kubeconfig: Path, requests: int, concurrency: int, rounds: int
                  ) -> dict[str, list[float]]:
    async with api_client_for(kubeconfig) as api:
        without_environment_lookups(api)
        return await _measure(KubeResources(api), requests, concurrency, rounds)


async def _measure(kube: KubeResources, requests: int, concurrency: int, rounds: int
                   ) -> dict[str, list[float]]:
    serial = itertools.count()
    out: dict[str, list[float]] = {"get": [], "create": [], "create_at_once": []}
    try:
        await kube.create({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": NAMESPACE}})

        async def gets() -> int:
            for _ in range(requests):
                await kube.get("Namespace", NAMESPACE)
            return requests

        async def creates() -> int:
            for _ in range(requests):
                await kube.create(role_binding(f"rb-{next(serial)}"))
            return requests

        async def creates_at_once() -> int:
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await kube.create(role_binding(f"rb-{next(serial)}"))
            await asyncio.gather(*(one() for _ in range(requests)))
            return requests

        await gets()  # warm: connections open, code paths hot
        for _ in range(rounds):
            out["get"].append(await cpu_per_request(gets))
            out["create"].append(await cpu_per_request(creates))
            out["create_at_once"].append(await cpu_per_request(creates_at_once))
    finally:
        await kube.delete("Namespace", NAMESPACE)
    return out


def report(out: dict[str, list[float]], requests: int, concurrency: int,
           plain_hub_cpu_ms: float | None) -> None:
    get, create, at_once = (statistics.median(out[k]) for k in
                            ("get", "create", "create_at_once"))
    print(f"client CPU per request, ms (median of {len(out['get'])} rounds of {requests}):")
    rows = [("GET namespace, one at a time (baseline)", get),
            ("POST RoleBinding, one at a time", create),
            (f"POST RoleBinding, {requests} at once (<= {concurrency} in flight)", at_once)]
    for label, value in rows:
        print(f"  {label:55s} {value:.3f}  ({value / get:.2f}x baseline)")
    low, high = sorted((EXTRA_REQUESTS * create, EXTRA_REQUESTS * at_once))
    print(f"KDashSpawner's {EXTRA_REQUESTS} extra requests per first start: "
          f"{low:.2f} to {high:.2f} ms of the hub's CPU, before any of its own code")
    if plain_hub_cpu_ms:
        print(f"with plain KubeSpawner at {plain_hub_cpu_ms:.1f} ms of hub CPU per spawn, "
              f"the lowest p95 ratio on a hub-bound plane: "
              f"{1 + low / plain_hub_cpu_ms:.3f}x to {1 + high / plain_hub_cpu_ms:.3f}x")


async def main(args: argparse.Namespace) -> None:
    plane = PlaneProcess(workdir=Path(tempfile.mkdtemp(prefix="bench-request-cost-")),
                         control_plane=args.control_plane)
    await asyncio.to_thread(plane.start)
    try:
        assert plane.admin_kubeconfig is not None
        out = await measure(plane.admin_kubeconfig, args.requests, args.concurrency,
                            args.rounds)
    finally:
        await asyncio.to_thread(plane.stop)
    print(f"[{args.control_plane}]")
    report(out, args.requests, args.concurrency, args.plain_hub_cpu_ms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100 requests per measurement, one round")
    parser.add_argument("--control-plane", choices=("emulator", "real"), default="emulator",
                        help="the control plane to send the requests to (default emulator)")
    parser.add_argument("--requests", type=int, default=400,
                        help="requests per measurement (400)")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="requests in flight at once in the 'at once' measurement (100, "
                             "kubernetes_asyncio's connection pool)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is kept (3)")
    parser.add_argument("--plain-hub-cpu-ms", type=float, default=None,
                        help="plain KubeSpawner's hub CPU per spawn (bench_spawner part 2), "
                             "to print the p95 ratio's floor")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.requests, arguments.rounds = 100, 1
    asyncio.run(main(arguments))
