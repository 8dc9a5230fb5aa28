"""Benchmark of the local cluster's kubelet: how long from "pod created" to "pod Running".

Baselines measured in the same run:
- status mode: the bare API round trip (create + get of a pod that nobody schedules) vs.
  create -> Running through scheduler + kubelet (binding, events, status), with the API
  requests the kubelet spends per pod; then the real KubeSpawner start+stop per server;
- process mode: starting the same server program directly (until its port answers) vs.
  create -> Ready through the kubelet.

    python -m benchmarks.bench_kubelet [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kdash_hub.localcluster import LocalCluster
from kdash_hub.localcluster.apiclient import KubeHTTP


def pod(name: str, *, server: bool = False, marker: str = "") -> dict:
    container: dict = {"name": "notebook", "image": "python:3",
                       "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
    if server:
        container |= {
            "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8888",
                        "--directory", marker],
            "ports": [{"name": "notebook-port", "containerPort": 8888}],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/"}],
        }
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [container]}}


async def until_ready(http: KubeHTTP, name: str, *, need_ready: bool) -> int:
    """Poll until the pod runs (and is ready); returns how many GETs that took."""
    polls = 0
    while True:
        polls += 1
        status = (await http.request("GET", f"/api/v1/namespaces/default/pods/{name}"))["status"]
        statuses = status.get("containerStatuses") or [{}]
        if status.get("phase") == "Running" and (not need_ready or statuses[0].get("ready")):
            return polls
        await asyncio.sleep(0.005)


async def bench_status_mode(n: int, nodes: int, concurrency: int) -> dict:
    cluster = await LocalCluster(nodes=nodes, node_cpu="1000").start()
    http = KubeHTTP(cluster.url, "bench")
    try:
        # baseline: the API alone (pods with a nodeName of a node nobody runs -> untouched)
        t0 = time.perf_counter()
        for i in range(n):
            body = pod(f"raw-{i}")
            body["spec"]["nodeName"] = "nowhere"
            await http.request("POST", "/api/v1/namespaces/default/pods", body=body)
            await http.request("GET", f"/api/v1/namespaces/default/pods/raw-{i}")
        raw = (time.perf_counter() - t0) / n

        before = cluster.api.request_count["total"]
        latencies = []
        ours = 0
        t0 = time.perf_counter()
        for i in range(n):
            start = time.perf_counter()
            body = pod(f"seq-{i}")
            body["metadata"]["labels"] = {"phase": "seq"}
            await http.request("POST", "/api/v1/namespaces/default/pods", body=body)
            ours += 1 + await until_ready(http, f"seq-{i}", need_ready=False)
            latencies.append(time.perf_counter() - start)
        sequential = (time.perf_counter() - t0) / n
        # the kubelet's requests: all of that phase minus our creates and polling GETs
        kubelet_requests = cluster.api.request_count["total"] - before - ours

        # make room: a node holds 110 pods, as on a real cluster
        await http.request("DELETE", "/api/v1/namespaces/default/pods",
                           params={"labelSelector": "phase=seq", "gracePeriodSeconds": 0})
        while True:
            left = await http.request("GET", "/api/v1/namespaces/default/pods",
                                      params={"labelSelector": "phase=seq"})
            if not left["items"]:
                break
            await asyncio.sleep(0.01)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await http.request("POST", "/api/v1/namespaces/default/pods",
                                   body=pod(f"par-{i}"))
                await until_ready(http, f"par-{i}", need_ready=False)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        burst = time.perf_counter() - t0
        return {
            "raw_create_get_ms": raw * 1000,
            "to_running_median_ms": statistics.median(latencies) * 1000,
            "to_running_ratio_vs_raw": statistics.median(latencies) / raw,
            "sequential_per_pod_ms": sequential * 1000,
            "burst_pods_per_s": n / burst,
            "kubelet_api_requests_per_pod": kubelet_requests / n,
        }
    finally:
        await http.close()
        await cluster.stop()


async def bench_kubespawner(n: int) -> dict:
    from jupyterhub.objects import Hub
    from kubernetes_asyncio.config import kube_config
    from kubespawner import KubeSpawner, clients
    from traitlets.config import Config

    tmp = Path(tempfile.mkdtemp(prefix="bench-kubelet-"))
    cluster = await LocalCluster(kubeconfig_path=tmp / "kubeconfig").start()
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(cluster.kubeconfig_path)
    clients.load_config.cache_clear()
    try:
        config = Config()
        config.KubeSpawner.namespace = "default"
        config.KubeSpawner.cmd = ["jupyterhub-singleuser"]
        config.KubeSpawner.environment = {"JUPYTERHUB_API_TOKEN": "x"}
        durations = []
        before = cluster.api.request_count["total"]
        for i in range(n):
            from types import SimpleNamespace

            user = SimpleNamespace(name=f"u{i}", id=i, escaped_name=f"u{i}", url=f"/user/u{i}/",
                                   groups=[], server=None)
            spawner = KubeSpawner(hub=Hub(), user=user, config=config, api_token="x",
                                  oauth_client_id="x")
            t0 = time.perf_counter()
            await spawner.start()
            await spawner.stop()
            durations.append(time.perf_counter() - t0)
        requests = (cluster.api.request_count["total"] - before) / n
        await KubeSpawner._stop_all_reflectors()
        return {"kubespawner_start_stop_median_ms": statistics.median(durations) * 1000,
                "api_requests_per_start_stop": requests}
    finally:
        await cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _port_answers(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except OSError:
        return False
    writer.close()
    return True


async def bench_process_mode(n: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-kubelet-"))
    marker = str(tmp)
    try:
        direct = []
        for _ in range(n):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                "--directory", marker, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            while True:
                if await _port_answers("127.0.0.1", port):
                    break
                await asyncio.sleep(0.005)
            direct.append(time.perf_counter() - t0)
            proc.terminate()
            await proc.wait()

        cluster = await LocalCluster(kubelet="process").start()
        http = KubeHTTP(cluster.url, "bench")
        try:
            via = []
            for i in range(n):
                t0 = time.perf_counter()
                await http.request("POST", "/api/v1/namespaces/default/pods",
                                   body=pod(f"srv-{i}", server=True, marker=marker))
                await until_ready(http, f"srv-{i}", need_ready=True)
                via.append(time.perf_counter() - t0)
                await http.request("DELETE", f"/api/v1/namespaces/default/pods/srv-{i}")
            return {
                "direct_process_ready_median_ms": statistics.median(direct) * 1000,
                "pod_ready_median_ms": statistics.median(via) * 1000,
                "pod_ready_ratio_vs_direct": statistics.median(via) / statistics.median(direct),
            }
        finally:
            await http.close()
            await cluster.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def main(quick: bool) -> None:
    n = 20 if quick else 100
    print(f"kubelet benchmark ({'quick' if quick else 'full'}; {os.cpu_count()} cpus)")
    for nodes in (1, 4):
        figures = await bench_status_mode(n, nodes, concurrency=10)
        print(f"status mode, {nodes} node(s), {n} pods:")
        for key, value in figures.items():
            print(f"  {key:40s} {value:10.2f}")
    figures = await bench_kubespawner(5 if quick else 20)
    print("KubeSpawner (real, in-process) against the local cluster:")
    for key, value in figures.items():
        print(f"  {key:40s} {value:10.2f}")
    figures = await bench_process_mode(3 if quick else 10)
    print("process mode (python -m http.server as the pod's server):")
    for key, value in figures.items():
        print(f"  {key:40s} {value:10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    asyncio.run(main(parser.parse_args().quick))
