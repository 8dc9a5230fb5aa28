"""How many GPUs are free right now: node allocatable minus requests of running pods.

One list of nodes and one list of non-terminated pods serve every flavor and every user for
up to `ttl` seconds (shared by all spawners of the hub), so opening the profile chooser does
not cost API requests per user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .quotas import parse_quantity


@dataclass(frozen=True)
class GpuFree:
    """Free GPUs of one resource on the nodes a flavor can use."""

    total: int
    largest_node: int  # the most one server can get (a pod lives on one node)


def _matches(node: Mapping, selector: Mapping[str, str]) -> bool:
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    return all(node_labels.get(k) == v for k, v in selector.items())


def _schedulable(node: Mapping) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"


def pod_request(pod: Mapping, resource: str) -> int:
    """What a pod holds of `resource` (requests, or limits when only limits are set)."""
    spec = pod.get("spec") or {}
    total = 0
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        amount = (res.get("requests") or {}).get(resource, (res.get("limits") or {}).get(resource))
        if amount is not None:
            total += int(parse_quantity(amount))
    init = [int(parse_quantity(((c.get("resources") or {}).get("limits") or {}).get(resource, 0)))
            for c in spec.get("initContainers") or []]
    return max([total, *init])


def free_gpus(nodes: list[Mapping], pods: list[Mapping], resource: str,
              node_selector: Mapping[str, str] | None = None) -> GpuFree:
    """Free `resource` on schedulable nodes matching `node_selector`."""
    used: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name or phase in ("Succeeded", "Failed"):
            continue
        used[node_name] = used.get(node_name, 0) + pod_request(pod, resource)
    per_node = []
    for node in nodes:
        if not _schedulable(node) or not _matches(node, node_selector or {}):
            continue
        alloc = ((node.get("status") or {}).get("allocatable") or {}).get(resource)
        if alloc is None:
            continue
        name = node["metadata"]["name"]
        per_node.append(max(0, int(parse_quantity(alloc)) - used.get(name, 0)))
    return GpuFree(total=sum(per_node), largest_node=max(per_node, default=0))


class GpuAvailability:
    """A cache of the cluster's nodes and pods, refreshed at most every `ttl` seconds."""

    def __init__(self, resources: Any, ttl: float = 30.0):
        self.resources = resources  # kdash_hub.kube.KubeResources
        self.ttl = ttl
        self._fetched_at = float("-inf")
        self._nodes: list[dict] = []
        self._pods: list[dict] = []
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._fetched_at = float("-inf")

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.ttl:
                return
            nodes, pods = await asyncio.gather(
                self.resources.list("Node"),
                self.resources.list(
                    "Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed"),
            )
            self._nodes, self._pods = nodes, pods
            self._fetched_at = time.monotonic()

    async def free(self, resource: str, node_selector: Mapping[str, str] | None = None) -> GpuFree:
        if time.monotonic() - self._fetched_at >= self.ttl:
            await self._refresh()
        return free_gpus(self._nodes, self._pods, resource, node_selector)
