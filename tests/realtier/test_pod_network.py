"""Pod addresses on the real control plane: each process pod in a network namespace of its
own on a bridge (kdash_hub/localcluster/podnetwork.py), so the real API server accepts its
address in EndpointSlices, a Service gets endpoints, and the host reaches the pod there.

Nothing is sent outside this machine: a pod's only route is its node's /24."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from kdash_hub.dev.ports import free_port
from kdash_hub.localcluster import podnetwork
from kdash_hub.localcluster.apiclient import KubeHTTP
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from kdash_hub.localcluster.real.controlplane import RealControlPlane
from tests.fixtures.realcp import real_tier_enabled

pytestmark = [
    pytest.mark.skipif(not real_tier_enabled(), reason="real tier only (KDASH_REAL_TIER=1)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

NS = "default"


@pytest.fixture
async def plane(tmp_path) -> AsyncIterator[RealControlPlane]:
    control_plane = RealControlPlane(nodes=1, kubelet="process", workdir=tmp_path / "cp")
    await control_plane.start()
    try:
        yield control_plane
    finally:
        await control_plane.stop()


async def until(check, within: float = 60.0, interval: float = 0.2):
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


def server_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name},
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"securityContext": {"runAsUser": 2001, "runAsGroup": 2001},
                     "containers": [{
                         "name": "web", "image": "python",
                         "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)",
                                     "8080"],
                         "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                         "env": [{"name": "POD_IP", "valueFrom": {
                             "fieldRef": {"fieldPath": "status.podIP"}}}]}]}}


def client_pod(name: str, url: str) -> dict:
    script = ("import os, urllib.request; url = os.environ['JUPYTERHUB_API_URL']; "
              "print('GOT', urllib.request.urlopen(url, timeout=10).read().decode(), url, "
              "flush=True)")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "python", "command": ["python", "-c", script],
                "env": [{"name": "JUPYTERHUB_API_URL", "value": url}]}]}}


def netns_routes(name: str) -> str:
    return subprocess.run(["ip", "-n", name, "-4", "route", "show", "table", "all"],
                          capture_output=True, text=True, check=True).stdout


async def test_pods_get_addresses_services_get_endpoints(plane: RealControlPlane):
    api = KubeHTTP(plane.url, None, ssl_context=plane.ssl_context("admin"))
    hub_app = web.Application()
    hub_app.router.add_get("/hub/api", lambda request: web.Response(text="hub-here"))
    runner = web.AppRunner(hub_app)
    await runner.setup()
    hub_port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", hub_port)  # as test hubs listen
    await site.start()
    try:
        await api.request("POST", f"/api/v1/namespaces/{NS}/pods", body=server_pod("web"))
        await api.request("POST", f"/api/v1/namespaces/{NS}/services", body={
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080}]}})

        async def ready_pod():
            pod = await api.request("GET", f"/api/v1/namespaces/{NS}/pods/web")
            statuses = pod["status"].get("containerStatuses") or [{}]
            return pod if statuses[0].get("ready") else None
        pod = await until(ready_pod)
        ip = pod["status"]["podIP"]
        assert ip.startswith("10.244.") and pod["status"]["podIPs"] == [{"ip": ip}]
        network = plane.kubelet.network
        assert isinstance(network, podnetwork.NetnsPodNetwork)
        netns = network.namespace(ip)
        assert netns in podnetwork.namespaces(network.block)
        # the pod's only route is its node's /24: nothing it sends can leave the machine
        routes = netns_routes(netns)
        assert "default" not in routes and f"10.244.{network.block}.0/24" in routes, routes

        async def endpoint_addresses():
            slices = await api.request(
                "GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                params={"labelSelector": "kubernetes.io/service-name=web"})
            found = [a for s in slices.get("items") or [] for e in s.get("endpoints") or []
                     if (e.get("conditions") or {}).get("ready") for a in e["addresses"]]
            return found
        assert await until(endpoint_addresses) == [ip]

        # the host reaches the pod at its own address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{ip}:8080/") as r:
                assert r.status == 200

        # and the pod reaches a hub on the host's loopback through the node's address
        await api.request("POST", f"/api/v1/namespaces/{NS}/pods",
                          body=client_pod("client", f"http://127.0.0.1:{hub_port}/hub/api"))

        async def client_done():
            pod = await api.request("GET", f"/api/v1/namespaces/{NS}/pods/client")
            return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None
        client = await until(client_done)
        log = plane.kubelet.read_log(NS, "client")
        assert client["status"]["phase"] == "Succeeded", log
        assert f"GOT hub-here http://{network.host_address}:{hub_port}/hub/api" in log
        client_ns = network.namespace(client["status"]["podIP"])
        assert client_ns is None  # a finished pod's namespace is gone already

        # attack: a user's pod pointing the hub URL at etcd (no authentication) or the API
        # server gets no relay to them
        for port in sorted(plane.own_ports):
            await api.request("POST", f"/api/v1/namespaces/{NS}/pods", body=client_pod(
                f"sneaky-{port}", f"http://127.0.0.1:{port}/version"))
        for port in sorted(plane.own_ports):
            async def sneaky_done(port=port):
                pod = await api.request("GET", f"/api/v1/namespaces/{NS}/pods/sneaky-{port}")
                return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None
            sneaky = await until(sneaky_done)
            text = plane.kubelet.read_log(NS, f"sneaky-{port}")
            assert sneaky["status"]["phase"] == "Failed" and "GOT" not in text, text
        assert len(plane.own_ports) >= 5

        # the pod goes: so do its namespace and veth
        await api.request("DELETE", f"/api/v1/namespaces/{NS}/pods/web",
                          body={"gracePeriodSeconds": 0})

        async def ns_gone():
            return netns not in podnetwork.namespaces(network.block)
        await until(ns_gone, within=30)
        assert not [n for n in podnetwork.links(network.block) if n.startswith("kdv")]
        block = network.block
    finally:
        await runner.cleanup()
        await api.close()
    await plane.stop()
    assert podnetwork.namespaces(block) == []
    assert podnetwork.links(block) == []
    assert not (podnetwork.STATE_DIR / str(block)).exists()


def test_a_dead_kubelets_network_is_swept():
    """kill -9 leaves the bridge and namespaces behind: the next kubelet removes them."""
    network = podnetwork.NetnsPodNetwork()
    network.prefix("node-x")
    ip = network.allocate("node-x")
    name = network.attach(ip)
    block = network.block
    proc = subprocess.Popen(["sleep", "0"])  # a pid that has ended
    proc.wait()
    (podnetwork.STATE_DIR / str(block)).write_text(str(proc.pid))
    assert name in podnetwork.namespaces(block)
    assert block in podnetwork.sweep_dead()
    assert podnetwork.namespaces(block) == [] and podnetwork.links(block) == []

