"""The kubelet as a client of the API: it survives dropped watches, 410s and API errors,
registers nodes like a real one, and frees resources for pending pods."""

from __future__ import annotations

import asyncio
import time

from kdash_hub.kube import KubeResources
from tests.fixtures.cluster import requires_emulator


def pod(name: str, **resources) -> dict:
    container = {"name": "main", "image": "busybox"}
    if resources:
        container["resources"] = {"limits": resources}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [container]}}


async def running(kube: KubeResources, name: str, within: float = 10.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        current = await kube.get("Pod", name, "default")
        if current and current["status"].get("phase") == "Running":
            return current
        assert time.monotonic() < deadline, f"{name} not Running: {current and current['status']}"
        await asyncio.sleep(0.02)


async def test_nodes_are_registered_like_a_kubelet_does(local_cluster, kube):
    requires_emulator(local_cluster)
    node = await kube.get("Node", "node-0")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-0"
    assert node["status"]["allocatable"]["cpu"] == "8"
    assert node["status"]["allocatable"]["pods"] == "110"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True"
    host_ip = node["status"]["addresses"][0]["address"]
    started = await running(kube, (await kube.create(pod("a")))["metadata"]["name"])
    assert started["status"]["hostIP"] == host_ip
    assert started["status"]["podIP"].rsplit(".", 1)[0] == host_ip.rsplit(".", 1)[0]


async def test_dropped_watches_and_410_are_survived(local_cluster, kube):
    requires_emulator(local_cluster)
    kubelet = local_cluster.kubelet
    await kube.create(pod("before"))
    await running(kube, "before")

    rewatches = kubelet.rewatches
    assert local_cluster.api.faults.drop_watches() >= 1
    await kube.create(pod("after-drop"))
    await running(kube, "after-drop")
    assert kubelet.rewatches > rewatches

    relists = kubelet.relists
    local_cluster.api.faults.add("GET", r"watch=(true|1)", status=410, times=1)
    local_cluster.api.faults.drop_watches()
    await kube.create(pod("after-410"))
    await running(kube, "after-410")
    assert kubelet.relists == relists + 1


async def test_api_errors_are_retried(local_cluster, kube):
    requires_emulator(local_cluster)
    faults = local_cluster.api.faults
    binding = faults.add("POST", r"/pods/flaky/binding", status=500, times=1)
    status = faults.add("PATCH", r"/pods/flaky/status", status=503, times=1)
    await kube.create(pod("flaky"))
    await running(kube, "flaky", within=15)
    assert binding.hits == 1 and status.hits == 1


async def test_pending_pod_is_scheduled_when_resources_free_up(make_local_cluster):
    cluster = await make_local_cluster(gpus={"nvidia.com/gpu": 2})
    requires_emulator(cluster)
    from kubernetes_asyncio.client import ApiClient, Configuration
    from kubernetes_asyncio.config import load_kube_config

    configuration = Configuration()
    await load_kube_config(config_file=str(cluster.kubeconfig_path),
                           client_configuration=configuration)
    async with ApiClient(configuration=configuration) as client:
        kube = KubeResources(client)
        await kube.create(pod("first", **{"nvidia.com/gpu": "2"}))
        await running(kube, "first")
        await kube.create(pod("second", **{"nvidia.com/gpu": "1"}))
        await asyncio.sleep(0.2)
        second = await kube.get("Pod", "second", "default")
        assert second["status"]["phase"] == "Pending"
        assert "spec" in second and not second["spec"].get("nodeName")
        events = await kube.list("Event", "default",
                                 field_selector="involvedObject.name=second")
        assert [e["message"] for e in events] == [
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]

        await kube.delete("Pod", "first", "default")
        second = await running(kube, "second")
        assert second["spec"]["nodeName"] == "node-0"
