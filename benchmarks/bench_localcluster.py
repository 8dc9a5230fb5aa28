"""Benchmark of the emulated Kubernetes API server, through HTTP with kubernetes_asyncio.

Measures create/get/list/patch/delete throughput with N pods (in a namespace with a
ResourceQuota, as user namespaces have) and watch event latency, once with strict
schema validation (the default) and once without it (the baseline), and prints the ratio,
so later spawn benchmarks know what they stand on and what validation costs.

    python -m benchmarks.bench_localcluster [--quick] [--objects N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
from kubernetes_asyncio import client

from kdash_hub.localcluster.apiserver import APIServer, resources


def pod_body(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i}", "labels": {"app": "bench",
                                                          "shard": str(i % 10)}},
            "spec": {"containers": [{
                "name": "notebook", "image": "quay.io/jupyter/base-notebook:2024-01-01",
                "ports": [{"containerPort": 8888, "name": "notebook-port"}],
                "env": [{"name": f"E{j}", "value": str(j)} for j in range(10)],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                              "limits": {"cpu": "1", "memory": "1Gi"}},
                "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}],
                "volumes": [{"name": "home", "persistentVolumeClaim": {
                    "claimName": f"claim-{i}"}}]}}


@dataclass
class Result:
    label: str
    figures: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def _gather_limited(coros, limit: int) -> None:
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            await c

    await asyncio.gather(*(run(c) for c in coros))


async def run_one(label: str, validate: bool, n: int, lists: int, watch_n: int,
                  concurrency: int) -> Result:
    srv = APIServer(validate=validate)
    await srv.start()
    res = Result(label)
    cfg = client.Configuration(host=srv.url)
    try:
        async with client.ApiClient(cfg) as api:
            v1 = client.CoreV1Api(api)
            await v1.create_namespace({"metadata": {"name": "bench"}})
            # like a user namespace: every pod create goes through quota admission
            await v1.create_namespaced_resource_quota("bench", {
                "metadata": {"name": "compute"},
                "spec": {"hard": {"pods": "100000", "requests.cpu": "100000",
                                  "limits.memory": "100000Gi"}}})
            await v1.create_namespaced_pod("bench", pod_body(-1))  # warm-up
            t = time.perf_counter()
            await _gather_limited((v1.create_namespaced_pod("bench", pod_body(i))
                                   for i in range(n)), concurrency)
            res.figures["create/s"] = n / (time.perf_counter() - t)
            t = time.perf_counter()
            await _gather_limited((v1.read_namespaced_pod(f"bench-{i}", "bench")
                                   for i in range(n)), concurrency)
            res.figures["get/s"] = n / (time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(lists):
                listed = await v1.list_namespaced_pod("bench", _preload_content=False)
                await listed.read()
            dt = time.perf_counter() - t
            res.figures[f"list {n} pods/s"] = lists / dt
            t = time.perf_counter()
            for i in range(lists):
                await v1.list_namespaced_pod("bench", label_selector=f"shard={i % 10}")
            res.figures["list+selector/s (typed)"] = lists / (time.perf_counter() - t)
            res.figures.update(await watch_latency(srv, v1, watch_n))
            t = time.perf_counter()
            await _gather_limited((v1.patch_namespaced_pod(
                f"bench-{i}", "bench", {"metadata": {"labels": {"patched": "yes"}}})
                for i in range(n)), concurrency)
            res.figures["patch/s"] = n / (time.perf_counter() - t)
            t = time.perf_counter()
            await _gather_limited((v1.delete_namespaced_pod(f"bench-{i}", "bench")
                                   for i in range(n)), concurrency)
            res.figures["delete/s"] = n / (time.perf_counter() - t)
        res.counts = dict(srv.request_count)
        res.counts["schema validations"] = srv.validator.calls
    finally:
        await srv.stop()
    return res


async def watch_latency(srv: APIServer, v1: client.CoreV1Api, n: int) -> dict[str, float]:
    """Time from sending a create to receiving its ADDED event on an open watch."""
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()
    rv = (await v1.list_namespaced_config_map("bench")).metadata.resource_version

    async def reader() -> None:
        async with aiohttp.ClientSession() as s, s.get(
                f"{srv.url}/api/v1/namespaces/bench/configmaps",
                params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "120"}) as r:
            async for line in r.content:
                ev = json.loads(line)
                name = ev["object"]["metadata"]["name"]
                if ev["type"] == "ADDED" and name in sent:
                    lat.append(time.perf_counter() - sent[name])
                    if len(lat) == n:
                        done.set()
                        return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.1)
    for i in range(n):
        name = f"w-{i}"
        sent[name] = time.perf_counter()
        await v1.create_namespaced_config_map("bench", {"metadata": {"name": name}})
    await asyncio.wait_for(done.wait(), 30)
    await task
    return {"watch p50 ms": pct(lat, 0.5) * 1000, "watch p95 ms": pct(lat, 0.95) * 1000}


def in_process(n: int) -> dict[str, float]:
    """Server-side cost alone (no HTTP, no client): the verbs called directly."""
    out: dict[str, float] = {}
    for validate in (True, False):
        srv = APIServer(validate=validate)
        pods = resources.by_kind("Pod")
        srv.ops.create(resources.by_kind("Namespace"), None, {"metadata": {"name": "bench"}})
        t = time.perf_counter()
        for i in range(n):
            srv.ops.create(pods, "bench", pod_body(i))
        tag = "validated" if validate else "unvalidated"
        out[f"in-process create us ({tag})"] = (time.perf_counter() - t) / n * 1e6
        if validate:
            t = time.perf_counter()
            for i in range(n):
                cur = srv.store.get("Pod", f"bench-{i}", "bench")
                cur["status"]["phase"] = "Running"
                srv.ops.update(pods, "bench", f"bench-{i}", cur, subresource="status")
            out["in-process status update us"] = (time.perf_counter() - t) / n * 1e6
            items = srv.ops.list(pods, "bench")["items"]
            t = time.perf_counter()
            json.dumps(items)
            out[f"encode {n} pods ms (cold)"] = (time.perf_counter() - t) * 1000
            for o in items:
                srv.store.encode(o)
            t = time.perf_counter()
            b",".join(srv.store.encode(o) for o in items)
            out[f"encode {n} pods ms (cached)"] = (time.perf_counter() - t) * 1000
    return out


def validation_cost(iterations: int) -> dict[str, float]:
    """The cost of one strict schema validation of a notebook pod, in microseconds."""
    from kdash_hub.localcluster.apiserver.validation import Validator

    pods = resources.by_kind("Pod")
    v = Validator()
    body = pod_body(0)
    v.validate(pods, body)
    t = time.perf_counter()
    for _ in range(iterations):
        v.validate(pods, body)
    return {"validate pod us": (time.perf_counter() - t) / iterations * 1e6}


def print_table(with_v: Result, without: Result, micro: dict[str, float]) -> None:
    print(f"\n{'figure':<28}{'validated':>14}{'no validation':>16}{'ratio':>9}")
    print("-" * 67)
    for key in with_v.figures:
        a, b = with_v.figures[key], without.figures[key]
        print(f"{key:<28}{a:>14.1f}{b:>16.1f}{a / b if b else 0:>9.2f}")
    print("-" * 67)
    for key, value in micro.items():
        print(f"{key:<38}{value:>12.1f}")
    print("\nrequests (validated run):",
          ", ".join(f"{k}={v}" for k, v in sorted(with_v.counts.items())))


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (a few seconds)")
    p.add_argument("--objects", type=int, default=None, help="pods to create (default 1000)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best is kept)")
    args = p.parse_args(argv)
    n = args.objects or (200 if args.quick else 1000)
    lists = 5 if args.quick else 20
    watch_n = 50 if args.quick else 300
    print(f"emulated API server benchmark: {n} pods, {lists} lists, {watch_n} watch events, "
          f"concurrency {args.concurrency}")
    runs: dict[bool, list[Result]] = {True: [], False: []}
    for _ in range(args.rounds):  # interleaved, best of each: this machine is shared
        for validate in (True, False):
            runs[validate].append(await run_one(
                "validated" if validate else "no validation", validate, n, lists, watch_n,
                args.concurrency))
    micro = validation_cost(50 if args.quick else 300)
    micro.update(in_process(n))
    print_table(best(runs[True]), best(runs[False]), micro)


def best(results: list[Result]) -> Result:
    """Per figure, the best of the rounds (highest rate, lowest latency)."""
    out = Result(results[0].label, counts=results[0].counts)
    for key in results[0].figures:
        values = [r.figures[key] for r in results]
        out.figures[key] = min(values) if key.endswith("ms") else max(values)
    return out


if __name__ == "__main__":
    asyncio.run(main())
