"""spawner/servers.py's pieces: which homes tie a user's servers to one node, the pod
affinity that does it, and why a flavor can't join the node holding the home."""

from __future__ import annotations

from kubernetes_asyncio.client.models import (
    V1Affinity,
    V1NodeAffinity,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
)

from kdash_hub.kube import to_json
from kdash_hub.spawner import servers

GPU_NODE = {"metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.present": "true",
                                                      "kubernetes.io/hostname": "gpu-0"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}


def test_only_homes_without_a_shared_mode_tie_servers_to_one_node():
    assert servers.one_node(["ReadWriteOnce"])
    assert servers.one_node(["ReadWriteOncePod"])
    assert not servers.one_node(["ReadWriteMany"])
    assert not servers.one_node(["ReadWriteOnce", "ReadOnlyMany"])


def test_colocate_adds_a_term_and_keeps_what_the_pod_had():
    pod = V1Pod(metadata=V1ObjectMeta(labels={"component": "singleuser-server"}),
                spec=V1PodSpec(containers=[], affinity=V1Affinity(
                    node_affinity=V1NodeAffinity())))
    servers.colocate(pod, "claim-a.b")
    body = to_json(pod)
    assert body["metadata"]["labels"] == {"component": "singleuser-server",
                                          servers.HOME_CLAIM_LABEL: "claim-a.b"}
    assert "nodeAffinity" in body["spec"]["affinity"]
    assert body["spec"]["affinity"]["podAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {servers.HOME_CLAIM_LABEL: "claim-a.b"}},
            "topologyKey": "kubernetes.io/hostname"}]}


def test_why_a_flavor_cannot_join_the_node():
    gpu_tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert servers.misfit(GPU_NODE, {"nvidia.com/gpu.present": "true"}, gpu_tolerations) \
        is None
    assert servers.misfit(GPU_NODE, {}, [{"operator": "Exists"}]) is None
    assert servers.misfit(GPU_NODE, {}, []) == (
        "that node is tainted nvidia.com/gpu and the profile does not tolerate it")
    # a toleration of another effect, or of another value, does not count
    assert servers.misfit(GPU_NODE, {}, [{"key": "nvidia.com/gpu", "operator": "Exists",
                                          "effect": "NoExecute"}])
    tainted = {"metadata": {"labels": {}}, "spec": {"taints": [
        {"key": "team", "value": "a", "effect": "NoSchedule"}]}}
    assert servers.misfit(tainted, {}, [{"key": "team", "value": "b"}])
    assert servers.misfit(tainted, {}, [{"key": "team", "value": "a"}]) is None
    cpu_node = {"metadata": {"labels": {"kubernetes.io/hostname": "cpu-0"}}, "spec": {}}
    assert servers.misfit(cpu_node, {"nvidia.com/gpu.present": "true"}, gpu_tolerations) == (
        "its node selector does not match that node")
    # PreferNoSchedule does not keep a pod away
    soft = {"metadata": {"labels": {}}, "spec": {"taints": [
        {"key": "x", "effect": "PreferNoSchedule"}]}}
    assert servers.misfit(soft, {}, []) is None


def test_others_holding_are_the_users_other_live_pods_with_the_claim():
    def pod(name, ns="kdash-a", claim="claim-a", phase="Running"):
        return {"metadata": {"name": name, "namespace": ns,
                             "labels": {servers.HOME_CLAIM_LABEL: claim}},
                "status": {"phase": phase}}
    pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in (
        pod("jupyter-a"), pod("jupyter-a--gpu"), pod("jupyter-a--old", phase="Succeeded"),
        pod("jupyter-b", ns="kdash-b"), pod("jupyter-a--x", claim="claim-other"))}
    held = servers.others_holding(pods, "kdash-a", "claim-a", "jupyter-a--gpu")
    assert [p["metadata"]["name"] for p in held] == ["jupyter-a"]
    # a pod the user made with the same labels is not one of the hub's servers
    pods["kdash-a/fake"] = pod("fake")
    held = servers.others_holding(pods, "kdash-a", "claim-a", "jupyter-a--gpu",
                                  ["jupyter-a"])
    assert [p["metadata"]["name"] for p in held] == ["jupyter-a"]
