"""The kubelet as a client of the API: it survives dropped watches, 410s and API errors,
registers nodes like a real one, and frees resources for pending pods."""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp

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


async def failed_scheduling(kube: KubeResources, name: str, within: float = 10.0) -> list:
    deadline = time.monotonic() + within
    while True:
        events = await kube.list("Event", "default", field_selector=f"involvedObject.name={name}")
        if events:
            return [e["message"] for e in events if e["reason"] == "FailedScheduling"]
        assert time.monotonic() < deadline, f"no event for {name}"
        await asyncio.sleep(0.02)


async def test_pods_arriving_together_share_one_read_of_the_nodes(make_local_cluster):
    """The scheduler places the pods queued since its last cycle against one read of the
    nodes: twelve pods created at once while a read is slow cost a few reads, not twelve."""
    cluster = await make_local_cluster()
    requires_emulator(cluster)
    reads = cluster.api.faults.add("GET", r"^/api/v1/nodes$", status=None, latency=0.3,
                                   times=None)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        names = [f"together-{i}" for i in range(12)]
        await asyncio.gather(*(kube.create(pod(name)) for name in names))
        started = await asyncio.gather(*(running(kube, name) for name in names))
    assert {p["spec"]["nodeName"] for p in started} == {"node-0"}
    assert 1 <= reads.hits <= 3, reads.hits


async def test_pods_placed_in_one_cycle_count_against_each_other(make_local_cluster):
    """Two pods wanting the node's only GPU, placed in the same cycle: one gets it, the
    other waits with the scheduler's reason, as if they had come one after the other."""
    cluster = await make_local_cluster(gpus={"nvidia.com/gpu": 1})
    requires_emulator(cluster)
    cluster.api.faults.add("GET", r"^/api/v1/nodes$", status=None, latency=0.3, times=None)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(pod("opener"))  # the cycle the two GPU pods queue behind
        await asyncio.gather(kube.create(pod("gpu-a", **{"nvidia.com/gpu": "1"})),
                             kube.create(pod("gpu-b", **{"nvidia.com/gpu": "1"})))
        await running(kube, "opener")
        waiting = await asyncio.gather(failed_scheduling(kube, "gpu-a", within=3),
                                       failed_scheduling(kube, "gpu-b", within=3),
                                       return_exceptions=True)
        refused = [name for name, messages in zip(("gpu-a", "gpu-b"), waiting, strict=True)
                   if messages == ["0/1 nodes are available: 1 Insufficient nvidia.com/gpu."]]
        assert len(refused) == 1, waiting
        winner = ({"gpu-a", "gpu-b"} - set(refused)).pop()
        assert (await running(kube, winner))["spec"]["nodeName"] == "node-0"
        loser = await kube.get("Pod", refused[0], "default")
        assert loser["status"]["phase"] == "Pending" and not loser["spec"].get("nodeName")


async def test_a_pod_the_scheduler_cannot_read_waits_alone(make_local_cluster, monkeypatch):
    """One pod whose placement fails (a user's pod this scheduler cannot read) does not fail
    the cycle it shares with others: it waits with the reason, the others are bound."""
    from kdash_hub.localcluster import kubelet as kubelet_module

    place = kubelet_module.Placement.place

    def place_or_fail(self, pod_obj):
        if pod_obj["metadata"]["name"] == "unreadable":
            raise ValueError("quantities must match the regular expression")
        return place(self, pod_obj)

    monkeypatch.setattr(kubelet_module.Placement, "place", place_or_fail)
    cluster = await make_local_cluster()
    requires_emulator(cluster)
    cluster.api.faults.add("GET", r"^/api/v1/nodes$", status=None, latency=0.3, times=None)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(pod("opener"))  # the cycle the next three queue behind
        await asyncio.gather(*(kube.create(pod(name))
                               for name in ("before", "unreadable", "after")))
        for name in ("opener", "before", "after"):
            await running(kube, name)
        assert await failed_scheduling(kube, "unreadable") == [
            "the pod's resource requests cannot be read: quantities must match the "
            "regular expression"]
        assert not (await kube.get("Pod", "unreadable", "default"))["spec"].get("nodeName")


def secret_pod(name: str) -> dict:
    body = pod(name)
    body["spec"]["volumes"] = [{"name": "files", "secret": {"secretName": "files"}}]
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "files", "mountPath": "/files"}]
    return body


