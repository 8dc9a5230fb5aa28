"""The local cluster's Nodes: their spec, their Node objects, and the loopback pod network."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..dev.ports import port_is_free
from .podstatus import now_iso

KUBELET_VERSION = "v1.36.3-kdash"  # the release the emulator and the real control plane claim
MAX_PODS_PER_NODE = 253  # pod IPs .2 to .254 of the node's /24


@dataclass
class NodeSpec:
    """One Node of the local cluster: its name, capacity, labels and taints."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    extended: dict[str, str | int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    unschedulable: bool = False

    def __post_init__(self) -> None:
        if not 0 < int(self.pods) <= MAX_PODS_PER_NODE:
            raise ValueError(f"node {self.name}: pods must be 1..{MAX_PODS_PER_NODE} "
                             "(its pod network is a /24)")

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpu), "memory": str(self.memory), "pods": str(self.pods),
            "ephemeral-storage": str(self.ephemeral_storage),
            "hugepages-1Gi": "0", "hugepages-2Mi": "0",
            **{k: str(v) for k, v in self.extended.items()},
        }


class PodNetwork:
    """Pod IPs on the loopback: each node gets a random 127.A.B.0/24, pods .2 to .254.

    Random prefixes keep two clusters on one machine (the demo and a test run) apart; in
    process mode an address is only handed out when the pod's ports are free on it.
    """

    def __init__(self) -> None:
        self._prefix: dict[str, str] = {}
        self._used: dict[str, set[int]] = {}

    def prefix(self, node: str) -> str:
        if node not in self._prefix:
            taken = set(self._prefix.values())
            while True:
                candidate = f"127.{random.randint(16, 250)}.{random.randint(0, 255)}"
                if candidate not in taken:
                    break
            self._prefix[node] = candidate
            self._used[node] = set()
        return self._prefix[node]

    def host_ip(self, node: str) -> str:
        return f"{self.prefix(node)}.1"

    def pod_cidr(self, node: str) -> str:
        return f"{self.prefix(node)}.0/24"

    def allocate(self, node: str, ports: list[int] | tuple[int, ...] = ()) -> str:
        prefix = self.prefix(node)
        used = self._used[node]
        for last in range(2, 255):
            if last in used:
                continue
            ip = f"{prefix}.{last}"
            if all(port_is_free(ip, p) for p in ports):
                used.add(last)
                return ip
        raise RuntimeError(f"no free pod IP left on node {node} ({prefix}.0/24)")

    def ensure_host_address(self) -> None:
        """The node's address exists on this machine (the kubelet API listens there)."""

    def attach_host(self, ip: str) -> None:
        """A status-only pod's address, answered by this machine (loopback: always)."""

    def attach(self, ip: str) -> str | None:
        """The network namespace a process pod with `ip` runs in (None: this machine's)."""
        return None

    async def close(self) -> None:
        """Undo what the network made on this machine (nothing, on the loopback)."""

    def release(self, ip: str | None) -> None:
        if not ip:
            return
        prefix, _, last = ip.rpartition(".")
        for node, p in self._prefix.items():
            if p == prefix:
                self._used[node].discard(int(last))


def node_object(spec: NodeSpec, network: PodNetwork, kubelet_port: int = 10250) -> dict:
    labels = {
        "kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64", **spec.labels,
    }
    node_spec: dict[str, Any] = {
        "podCIDR": network.pod_cidr(spec.name), "podCIDRs": [network.pod_cidr(spec.name)],
    }
    if spec.taints:
        node_spec["taints"] = [dict(t) for t in spec.taints]
    if spec.unschedulable:
        node_spec["unschedulable"] = True
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": node_spec,
        "status": node_status(spec, network, kubelet_port),
    }


def node_status(spec: NodeSpec, network: PodNetwork, kubelet_port: int = 10250) -> dict:
    now = now_iso()

    def condition(kind: str, status: str, reason: str, message: str) -> dict:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {
        "capacity": spec.capacity(),
        "allocatable": spec.capacity(),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                      "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                      "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID",
                      "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": network.host_ip(spec.name)},
            {"type": "Hostname", "address": spec.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "architecture": "amd64", "bootID": secrets.token_hex(16),
            "containerRuntimeVersion": "kdash://0.1", "kernelVersion": "local",
            "kubeProxyVersion": KUBELET_VERSION, "kubeletVersion": KUBELET_VERSION,
            "machineID": secrets.token_hex(16), "operatingSystem": "linux",
            "osImage": "kdash-hub local cluster", "systemUUID": secrets.token_hex(16),
        },
    }


def node_ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    return not ready or ready[0].get("status") == "True"
