"""Where does a pod fit? The default scheduler's filters, as pure functions.

The emulated kubelet binds unscheduled pods with these. They follow the real scheduler's
filter plugins in its order (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit), stop at the first failing one per node, and word the "no fit" message
the way `kubectl describe` shows it, e.g. `0/2 nodes are available: 2 Insufficient
nvidia.com/gpu.` Scoring is "least allocated": among the nodes that fit, the emptiest wins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from kdash_hub import taints
from kdash_hub.quantities import parse_quantity

TERMINAL_PHASES = ("Succeeded", "Failed")


def _container_requests(container: Mapping) -> dict[str, Decimal]:
    """A container's requests; a resource with only a limit requests its limit (API defaulting)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(q) for name, q in merged.items()}


def pod_requests(pod: Mapping) -> dict[str, Decimal]:
    """What a pod asks of a node: the sum over containers, or the largest init container
    when that is bigger (they run one at a time, before the others), plus one pod slot."""
    spec = pod.get("spec") or {}
    total: Counter = Counter()
    for container in spec.get("containers") or []:
        total.update(_container_requests(container))
    for container in spec.get("initContainers") or []:
        for name, q in _container_requests(container).items():
            total[name] = max(total[name], q)
    for name, q in ((spec.get("overhead") or {}).items()):
        total[name] += parse_quantity(q)
    total["pods"] = Decimal(1)
    return dict(total)


def _match_expression(labels: Mapping[str, str], expr: Mapping) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def _node_fields(node: Mapping) -> dict[str, str]:
    return {"metadata.name": node.get("metadata", {}).get("name", "")}


def matches_node_affinity(pod: Mapping, node: Mapping) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution node affinity."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if not required:
        return True
    fields = _node_fields(node)
    # terms are ORed; the expressions inside one term are ANDed
    for term in required.get("nodeSelectorTerms") or []:
        exprs = term.get("matchExpressions") or []
        field_exprs = term.get("matchFields") or []
        if not exprs and not field_exprs:
            continue
        if all(_match_expression(labels, e) for e in exprs) and all(
            _match_expression(fields, e) for e in field_exprs
        ):
            return True
    return False


def untolerated_taint(pod: Mapping, node: Mapping) -> Mapping | None:
    """The first NoSchedule/NoExecute taint of the node that the pod does not tolerate."""
    return taints.untolerated_taint((pod.get("spec") or {}).get("tolerations") or [], node)


def allocatable(node: Mapping) -> dict[str, Decimal]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {name: parse_quantity(q) for name, q in alloc.items()}


def insufficient(pod: Mapping, node: Mapping, used: Mapping[str, Decimal]) -> list[str]:
    """Resources the node lacks for the pod (NodeResourcesFit), e.g. ["cpu", "nvidia.com/gpu"]."""
    alloc = allocatable(node)
    missing = []
    for name, want in sorted(pod_requests(pod).items()):
        if want <= 0:
            continue
        if used.get(name, Decimal(0)) + want > alloc.get(name, Decimal(0)):
            missing.append(name)
    return missing


def filter_node(pod: Mapping, node: Mapping, used: Mapping[str, Decimal]) -> list[str]:
    """Why the pod can't go on the node ([] when it can), in the real scheduler's words."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable") and not taints.tolerates(
        (pod.get("spec") or {}).get("tolerations") or [],
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
    ):
        return ["node(s) were unschedulable"]
    taint = untolerated_taint(pod, node)
    if taint is not None:
        value = taint.get("value")
        shown = f"{taint.get('key')}: {value}" if value else taint.get("key")
        return [f"node(s) had untolerated taint {{{shown}}}"]
    if not matches_node_affinity(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    return [f"Insufficient {name}" for name in insufficient(pod, node, used)]


@dataclass
class Decision:
    """The outcome of scheduling one pod: a node, or why none fits."""

    node: str | None
    message: str = ""


def _free_fraction(node: Mapping, used: Mapping[str, Decimal]) -> Decimal:
    alloc = allocatable(node)
    fractions = []
    for name in ("cpu", "memory"):
        total = alloc.get(name, Decimal(0))
        if total > 0:
            fractions.append((total - used.get(name, Decimal(0))) / total)
    return sum(fractions, Decimal(0)) / len(fractions) if fractions else Decimal(0)


def failure_message(total_nodes: int, reasons: Counter) -> str:
    """`0/N nodes are available: <count> <reason>, ....` (reasons sorted, as upstream)."""
    if not total_nodes:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."


class Placement:
    """One scheduling cycle's view: the nodes, and what the bound pods already use on each,
    summed once. `place` decides for one pod and counts it on its node, so the pods of one
    cycle see each other (as the real scheduler's assumed pods) without the view being
    summed again for each of them."""

    def __init__(self, nodes: Iterable[Mapping], pods: Iterable[Mapping]):
        self.nodes = list(nodes)
        names = {node["metadata"]["name"] for node in self.nodes}
        self.used: dict[str, Counter] = {name: Counter() for name in names}
        for pod in pods:
            name = (pod.get("spec") or {}).get("nodeName")
            if name in self.used and (pod.get("status") or {}).get("phase") \
                    not in TERMINAL_PHASES:
                try:
                    self.used[name].update(pod_requests(pod))
                except (ArithmeticError, TypeError, ValueError):
                    # a bound pod whose requests can't be read must not stop every other
                    # pod's placement; it counts as one pod slot on its node
                    self.used[name]["pods"] += 1

    def decide(self, pod: Mapping) -> Decision:
        """Where `pod` would go now (nothing recorded)."""
        reasons: Counter = Counter()
        feasible: list[tuple[Decimal, str]] = []
        for node in self.nodes:
            name = node["metadata"]["name"]
            used = self.used[name]
            why = filter_node(pod, node, used)
            if why:
                reasons.update(why)
            else:
                feasible.append((_free_fraction(node, used), name))
        if not feasible:
            return Decision(None, failure_message(len(self.nodes), reasons))
        # most free first; the name breaks ties so the choice is reproducible
        feasible.sort(key=lambda item: (-item[0], item[1]))
        return Decision(feasible[0][1])

    def place(self, pod: Mapping) -> Decision:
        """Decide for `pod` and count its requests on the chosen node."""
        decision = self.decide(pod)
        if decision.node is not None:
            self.used[decision.node].update(pod_requests(pod))
        return decision


def schedule(pod: Mapping, nodes: Iterable[Mapping], pods: Iterable[Mapping]) -> Decision:
    """Pick a node for `pod` given the cluster's nodes and (bound) pods."""
    return Placement(nodes, pods).decide(pod)
