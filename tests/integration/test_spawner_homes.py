"""Home directories on shared storage: per-user PVs, the admin-namespace Job, Pod Security."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.nodes import NodeSpec
from kdash_hub.spawner import bundle, homedir, storage
from tests.fixtures.cluster import admin_kubeconfig_of, api_client_for, requires_emulator
from tests.fixtures.spawner import build_spawner, spawner_requests

NFS = {"server": "10.0.0.5", "path": "/export/homes"}


def nfs_spawner(username: str, uid: int, **traits):
    # NFS homes need Pod Security `restricted` (below it any user could mount the export)
    traits.setdefault("pod_security_level", "restricted")
    return build_spawner(username=username, auth_state={"uid": uid, "gid": 3001},
                         storage_preset="nfs", nfs_storage=NFS, **traits)


def job_posts(log, start: int) -> list[str]:
    return [p for m, p, _ in list(log)[start:] if m == "POST" and "/jobs" in p]


async def test_each_home_is_made_by_an_admin_job_and_mounted_alone(local_cluster, kube):
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    alice, bob = nfs_spawner("alice", 2001), nfs_spawner("bob", 2002)
    n = len(log)
    await alice.start()
    hub_ns = alice.home_provisioner_namespace
    assert hub_ns == alice.hub_namespace != alice.namespace
    assert job_posts(log, n) == [f"/apis/batch/v1/namespaces/{hub_ns}/jobs"]
    events = [e["message"] async for e in alice.progress()]
    assert any("Creating your home directory alice (owner 2001:3001)" in m for m in events)
    assert await kube.get("Job", homedir.job_name("alice"), hub_ns) is None  # cleaned up
    await bob.start()

    pvs = {}
    for s in (alice, bob):
        pv = await kube.get("PersistentVolume", s._plan.pv["metadata"]["name"])
        pvs[s.user.name] = pv
        assert pv["spec"]["nfs"]["path"] == f"/export/homes/{storage.home_dir(s.user.name)}"
        assert pv["spec"]["claimRef"]["namespace"] == s.namespace
        assert pv["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == f"{s.uid}:3001"
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        assert not pod["spec"].get("initContainers")
        home = [v for v in pod["spec"]["volumes"] if v["name"] == storage.HOME_VOLUME]
        assert home == [{"name": "home", "persistentVolumeClaim": {"claimName": s.pvc_name}}]
        # nothing in the user's namespace reaches the export root
        for p in (await kube.list("Pod", s.namespace)):
            assert not any("nfs" in v or "hostPath" in v for v in p["spec"]["volumes"])
    assert pvs["alice"]["spec"]["nfs"]["path"] != pvs["bob"]["spec"]["nfs"]["path"]
    await bob.stop()
    await alice.stop()

    # a later start: no Job, no request for the home
    alice.clear_state()
    n = len(log)
    await alice.start()
    mine = spawner_requests(log, n, alice.namespace)
    assert mine == [("GET", f"/api/v1/namespaces/{alice.namespace}"),
                    ("POST", f"/api/v1/namespaces/{alice.namespace}/pods")]
    await alice.stop()
    # after a hub restart the PV's annotation says the home is made: still no Job
    again = nfs_spawner("alice", 2001)
    n = len(log)
    await again.start()
    assert job_posts(log, n) == []
    await again.stop()


@pytest.mark.parametrize("level", ["baseline", "restricted"])
async def test_inline_nfs_homes_are_refused(local_cluster, kube, level):
    """An inline NFS home is refused at every level: below `restricted` any user could
    mount the export, and `restricted` refuses the NFS volume in the notebook pod itself."""
    s = build_spawner(username=f"ida-{level}", auth_state={"uid": 2005, "gid": 3001},
                      storage_preset="nfs", nfs_storage={**NFS, "mode": "inline"},
                      pod_security_level=level)
    with pytest.raises(web.HTTPError) as e:
        await s.start()
    assert e.value.status_code == 500 and "Storage is misconfigured" in e.value.log_message
    assert ("needs pod_security_level `restricted`" if level == "baseline" else
            "use mode `pv`") in e.value.log_message
    assert await kube.get("Namespace", s.namespace) is None  # refused before anything is made


async def test_inline_mode_records_the_home_on_the_namespace(local_cluster, kube):
    requires_emulator(local_cluster)  # counts the Jobs in the emulator's request log
    log = local_cluster.api.request_log
    local = {"path": "/srv/homes", "type": "hostPath"}  # the inline home that is left
    s = build_spawner(username="ida", auth_state={"uid": 2005, "gid": 3001},
                      storage_preset="local", local_storage=local,
                      pod_security_level="privileged")
    await s.start()
    pod = await kube.get("Pod", s.pod_name, s.namespace)
    assert {"name": "home", "hostPath": {"path": "/srv/homes/ida", "type": "Directory"}} in \
        pod["spec"]["volumes"]
    ns = await kube.get("Namespace", s.namespace)
    assert ns["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == "2005:3001"
    await s.stop()
    n = len(log)
    fresh = build_spawner(username="ida", auth_state={"uid": 2005, "gid": 3001},
                          storage_preset="local", local_storage=local,
                          pod_security_level="privileged")
    await fresh.start()
    assert job_posts(log, n) == []
    await fresh.stop()


async def test_a_failing_home_job_fails_the_start_clearly(local_cluster, kube):
    s = nfs_spawner("fay", 2003, home_provisioner_timeout_seconds=0.3)
    try:
        with pytest.raises(Exception, match="home directory was not ready"):
            # the Job's pod cannot be scheduled on a node that does not exist
            s.load_user_options = _with_missing_node(s)
            await s.start()
    finally:  # the Job waits on (the next start would retry it): not for the next test
        await kube.delete("Job", homedir.job_name("fay"), s.home_provisioner_namespace,
                          propagation="Background")


def _with_missing_node(s):
    original = s.load_user_options

    async def load():
        await original()
        s._plan.node_selector = {"kubernetes.io/hostname": "no-such-node"}
    return load


async def test_restricted_namespace_refuses_pods_mounting_the_export_root(local_cluster, kube):
    s = nfs_spawner("rex", 2004, pod_security_level="restricted")
    try:
        await s.start()  # the notebook pod itself satisfies `restricted`
        ns = await kube.get("Namespace", s.namespace)
        assert ns["metadata"]["labels"][bundle.POD_SECURITY_LABEL] == "restricted"
        assert ns["metadata"]["labels"][bundle.POD_SECURITY_VERSION_LABEL] == "latest"
        for volume in ({"nfs": {"server": "10.0.0.5", "path": "/export/homes"}},
                       {"hostPath": {"path": "/export/homes"}}):
            evil = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "peek", "namespace": s.namespace},
                    "spec": {"containers": [{"name": "c", "image": "busybox",
                                             "volumeMounts": [{"name": "r", "mountPath": "/r"}]}],
                             "volumes": [{"name": "r", **volume}]}}
            with pytest.raises(ApiException) as err:
                await kube.create(evil)
            assert err.value.status == 403 and "restricted" in err.value.body
    finally:
        await s.stop()


async def test_default_level_is_baseline(local_cluster, kube):
    s = build_spawner(username="bea")
    try:
        await s.start()
        ns = await kube.get("Namespace", s.namespace)
        assert ns["metadata"]["labels"][bundle.POD_SECURITY_LABEL] == "baseline"
    finally:
        await s.stop()


# --- the home Job runs where the notebook will ------------------------------------------------

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# what z2jh's scheduling.userPods gives every user pod
USER_TOLERATION = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
                   "effect": "NoSchedule"}
PURPOSE = {"weight": 100, "preference": {"matchExpressions": [
    {"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]}}
A100 = {"slug": "a100", "display_name": "GPU A100",
        "gpu": {"resource": "nvidia.com/gpu", "counts": [1]},
        "node_selector": {"nvidia.com/gpu.product": "A100"}, "tolerations": [GPU_TOLERATION],
        # its home: a local PV on the (tainted) GPU node that has the disk
        "storage": {"preset": "local", "type": "local", "path": "/mnt/nvme/kdash",
                    "node": "gpu-1"}}


def test_pod_placement_takes_kubespawner_trait_forms():
    """Tolerations and affinity terms as KubeSpawner accepts them (a list or a dict of
    entries, camelCase or snake_case keys) become the API's JSON; empty parts are left out."""
    placement = homedir.pod_placement(
        node_selector={"disk": "ssd"},
        tolerations={"b": {"key": "k", "operator": "Exists", "toleration_seconds": 30},
                     "a": USER_TOLERATION},
        node_affinity_required=[{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["z1"]}]}],
        node_affinity_preferred=[PURPOSE])
    assert placement == {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [USER_TOLERATION,
                        {"key": "k", "operator": "Exists", "tolerationSeconds": 30}],
        "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [PURPOSE]}}}
    assert homedir.pod_placement(tolerations=[], node_affinity_required={}) == {}
    # the plan's node (a node-local home) is added to the notebook's selector
    plan = storage.plan_home("local", A100["storage"], username="ann", namespace="kdash-ann",
                             pvc_name="claim-ann", uid=1, gid=2, mount_path="/home/jovyan")
    job = homedir.home_job(plan, username="ann", namespace="hub", image="busybox", uid=1,
                           gid=2, placement=placement)
    spec = job["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"disk": "ssd", "kubernetes.io/hostname": "gpu-1"}
    assert spec["tolerations"] == placement["tolerations"]
    assert spec["affinity"] == placement["affinity"]
    assert placement["nodeSelector"] == {"disk": "ssd"}  # not changed in place


async def test_the_home_job_runs_on_the_tainted_gpu_node_the_notebook_gets(
        make_local_cluster, monkeypatch):
    """A GPU flavor whose home is node-local on a tainted GPU node: the home Job gets the
    notebook pod's tolerations (the spawner's and the flavor's GPU one), node selector and
    node affinity, so it runs there and the start finishes (without them it never schedules
    and the start fails after home_provisioner_timeout_seconds)."""
    cluster = await make_local_cluster(node_specs=[
        NodeSpec(name="node-0"),
        NodeSpec(name="gpu-1", extended={"nvidia.com/gpu": 4}, taints=[GPU_TAINT],
                 labels={"nvidia.com/gpu.product": "A100", "nvidia.com/gpu.present": "true"})])
    requires_emulator(cluster)  # its own nodes (a tainted GPU node with the home's disk)
    jobs: list[dict] = []
    run = homedir.run_home_job

    async def recording(kube, job, *args, **kwargs):
        jobs.append(job)
        return await run(kube, job, *args, **kwargs)

    monkeypatch.setattr(homedir, "run_home_job", recording)
    s = build_spawner(username="gina", auth_state={"uid": 2010, "gid": 3001},
                      user_options={"profile": "a100"}, flavors=[A100], gpu_cache_seconds=0,
                      quota={"requests.nvidia.com/gpu": "1"},
                      tolerations=[USER_TOLERATION], node_affinity_preferred=[PURPOSE],
                      home_provisioner_timeout_seconds=20)
    async with api_client_for(admin_kubeconfig_of(cluster)) as client:
        kube = KubeResources(client)
        try:
            await s.start()
            pod = await kube.get("Pod", s.pod_name, s.namespace)
            assert pod["spec"]["nodeName"] == "gpu-1"
            [job] = jobs
            spec = job["spec"]["template"]["spec"]
            assert spec["tolerations"] == pod["spec"]["tolerations"]
            assert USER_TOLERATION in spec["tolerations"]
            assert GPU_TOLERATION in spec["tolerations"]
            assert spec["nodeSelector"] == pod["spec"]["nodeSelector"] == {
                "nvidia.com/gpu.product": "A100", "kubernetes.io/hostname": "gpu-1"}
            assert spec["affinity"]["nodeAffinity"] == pod["spec"]["affinity"]["nodeAffinity"]
            pv = await kube.get("PersistentVolume", s._plan.pv["metadata"]["name"])
            assert pv["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == "2010:3001"
        finally:
            await s.stop()


async def test_a_user_cannot_move_the_home_job_with_options_of_their_own(local_cluster):
    """The home Job runs as root beside the export root: where it runs is the admin's
    (configuration and the chosen flavor), never the user's. Options a user adds to the
    spawn form (tolerations, a node selector, affinity) change nothing."""
    cpu = {"slug": "cpu", "display_name": "CPU", "tolerations": [USER_TOLERATION]}
    s = build_spawner(username="mallory", auth_state={"uid": 2011, "gid": 3001},
                      flavors=[cpu], storage_preset="nfs", nfs_storage=NFS,
                      pod_security_level="restricted", user_options={
                          "profile": "cpu", "tolerations": [{"operator": "Exists"}],
                          "node_selector": {"kubernetes.io/hostname": "control-plane"},
                          "node_affinity_required": [{"matchExpressions": []}],
                          "nodeSelector": {"x": "y"}})
    await s.load_user_options()
    assert homedir.spawner_placement(s) == {"tolerations": [USER_TOLERATION]}
