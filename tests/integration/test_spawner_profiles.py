"""GPU flavors, availability and rejection, profile storage and uid/gid on the local cluster."""

from __future__ import annotations

import pytest
from tornado import web

from kdash_hub.spawner import homedir, storage
from tests.fixtures.spawner import build_spawner

GPU = {"slug": "gpu", "display_name": "GPU A100",
       "gpu": {"resource": "nvidia.com/gpu", "counts": [1, 2, 4, 8]},
       "node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
       "groups": ["ml"], "idle_timeout": 1800}
CPU = {"slug": "cpu", "display_name": "CPU", "default": True, "cpu_limit": 1}
GPU_QUOTA = {"ml": {"requests.nvidia.com/gpu": "4"}}


def gpu_spawner(username, groups=("ml",), **kw):
    traits = dict(flavors=[CPU, GPU], group_quotas=GPU_QUOTA, gpu_cache_seconds=0)
    traits.update(kw)
    return build_spawner(username=username, groups=list(groups), **traits)


async def gpu_nodes(kube) -> dict[str, int]:
    """nvidia.com/gpu allocatable of each node the GPU flavor selects, read from the cluster
    (the emulator's one node of 4, or the real tier's shared cluster); no pod may hold any
    of them when a test starts (a test that left one running would be a bug)."""
    nodes = [n for n in await kube.list("Node")
             if n["metadata"].get("labels", {}).get("nvidia.com/gpu.present") == "true"]
    held = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in await kube.list(
        "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed")
        if any("nvidia.com/gpu" in (c.get("resources") or {}).get("limits", {})
               for c in p["spec"]["containers"])]
    assert not held, f"GPU pods left running by another test: {held}"
    return {n["metadata"]["name"]: int(n["status"]["allocatable"]["nvidia.com/gpu"])
            for n in nodes}


def free_note(per_node: dict[str, int]) -> str:
    total, largest = sum(per_node.values()), max(per_node.values())
    return f"{total} NVIDIA GPUs free now" + ("" if largest == total else
                                       f", at most {largest} per server")


async def test_gpu_profiles_show_free_gpus_and_refuse_what_is_not_free(gpu_cluster):
    _, kube = gpu_cluster
    per_node = await gpu_nodes(kube)
    assert max(per_node.values()) >= 2, per_node
    a = gpu_spawner("ann", user_options={"profile": "gpu", "gpus": "2"})
    listed = await a._flavor_profiles()
    assert [p["slug"] for p in listed] == ["cpu", "gpu"]
    assert free_note(per_node) in listed[1]["description"]
    try:
        await a.start()
        pod = await kube.get("Pod", a.pod_name, a.namespace)
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "2"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
            pod["spec"]["tolerations"]
        assert pod["metadata"]["annotations"]["kdash-hub.io/idle-timeout"] == "1800"

        # ann's 2 are gone from the node her pod runs on
        per_node[pod["spec"]["nodeName"]] -= 2
        largest = max(per_node.values())
        more = min(c for c in GPU["gpu"]["counts"] if c > largest)
        b = gpu_spawner("ben", user_options={"profile": "gpu", "gpus": str(more)})
        assert free_note(per_node) in (await b._flavor_profiles())[1]["description"]
        with pytest.raises(web.HTTPError) as e:
            await b.start()
        assert e.value.status_code == 400
        assert f"only {largest} are free" in e.value.log_message
    finally:
        await a.stop()


async def test_gpu_over_quota_and_not_allowed(gpu_cluster):
    _, kube = gpu_cluster
    assert max((await gpu_nodes(kube)).values()) >= 4  # so 4 are refused by the quota alone
    over = gpu_spawner("cal", user_options={"profile": "gpu", "gpus": "4"},
                       group_quotas={"ml": {"requests.nvidia.com/gpu": "2"}})
    with pytest.raises(web.HTTPError) as e:
        await over.start()
    assert e.value.status_code == 403
    assert e.value.jupyterhub_message == (
        "This server would go over your quota: it asks for 4 NVIDIA GPUs (your quota is 2); "
        "choose a smaller profile, stop other things in your namespace, or ask an admin for "
        "more.")
    outsider = gpu_spawner("dee", groups=(), user_options={"profile": "gpu"})
    assert [p["slug"] for p in await outsider._flavor_profiles()] == ["cpu"]
    with pytest.raises(web.HTTPError) as e:
        await outsider.start()
    assert e.value.status_code == 403
    assert e.value.jupyterhub_message == (
        "The profile GPU A100 is for the group ml, and you are not a member: choose another "
        "profile, or ask an admin to add you.")


async def test_profile_storage_reaches_the_cluster(local_cluster, kube):
    flavors = [CPU, {"slug": "nfs-home", "display_name": "NFS home",
                     "storage": {"preset": "nfs", "server": "10.1.2.3", "path": "/homes"}}]
    # NFS homes need Pod Security `restricted` (below it any user could mount the export)
    s = build_spawner(username="a.b", flavors=flavors, auth_state={"uid": 4242, "gid": 4343},
                      user_options={"profile": "nfs-home"}, pod_security_level="restricted")
    try:
        await s.start()
        pvc = await kube.get("PersistentVolumeClaim", s.pvc_name, s.namespace)
        assert s.pvc_name != "claim-a-b" or pvc["spec"].get("volumeName")
        pv = await kube.get("PersistentVolume", pvc["spec"]["volumeName"])
        home = storage.home_dir("a.b")
        assert pv["spec"]["nfs"] == {"server": "10.1.2.3", "path": f"/homes/{home}"}
        assert pv["spec"]["claimRef"]["namespace"] == s.namespace
        assert pv["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == "4242:4343"
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        assert not pod["spec"].get("initContainers")
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert (env["NB_UID"], env["NB_GID"]) == ("4242", "4343")
        await s.stop()
        # the default (dynamic) storage on the next start: its own claim, not the NFS one
        s.user_options = {"profile": "cpu"}
        s.clear_state()
        await s.start()
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [s.pvc_name] and s.pvc_name != pvc["metadata"]["name"]
    finally:
        await s.stop()
