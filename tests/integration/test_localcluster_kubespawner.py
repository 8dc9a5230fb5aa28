"""The real, unmodified KubeSpawner against the local cluster.

Status mode: KubeSpawner in-process (a fake hub user, as kubespawner's own tests do) spawns,
polls and stops; a leftover pod of the same name (409) is replaced; per-user namespaces
work; a pod that fits nowhere reports the scheduler's message through KubeSpawner's events.
Process mode: a real JupyterHub (+ proxy) with KubeSpawner starts a real
jupyterhub-singleuser on its own 127.x pod IP, reachable directly and through the proxy, and
stopping the server stops the process.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import pytest
from jupyterhub.objects import Hub
from kubespawner import KubeSpawner
from traitlets.config import Config

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from tests.fixtures.cluster import admin_kubeconfig_of, api_client_for, requires_emulator
from tests.fixtures.processes import process_alive


def fake_user(name: str, uid: int = 1) -> SimpleNamespace:
    """What KubeSpawner reads from a hub User when run outside a hub."""
    return SimpleNamespace(
        name=name, id=uid, escaped_name=name, url=f"/user/{name}/", groups=[], server=None,
        progress_url=lambda server_name="": f"/hub/api/users/{name}/server/progress",
    )


def spawner_config(namespace: str = "default", **extra) -> Config:
    c = Config()
    c.KubeSpawner.namespace = namespace
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.start_timeout = 30
    c.KubeSpawner.k8s_api_request_retry_timeout = 10
    c.KubeSpawner.environment = {"JUPYTERHUB_API_TOKEN": "unused"}
    for key, value in extra.items():
        setattr(c.KubeSpawner, key, value)
    return c


def make_spawner(name: str, **extra) -> KubeSpawner:
    return KubeSpawner(hub=Hub(), user=fake_user(name), config=spawner_config(**extra),
                       api_token="abc123", oauth_client_id="unused")


async def wait_for(predicate, within: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + within
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {within}s")
        await asyncio.sleep(interval)


async def test_spawn_poll_stop_in_status_mode(local_cluster, kube):
    requires_emulator(local_cluster)  # the emulator's status kubelet and scheduler
    spawner = make_spawner("ann")
    assert isinstance(await spawner.poll(), int)  # nothing running yet

    url = await spawner.start()
    pod = await kube.get("Pod", spawner.pod_name, "default")
    assert pod["status"]["phase"] == "Running"
    ip = pod["status"]["podIP"]
    assert ip.startswith("127.") and url == f"http://{ip}:8888"
    assert pod["spec"]["nodeName"] == "node-0"
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions.items() >= {
        "Ready": "True", "ContainersReady": "True", "PodScheduled": "True",
        "Initialized": "True"}.items()
    assert await spawner.poll() is None

    # the event reflector shows what a real cluster shows in the progress bar
    async def all_events():
        return len(spawner.events) >= 5

    await wait_for(all_events)  # events come on their own watch, maybe after the pod's
    messages = [e["message"] for e in spawner.events]
    assert messages[0] == f"Successfully assigned default/{spawner.pod_name} to node-0"
    assert [e["reason"] for e in spawner.events][1:] == [
        "Pulling", "Pulled", "Created", "Started"]

    await spawner.stop()
    assert await kube.get("Pod", spawner.pod_name, "default") is None
    assert isinstance(await spawner.poll(), int)


async def test_leftover_pod_conflict_is_replaced(local_cluster, kube):
    requires_emulator(local_cluster)  # the emulator's status kubelet (plain KubeSpawner)
    spawner = make_spawner("bob")
    leftover = await kube.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": spawner.pod_name, "namespace": "default",
                     "labels": {"component": "singleuser-server"}},
        "spec": {"containers": [{"name": "notebook", "image": "old:1"}]},
    })
    await wait_for(lambda: _phase(kube, spawner.pod_name, "Running"))

    await spawner.start()
    pod = await kube.get("Pod", spawner.pod_name, "default")
    assert pod["metadata"]["uid"] != leftover["metadata"]["uid"]
    assert pod["spec"]["containers"][0]["image"] != "old:1"
    assert pod["status"]["phase"] == "Running"
    await spawner.stop()


async def test_per_user_namespaces(local_cluster, kube):
    requires_emulator(local_cluster)  # plain KubeSpawner's unlabelled namespace: the
    # real tier's hub identity is refused it (admission policy kdash-namespaces)
    spawner = make_spawner("cat", enable_user_namespaces=True,
                           user_namespace_template="kdash-{username}")
    assert spawner.namespace == "kdash-cat"
    await spawner.start()
    assert await kube.get("Namespace", "kdash-cat") is not None
    pod = await kube.get("Pod", spawner.pod_name, "kdash-cat")
    assert pod["status"]["phase"] == "Running"
    assert await spawner.poll() is None
    await spawner.stop()
    assert await kube.get("Pod", spawner.pod_name, "kdash-cat") is None


async def test_unschedulable_gpu_request_says_why(make_local_cluster):
    cluster = await make_local_cluster(nodes=2, gpus={"nvidia.com/gpu": 4}, gpu_nodes=1)
    requires_emulator(cluster)  # the emulator scheduler's message
    spawner = make_spawner("dan", extra_resource_limits={"nvidia.com/gpu": "8"},
                           start_timeout=1)
    with pytest.raises(TimeoutError):
        await spawner.start()
    message = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."

    async def events():
        return spawner.events

    await wait_for(events)  # under load the event may come after the short timeout
    assert [e["message"] for e in spawner.events] == [message]
    assert spawner.events[0]["reason"] == "FailedScheduling"
    pod = spawner.pod_reflector.pods[f"default/{spawner.pod_name}"]
    assert pod["status"]["phase"] == "Pending"
    scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"][0]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    await spawner.stop(now=True)

    # 4 GPUs fit the GPU node, and only that one
    spawner = make_spawner("dan", extra_resource_limits={"nvidia.com/gpu": "4"})
    await spawner.start()
    pod = spawner.pod_reflector.pods[f"default/{spawner.pod_name}"]
    assert pod["spec"]["nodeName"] == "node-0"
    await spawner.stop()


async def _phase(kube: KubeResources, name: str, phase: str, namespace: str = "default"):
    pod = await kube.get("Pod", name, namespace)
    return pod is not None and pod["status"].get("phase") == phase and pod


# --- process mode ----------------------------------------------------------------------


@pytest.fixture
async def process_cluster(make_local_cluster):
    """A cluster whose kubelet runs processes: the emulator's, or the real tier's (whose
    kubelet always does), with the admin's client for the test's own pods."""
    cluster = await make_local_cluster(kubelet="process")
    async with api_client_for(admin_kubeconfig_of(cluster)) as client:
        yield cluster, KubeResources(client)


async def test_process_mode_reports_exit_codes(process_cluster):
    cluster, kube = process_cluster
    try:
        await _exit_codes(kube)
    finally:
        for name in ("crash", "nostart"):
            await kube.delete("Pod", name, "default")


async def _exit_codes(kube: KubeResources) -> None:
    await kube.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "notebook", "image": "x",
            "command": ["python", "-c", "import sys; sys.exit(3)"],
            "env": [{"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/"}],
        }]},
    })
    pod = await wait_for(lambda: _phase(kube, "crash", "Failed"))
    state = pod["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 3
    assert state["terminated"]["reason"] == "Error"

    await kube.create({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nostart", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "notebook", "image": "x", "command": ["/nonexistent/server"],
            "env": [{"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/"}],
        }]},
    })
    pod = await wait_for(lambda: _phase(kube, "nostart", "Failed"))
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert "/nonexistent/server" in terminated["message"]


async def test_real_hub_spawns_a_real_singleuser_server(process_cluster, tmp_path):
    cluster, kube = process_cluster
    requires_emulator(cluster)  # reads the kubelet's process table
    config = """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.KubeSpawner.namespace = "default"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 60