async def test_a_refused_secret_read_is_asked_again_within_the_set_up(make_local_cluster,
                                                                      caplog):
    """Beside a real API server the Node authorizer can refuse a pod's Secret for a moment
    after the binding (its graph follows the pod's watch): the kubelet asks again at once
    instead of failing the pod's set-up and backing off. A refusal that lasts still fails
    the set-up, and the pod is not shown running."""
    cluster = await make_local_cluster()
    requires_emulator(cluster)
    faults = cluster.api.faults
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "files", "namespace": "default"},
                           "stringData": {"a": "b"}})
        lag = faults.add("GET", r"/namespaces/default/secrets/files$", status=403,
                         message="no relationship found between node 'node-0' and this "
                                 "object", times=2)
        with caplog.at_level("ERROR", logger="kdash_hub.localcluster.kubelet"):
            await kube.create(secret_pod("lagged"))
            await running(kube, "lagged")
        assert lag.hits == 2
        assert not [r for r in caplog.records if "handling pod" in r.getMessage()]

        faults.add("GET", r"/namespaces/default/secrets/files$", status=403, times=None)
        with caplog.at_level("ERROR", logger="kdash_hub.localcluster.kubelet"):
            await kube.create(secret_pod("refused"))
            deadline = time.monotonic() + 10
            while not [r for r in caplog.records
                       if "handling pod default/refused failed" in r.getMessage()]:
                assert time.monotonic() < deadline, "the lasting refusal was not a failure"
                await asyncio.sleep(0.05)
        refused = await kube.get("Pod", "refused", "default")
        assert refused["status"].get("phase") != "Running"


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
            # without it a real kubelet (and ours) says Ready as soon as the process starts
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
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


# --- parity with a real kubelet (issue 10) ---------------------------------------------


def process_pod(name: str, script: str, *, restart: str = "Never", **container) -> dict:
    """A pod whose one container runs `python -c script` as a real process."""
    from kdash_hub.localcluster.processes import RUN_AS_PROCESS

    body = pod(name)
    body["metadata"]["annotations"] = {RUN_AS_PROCESS: "true"}
    body["spec"]["restartPolicy"] = restart
    body["spec"]["containers"][0] |= {"command": ["python", "-c", script], **container}
    return body


