"""The local cluster's scheduler: fit, filters in upstream order, upstream wording."""

from decimal import Decimal

import pytest

from kdash_hub.localcluster.scheduler import (
    failure_message,
    parse_quantity,
    pod_requests,
    schedule,
)
from kdash_hub.taints import tolerates

GPU = "nvidia.com/gpu"


def node(name, cpu="8", memory="32Gi", pods="110", labels=None, taints=None, gpus=None):
    spec = {"taints": taints} if taints else {}
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods,
                                   **({GPU: gpus} if gpus else {})}},
    }


def pod(name="p", requests=None, limits=None, node_name=None, phase="Pending", **spec):
    containers = [{"name": "c", "image": "x",
                   "resources": {"requests": requests or {}, "limits": limits or {}}}]
    body = {"metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": containers, **spec}, "status": {"phase": phase}}
    if node_name:
        body["spec"]["nodeName"] = node_name
    return body


@pytest.mark.parametrize("text,value", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)),
    ("1G", Decimal(10**9)), ("1.5", Decimal("1.5")), ("1e3", Decimal(1000)), (4, Decimal(4)),
    ("100Ki", Decimal(102400)),
])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "1Zi", "--1"])
def test_parse_quantity_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_limits_stand_in_for_missing_requests_and_init_containers_take_the_max():
    p = pod(requests={"cpu": "500m"}, limits={"cpu": "1", GPU: "2", "memory": "1Gi"})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "3"}}}]
    assert pod_requests(p) == {"cpu": Decimal(3), GPU: Decimal(2),
                               "memory": Decimal(2**30), "pods": Decimal(1)}


def test_places_on_the_least_allocated_node():
    nodes = [node("a"), node("b")]
    busy = pod("other", requests={"cpu": "4"}, node_name="a", phase="Running")
    assert schedule(pod(requests={"cpu": "1"}), nodes, [busy]).node == "b"


def test_terminal_pods_free_their_resources():
    nodes = [node("a", cpu="1")]
    done = pod("done", requests={"cpu": "1"}, node_name="a", phase="Succeeded")
    assert schedule(pod(requests={"cpu": "1"}), nodes, [done]).node == "a"


def test_gpu_shortage_message_matches_upstream():
    nodes = [node("a", gpus="1"), node("b")]
    decision = schedule(pod(limits={GPU: "2"}), nodes, [])
    assert decision.node is None
    assert decision.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def test_mixed_reasons_are_counted_and_sorted():
    nodes = [
        node("a", cpu="1"),
        node("b", cpu="1", labels={"disk": "hdd"}),
        node("c", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        node("d", cpu="1"),
    ]
    p = pod(requests={"cpu": "2"}, nodeSelector={"disk": "ssd"})
    # a and d lack cpu, but NodeAffinity runs first: all 3 untainted nodes fail on it
    assert schedule(p, nodes, []).message == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
        "3 node(s) didn't match Pod's node affinity/selector."
    )
    del p["spec"]["nodeSelector"]
    assert schedule(p, nodes, []).message == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
        "3 Insufficient cpu."
    )


def test_node_selector_and_required_affinity_pick_the_gpu_product():
    nodes = [node("a", labels={"nvidia.com/gpu.product": "T4"}, gpus="4"),
             node("b", labels={"nvidia.com/gpu.product": "A100"}, gpus="4")]
    p = pod(limits={GPU: "1"}, nodeSelector={"nvidia.com/gpu.product": "A100"})
    assert schedule(p, nodes, []).node == "b"
    p = pod(limits={GPU: "1"}, affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "NotIn",
                                   "values": ["A100"]}]}]}}})
    assert schedule(p, nodes, []).node == "a"


def test_gpus_are_used_up_by_bound_pods():
    nodes = [node("a", gpus="4")]
    bound = [pod(f"p{i}", limits={GPU: "2"}, node_name="a", phase="Running") for i in range(2)]
    decision = schedule(pod(limits={GPU: "1"}), nodes, bound)
    assert decision.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert schedule(pod(limits={GPU: "1"}), nodes, bound[:1]).node == "a"


def test_pod_count_capacity():
    nodes = [node("a", pods="1")]
    bound = [pod("x", node_name="a", phase="Running")]
    assert schedule(pod(), nodes, bound).message == (
        "0/1 nodes are available: 1 Insufficient pods.")


def test_taints_and_tolerations():
    taint = {"key": GPU, "value": "present", "effect": "NoSchedule"}
    nodes = [node("gpu", taints=[taint])]
    assert schedule(pod(), nodes, []).node is None
    tolerant = pod(tolerations=[{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}])
    assert schedule(tolerant, nodes, []).node == "gpu"
    # PreferNoSchedule is only a preference
    soft = [node("soft", taints=[{"key": "k", "effect": "PreferNoSchedule"}])]
    assert schedule(pod(), soft, []).node == "soft"


@pytest.mark.parametrize("toleration,ok", [
    ({"operator": "Exists"}, True),
    ({"key": "k", "operator": "Exists"}, True),
    ({"key": "k", "value": "v"}, True),
    ({"key": "k", "value": "w"}, False),
    ({"key": "k", "value": "v", "effect": "NoExecute"}, False),
    ({"key": "other", "operator": "Exists"}, False),
])
def test_toleration_matching(toleration, ok):
    assert tolerates([toleration], {"key": "k", "value": "v", "effect": "NoSchedule"}) is ok


def test_unschedulable_nodes_and_empty_clusters():
    cordoned = node("a")
    cordoned["spec"]["unschedulable"] = True
    assert schedule(pod(), [cordoned], []).message == (
        "0/1 nodes are available: 1 node(s) were unschedulable.")
    assert failure_message(0, {}) == "no nodes available to schedule pods"


def test_a_cycle_counts_the_pods_it_placed():
    """Placement.place records each decision: the second GPU pod of a cycle goes to the
    other GPU node, the third finds none; decide() alone records nothing."""
    from kdash_hub.localcluster.scheduler import Placement

    nodes = [node("a", gpus="1"), node("b", gpus="1")]
    placement = Placement(nodes, [])
    assert placement.decide(pod(limits={GPU: "1"})).node == "a"
    assert placement.decide(pod(limits={GPU: "1"})).node == "a"
    assert [placement.place(pod(limits={GPU: "1"})).node for _ in range(2)] == ["a", "b"]
    assert placement.place(pod(limits={GPU: "1"})).message == (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")


def test_a_bound_pod_with_unreadable_requests_does_not_stop_placement():
    """Whatever got bound with requests this scheduler cannot parse counts as one pod slot
    on its node; every other pod is still placed (it was a ValueError for all of them)."""
    from kdash_hub.localcluster.scheduler import Placement

    odd = pod("odd", requests={"cpu": "lots"}, node_name="a")
    placement = Placement([node("a", pods="1"), node("b")], [odd])
    assert placement.place(pod(requests={"cpu": "1"})).node == "b"
    assert placement.used["a"]["pods"] == 1
