"""The kubelet as a client of the API: it survives dropped watches, 410s and API errors,
registers nodes like a real one, and frees resources for pending pods."""

from __future__ import annotations

import asyncio
import base64
import time

from kdash_hub.kube import KubeResources
from tests.fixtures.cluster import api_client_for, requires_emulator


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
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(pod("first", **{"nvidia.com/gpu": "2"}))
        await running(kube, "first")
        await kube.create(pod("second", **{"nvidia.com/gpu": "1"}))
        deadline = time.monotonic() + 10
        while True:
            events = await kube.list("Event", "default",
                                     field_selector="involvedObject.name=second")
            if events:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        second = await kube.get("Pod", "second", "default")
        assert second["status"]["phase"] == "Pending"
        assert not second["spec"].get("nodeName")
        assert [e["message"] for e in events] == [
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]

        await kube.delete("Pod", "first", "default")
        second = await running(kube, "second")
        assert second["spec"]["nodeName"] == "node-0"


def test_start_in_thread_serves_synchronous_callers(tmp_path):
    """For tests whose own loop blocks (subprocess.run, a sync client): its own loop/thread."""
    import json
    import urllib.request

    from kdash_hub.localcluster import LocalCluster

    cluster = LocalCluster(kubeconfig_path=tmp_path / "kubeconfig").start_in_thread()
    try:
        def call(method: str, path: str, body: dict | None = None) -> dict:
            request = urllib.request.Request(
                cluster.url + path, method=method,
                data=json.dumps(body).encode() if body else None,
                headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.load(resp)

        call("POST", "/api/v1/namespaces/default/pods", pod("sync"))
        deadline = time.monotonic() + 10
        while call("GET", "/api/v1/namespaces/default/pods/sync")["status"].get(
                "phase") != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        url = cluster.url
    finally:
        cluster.stop_thread()
    try:
        urllib.request.urlopen(url + "/api", timeout=2)
        raise AssertionError("the API server still answers after stop_thread()")
    except OSError:
        pass


async def test_process_mode_waits_for_missing_secrets_and_mounts_volumes(make_local_cluster):
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    cluster.kubelet.retry_seconds = 0.1
    script = ("import os, pathlib; "
              "pathlib.Path('/'.join([os.environ['HOME'], 'data', 'out.txt']))"
              ".write_text(os.environ['SECRET'] + ' ' + os.environ['GREETING'])")
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "job", "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                "containers": [{
                    "name": "notebook", "image": "x", "command": ["python", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/home/jovyan/data"}],
                    "env": [
                        {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/"},
                        {"name": "SECRET", "valueFrom": {
                            "secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "GREETING", "value": "hi"},
                    ]}]},
        })
        deadline = time.monotonic() + 10
        while True:
            current = await kube.get("Pod", "job", "default")
            waiting = ((current["status"].get("containerStatuses") or [{}])[0]
                       .get("state", {}).get("waiting", {}))
            if waiting.get("reason") == "CreateContainerConfigError":
                break
            assert time.monotonic() < deadline, current["status"]
            await asyncio.sleep(0.02)
        assert waiting["message"] == 'secret "creds" not found'
        assert current["status"]["phase"] == "Pending"

        await kube.create({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "creds", "namespace": "default"},
                           "data": {"password": base64.b64encode(b"s3cret").decode()}})
        deadline = time.monotonic() + 10
        while (current := await kube.get("Pod", "job", "default"))["status"][
                "phase"] != "Succeeded":
            assert time.monotonic() < deadline, current["status"]
            await asyncio.sleep(0.05)
        # the claim's directory outlives the pod, like a volume
        out = cluster.kubelet.workdir / "volumes" / "default" / "data" / "out.txt"
        assert out.read_text() == "s3cret hi"


async def test_annotated_side_service_runs_as_a_process(make_local_cluster):
    from kdash_hub.localcluster.processes import RUN_AS_PROCESS

    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)

    def service(name: str, annotated: bool) -> dict:
        body = pod(name)
        body["metadata"]["annotations"] = {RUN_AS_PROCESS: "true"} if annotated else {}
        body["spec"]["containers"][0] |= {
            "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "POD_IP",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}
        return body

    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(service("real", annotated=True))
        await kube.create(service("pretend", annotated=False))
        deadline = time.monotonic() + 20
        while True:
            real = await kube.get("Pod", "real", "default")
            statuses = real["status"].get("containerStatuses") or [{}]
            if real["status"].get("phase") == "Running" and statuses[0]["ready"]:
                break
            assert time.monotonic() < deadline, real["status"]
            await asyncio.sleep(0.05)
        pretend = await running(kube, "pretend")
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{real['status']['podIP']}:8080/") as r:
                assert r.status == 200
            try:
                await http.get(f"http://{pretend['status']['podIP']}:8080/")
                raise AssertionError("a status-only pod should have no process behind it")
            except aiohttp.ClientConnectionError:
                pass
        log = cluster.kubelet.read_log("default", "real")
        assert '"GET / HTTP/1.1" 200' in log
        # what `kubectl logs real` reads: the API server asks the kubelet
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as http:
            async with http.get(f"{cluster.url}/api/v1/namespaces/default/pods/real/log") as r:
                assert r.status == 200 and '"GET / HTTP/1.1" 200' in await r.text()
        assert cluster.kubelet.read_log("default", "pretend") == ""
        assert cluster.kubelet.read_log("default", "nope") is None


async def test_jobs_complete_in_status_mode(local_cluster, kube):
    requires_emulator(local_cluster)
    await kube.create({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "namespace": "default"},
        "spec": {"completions": 2, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}},
    })
    deadline = time.monotonic() + 15
    while True:
        job = await kube.get("Job", "once", "default")
        conditions = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions", [])}
        if conditions.get("Complete") == "True":
            break
        assert time.monotonic() < deadline, job.get("status")
        await asyncio.sleep(0.05)
    assert job["status"]["succeeded"] == 2
    pods = await kube.list("Pod", "default", label_selector="job-name=once")
    assert [p["status"]["phase"] for p in pods] == ["Succeeded", "Succeeded"]
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


async def test_custom_scheduler_names_and_host_network(local_cluster, kube):
    requires_emulator(local_cluster)
    body = pod("user-sched")
    body["spec"]["schedulerName"] = "jupyterhub-user-scheduler"  # z2jh's userScheduler
    await kube.create(body)
    scheduled = await running(kube, "user-sched")
    events = await kube.list("Event", "default", field_selector="involvedObject.name=user-sched")
    assert events[0]["reason"] == "Scheduled"
    assert events[0]["source"]["component"] == "jupyterhub-user-scheduler"

    body = pod("host-net")
    body["spec"]["hostNetwork"] = True
    await kube.create(body)
    host_net = await running(kube, "host-net")
    assert host_net["status"]["podIP"] == host_net["status"]["hostIP"]
    assert scheduled["status"]["podIP"] != scheduled["status"]["hostIP"]