async def until(check, within: float = 15.0, interval: float = 0.05):
    """Poll the async `check` until it gives something true; that value."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def events_of(kube: KubeResources, name: str) -> list[dict]:
    return await kube.list("Event", "default", field_selector=f"involvedObject.name={name}")


async def fast_process_cluster(make_local_cluster):
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    cluster.kubelet.retry_seconds = 0.2
    cluster.kubelet.backoff_seconds = 0.4
    return cluster


async def test_missing_config_map_volume_waits_with_a_failed_mount_event(local_cluster, kube):
    requires_emulator(local_cluster)
    local_cluster.kubelet.retry_seconds = 0.2
    body = pod("needs-cm")
    body["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "app-settings"}},
                               {"name": "opt", "secret": {"secretName": "nope",
                                                          "optional": True}}]
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "settings",
                                                      "mountPath": "/etc/app"}]
    await kube.create(body)

    async def mount_failures():
        events = [e for e in await events_of(kube, "needs-cm") if e["reason"] == "FailedMount"]
        return events if events and events[0].get("count", 1) >= 2 else None
    failures = await until(mount_failures)
    assert len(failures) == 1 and failures[0]["type"] == "Warning"  # counted up, not repeated
    assert failures[0]["message"] == ('MountVolume.SetUp failed for volume "settings" : '
                                      'configmap "app-settings" not found')
    waiting = await kube.get("Pod", "needs-cm", "default")
    status = waiting["status"]
    assert status["phase"] == "Pending" and "podIP" not in status
    [cs] = status["containerStatuses"]
    assert cs["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert cs["started"] is False and cs["ready"] is False
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PodReadyToStartContainers"]["status"] == "False"
    assert conditions["Ready"]["message"] == "containers with unready status: [main]"

    await kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "app-settings", "namespace": "default"},
                       "data": {"mode": "prod"}})
    started = await running(kube, "needs-cm")
    assert started["status"]["containerStatuses"][0]["ready"] is True
    assert started["status"]["podIP"]


async def test_env_from_a_missing_secret_is_a_config_error_in_status_mode(local_cluster, kube):
    requires_emulator(local_cluster)
    local_cluster.kubelet.retry_seconds = 0.2
    body = pod("needs-secret")
    body["spec"]["containers"][0]["env"] = [{"name": "PW", "valueFrom": {
        "secretKeyRef": {"name": "db", "key": "password"}}}]
    await kube.create(body)

    async def config_error():
        current = await kube.get("Pod", "needs-secret", "default")
        cs = (current["status"].get("containerStatuses") or [{}])[0]
        return cs if "waiting" in cs.get("state", {}) and cs["state"]["waiting"][
            "reason"] == "CreateContainerConfigError" else None
    cs = await until(config_error)
    assert cs["state"]["waiting"]["message"] == 'secret "db" not found'
    assert cs["started"] is False
    failed = [e for e in await events_of(kube, "needs-secret") if e["reason"] == "Failed"]
    assert failed[0]["message"] == 'Error: secret "db" not found'
    await kube.create({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "db", "namespace": "default"},
                       "data": {"password": base64.b64encode(b"pw").decode()}})
    await running(kube, "needs-secret")


async def test_sub_path_mounts_one_file_of_a_config_map_and_a_secret(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "cfg", "namespace": "default"},
                           "data": {"app.ini": "[app]\nmode = prod\n", "other": "x"}})
        await kube.create({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "tls", "namespace": "default"},
                           "data": {"key.pem": base64.b64encode(b"SECRET-KEY").decode()}})
        script = ("import os; print(open('app.ini').read().strip()); "
                  "print(open('keys/server.pem').read()); print(sorted(os.listdir('.')))")
        body = process_pod("subpath", script, workingDir="/etc/app", volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/app/app.ini", "subPath": "app.ini"},
            {"name": "tls", "mountPath": "/etc/app/keys/server.pem", "subPath": "key.pem"}])
        body["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}},
                                   {"name": "tls", "secret": {"secretName": "tls"}}]
        await kube.create(body)

        async def done():
            current = await kube.get("Pod", "subpath", "default")
            return current if current["status"].get("phase") in ("Succeeded",
                                                                  "Failed") else None
        finished = await until(done, within=20)
        assert finished["status"]["phase"] == "Succeeded", finished["status"]
        log = cluster.kubelet.read_log("default", "subpath")
        assert log.splitlines() == ["[app]", "mode = prod", "SECRET-KEY",
                                    "['app.ini', 'keys']"], log


async def test_crashing_container_is_restarted_then_backs_off(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        created = await kube.create(process_pod(
            "crash", "import sys; print('boom'); sys.exit(2)", restart="Always"))
        uid = created["metadata"]["uid"]

        async def backing_off():
            current = await kube.get("Pod", "crash", "default")
            cs = (current["status"].get("containerStatuses") or [{}])[0]
            waiting = cs.get("state", {}).get("waiting", {})
            return (current, cs) if waiting.get("reason") == "CrashLoopBackOff" and cs[
                "restartCount"] >= 2 else None
        current, cs = await until(backing_off, within=20)
        assert current["status"]["phase"] == "Running"  # restarting, as a real kubelet says
        assert cs["ready"] is False and cs["started"] is False
        assert cs["lastState"]["terminated"]["exitCode"] == 2
        assert cs["lastState"]["terminated"]["reason"] == "Error"
        assert cs["state"]["waiting"]["message"].startswith("back-off ")
        assert cs["state"]["waiting"]["message"].endswith(
            f" restarting failed container=main pod=crash_default({uid})")
        ready = {c["type"]: c["status"] for c in current["status"]["conditions"]}["Ready"]
        assert ready == "False"
        backoffs = [e for e in await events_of(kube, "crash") if e["reason"] == "BackOff"]
        assert backoffs[0]["type"] == "Warning"
        assert backoffs[0]["message"] == (f"Back-off restarting failed container main in pod "
                                          f"crash_default({uid})")
        # the previous instance's output is still there
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as http:
            url = f"{cluster.url}/api/v1/namespaces/default/pods/crash/log"
            async with http.get(url, params={"previous": "true"}) as r:
                assert r.status == 200 and await r.text() == "boom\n"


async def test_restart_policies_never_and_on_failure(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(process_pod("never", "import sys; sys.exit(1)", restart="Never"))
        await kube.create(process_pod("ok", "print('done')", restart="OnFailure"))
        await kube.create(process_pod(
            "retry", "import os, sys; p = 'ran'; first = not os.path.exists(p); "
                     "open(p, 'a').close(); sys.exit(1 if first else 0)",
            restart="OnFailure"))

        async def phase(name: str, want: str):
            current = await kube.get("Pod", name, "default")
            return current if current["status"].get("phase") == want else None
        never = await until(lambda: phase("never", "Failed"))
        [cs] = never["status"]["containerStatuses"]
        assert cs["restartCount"] == 0 and cs["state"]["terminated"]["exitCode"] == 1
        ok = await until(lambda: phase("ok", "Succeeded"))
        assert ok["status"]["containerStatuses"][0]["restartCount"] == 0
        retried = await until(lambda: phase("retry", "Succeeded"))
        [cs] = retried["status"]["containerStatuses"]
        assert cs["restartCount"] == 1
        assert cs["lastState"]["terminated"]["exitCode"] == 1
        assert cs["state"]["terminated"]["reason"] == "Completed"


async def test_readiness_probes_decide_ready(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    serve = ("import http.server, os; http.server.ThreadingHTTPServer("
             "(os.environ['POD_IP'], 8080), http.server.SimpleHTTPRequestHandler"
             ").serve_forever()")
    pod_ip = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]

    def server(name: str, probe: dict) -> dict:
        return process_pod(name, serve, restart="Always", env=pod_ip,
                           ports=[{"containerPort": 8080, "name": "web"}],
                           readinessProbe={**probe, "periodSeconds": 1})

    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(server("good", {"httpGet": {"path": "/", "port": "web"}}))
        await kube.create(server("bad-path", {"httpGet": {"path": "/nope", "port": 8080}}))
        await kube.create(server("closed", {"tcpSocket": {"port": 9}}))
        await kube.create(server("exec", {"exec": {"command": [
            "python", "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]}}))

        async def ready(name: str):
            current = await kube.get("Pod", name, "default")
            cs = (current["status"].get("containerStatuses") or [{}])[0]
            return current if cs.get("ready") else None
        good = await until(lambda: ready("good"))
        assert {c["type"]: c["status"] for c in good["status"]["conditions"]}["Ready"] == "True"

        async def unhealthy(name: str, message: str):
            events = [e for e in await events_of(kube, name) if e["reason"] == "Unhealthy"]
            return [e for e in events if e["message"] == message] or None
        bad = await until(lambda: unhealthy(
            "bad-path", "Readiness probe failed: HTTP probe failed with statuscode: 404"))
        assert bad[0]["type"] == "Warning"
        ip = (await kube.get("Pod", "closed", "default"))["status"]["podIP"]
        await until(lambda: unhealthy(
            "closed", f"Readiness probe failed: dial tcp {ip}:9: connect: connection refused"))
        for name in ("bad-path", "closed", "exec"):
            current = await kube.get("Pod", name, "default")
            assert current["status"]["phase"] == "Running"
            assert current["status"]["containerStatuses"][0]["ready"] is False, name
        # the exec probe passes once the container's directory holds `ready`
        run = cluster.kubelet.runs["default/exec"]
        (run.runners["main"].cwd / "ready").write_text("")
        await until(lambda: ready("exec"))


async def test_liveness_probe_failure_restarts_the_container(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(process_pod(
            "dead", "import time; time.sleep(60)", restart="Always",
            livenessProbe={"tcpSocket": {"port": 9}, "periodSeconds": 1,
                           "failureThreshold": 1}))

        async def restarted():
            current = await kube.get("Pod", "dead", "default")
            cs = (current["status"].get("containerStatuses") or [{}])[0]
            return cs if cs.get("restartCount", 0) >= 1 else None
        cs = await until(restarted, within=20)
        assert cs["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM
        killing = [e["message"] for e in await events_of(kube, "dead")
                   if e["reason"] == "Killing"]
        assert "Container main failed liveness probe, will be restarted" in killing


async def test_logs_follow_streams_until_the_container_ends(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    script = ("import sys, time\n"
              "for i in range(6):\n"
              "    print(f'line {i}', flush=True); print(f'err {i}', file=sys.stderr, "
              "flush=True); time.sleep(0.3)\n")
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(process_pod("talker", script))
        url = f"{cluster.url}/api/v1/namespaces/default/pods/talker/log"
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as http:
            async def started():
                async with http.get(url) as r:
                    return r.status == 200 and "line 0" in await r.text()
            await until(started)
            began = time.monotonic()
            arrivals = []
            async with http.get(url, params={"follow": "true"}) as r:
                assert r.status == 200
                assert r.headers.get("Transfer-Encoding") == "chunked"
                async for chunk in r.content.iter_any():
                    arrivals.append((time.monotonic() - began, chunk.decode()))
            text = "".join(c for _, c in arrivals)
            assert [f"line {i}" for i in range(6)] == [
                line for line in text.splitlines() if line.startswith("line")]
            assert len(arrivals) >= 3 and arrivals[-1][0] - arrivals[0][0] > 0.5  # streamed
            phase = (await kube.get("Pod", "talker", "default"))["status"]["phase"]
            assert phase == "Succeeded"  # the stream ended with the container
            async with http.get(url, params={"tailLines": "2"}) as r:
                assert (await r.text()).splitlines() == ["line 5", "err 5"]
            async with http.get(url, params={"timestamps": "true", "limitBytes": "200"}) as r:
                first = (await r.text()).splitlines()[0]
                assert first.endswith(" line 0") and first[:4].isdigit() and "T" in first
            async with http.get(url, params={"sinceSeconds": "3600"}) as r:
                assert len((await r.text()).splitlines()) == 12
            async with http.get(url, params={"previous": "true"}) as r:
                body = await r.json()
                assert (r.status, body["reason"]) == (400, "BadRequest")
                assert body["message"] == ('previous terminated container "main" in pod '
                                           '"talker" not found')
            async with http.get(url, params={"tailLines": "-1"}) as r:
                assert r.status == 422


async def test_follow_ends_when_the_client_leaves(make_local_cluster):
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(process_pod(
            "forever", "import time\nwhile True:\n    print('tick', flush=True); "
                       "time.sleep(0.1)\n"))
        url = f"{cluster.url}/api/v1/namespaces/default/pods/forever/log"
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer x"}) as http:
            async def ticking():
                async with http.get(url) as r:
                    return r.status == 200 and "tick" in await r.text()
            await until(ticking)
            async with http.get(url, params={"follow": "true"}) as r:
                await r.content.readline()
        # the server noticed: no follower is left behind
        await asyncio.sleep(0.5)
        tasks = [t for t in asyncio.all_tasks() if "serve_log" in repr(t.get_coro())]
        assert not tasks


async def test_kubectl_exec_runs_the_command_in_the_container(make_local_cluster):
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        raise AssertionError("kubectl (Debian's kubernetes-client) is needed for this test")
    cluster = await fast_process_cluster(make_local_cluster)
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(process_pod("shell", "import time; time.sleep(120)",
                                      restart="Always", workingDir="/srv",
                                      env=[{"name": "GREETING", "value": "hello"}]))
        await kube.create(pod("static"))

        async def running_process():
            current = await kube.get("Pod", "shell", "default")
            cs = (current["status"].get("containerStatuses") or [{}])[0]
            return current if "running" in cs.get("state", {}) else None
        shell = await until(running_process)
        await running(kube, "static")

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig_path),
                                   *args], capture_output=True, text=True, input=stdin,
                                  timeout=60)

        r = await asyncio.to_thread(
            kubectl, "exec", "shell", "--", "sh", "-c",
            'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3')
        assert r.returncode == 3, r.stderr
        assert r.stdout.strip().startswith("hello from ")
        assert r.stdout.strip().endswith("/srv")
        assert "oops" in r.stderr
        r = await asyncio.to_thread(kubectl, "exec", "-i", "shell", "--", "cat",
                                    stdin="piped through\n")
        assert (r.returncode, r.stdout) == (0, "piped through\n"), r.stderr
        ip = shell["status"]["podIP"]
        r = await asyncio.to_thread(
            kubectl, "exec", "shell", "--", "python", "-c",
            "import socket, sys; s = socket.create_connection(sys.argv[1:3]); "
            "print(s.getsockname()[0])", *cluster.url.split("//")[1].split(":"))
        assert r.stdout.strip() == ip, r.stderr  # connections leave from the pod's address
        r = await asyncio.to_thread(kubectl, "exec", "static", "--", "true")
        assert r.returncode != 0 and "status only" in r.stderr


async def test_a_slow_event_write_never_delays_a_pods_start(local_cluster, kube):
    """Events are recorded, not awaited, as a real kubelet's recorder does: with every
    Event write taking 3 s, a pod is still bound and Running at once, and its Events
    come afterwards, in order."""
    requires_emulator(local_cluster)  # the emulator's fault injection
    slow = local_cluster.api.faults.add("POST", r"/namespaces/default/events$", status=None,
                                        times=None, latency=3.0)
    try:
        await kube.create(pod("unhurried"))
        await running(kube, "unhurried", within=2.0)
        assert await events_of(kube, "unhurried") == []  # still on their way
    finally:
        local_cluster.api.faults.remove(slow)

    async def all_events():
        events = await events_of(kube, "unhurried")
        return events if events and events[-1]["reason"] == "Started" else None
    reasons = [e["reason"] for e in await until(all_events, within=20.0)]
    # the image is pulled on the node's first pod of it, "already present" after that
    assert reasons in (["Scheduled", "Pulling", "Pulled", "Created", "Started"],
                       ["Scheduled", "Pulled", "Created", "Started"])