"""
    hub = HubProcess(config, tmp_path / "hub", env={"KUBECONFIG": str(cluster.kubeconfig_path)})
    async with hub, aiohttp.ClientSession(headers=hub.auth_headers()) as http:
        api = hub.api_url
        async with http.post(f"{api}/users/eve") as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{api}/users/eve/server") as r:
            assert r.status in (201, 202), await r.text()

        async def ready():
            async with http.get(f"{api}/users/eve") as r:
                server = (await r.json())["servers"].get("")
                return server if server and server["ready"] else None

        try:
            await wait_for(ready, within=60, interval=0.2)
        except TimeoutError:
            server_log = cluster.kubelet.read_log("default", "jupyter-eve")
            raise AssertionError(f"server not ready.\nhub log:\n{hub.log_tail(40)}\n"
                                 f"server log:\n{server_log}") from None
        pods = await kube.list("Pod", "default", label_selector="component=singleuser-server")
        assert len(pods) == 1
        pod = pods[0]
        ip = pod["status"]["podIP"]
        assert ip.startswith("127.") and ip != "127.0.0.1"
        reasons = [e["reason"] for e in await kube.list(
            "Event", "default", field_selector=f"involvedObject.name={pod['metadata']['name']}")]
        assert reasons == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]

        # the real server: directly on its pod IP, and through the hub's proxy
        async with http.get(f"http://{ip}:8888/user/eve/api") as r:
            assert r.status == 200 and "version" in await r.json()
        async with http.get(f"{hub.url}/user/eve/api") as r:
            assert r.status == 200 and "version" in await r.json()

        # the server's own requests to the hub come from its pod's address, as from a pod
        assert f"@{ip})" in hub.log_tail(400), hub.log_tail(60)

        run = cluster.kubelet.runs[f"default/{pod['metadata']['name']}"]
        pid = run.runners["notebook"].process.pid
        assert process_alive(pid)

        async with http.delete(f"{api}/users/eve/server") as r:
            assert r.status in (202, 204)
        await wait_for(lambda: _gone(kube, pod["metadata"]["name"]), within=30)
        assert not process_alive(pid)


async def _gone(kube: KubeResources, name: str) -> bool:
    return await kube.get("Pod", name, "default") is None


