"""Where the proxy may connect: the pod IP of a ready pod the instance's own workload owns.

Nothing a user can write decides the destination. The record (signed) names the workload
and the port; the workload and the Service must still be the objects the launch made (the
UIDs the record signed: one deleted and made again by the user is refused); a pod counts
only when its controller is that workload — a StatefulSet directly, a Deployment through a
ReplicaSet whose controller is the Deployment (the local cluster's controller skips the
ReplicaSet, so a pod owned by the Deployment itself counts too) — and it is Running,
Ready, not deleting, not on the host network. Its IP is the one the cluster assigned
(`status.podIP`, which `edit` can't write). Services, ExternalNames and Endpoints are
never read to find a destination, and no name is resolved through DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from typing import Any

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources
from kdash_hub.naming import label_value

from .records import InstanceRecord


class TargetError(Exception):
    """No destination for the proxy: an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Target:
    ip: str
    port: int
    pod: str

    @property
    def base_url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}"


def _controller(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def _ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [] if isinstance(c, dict))


def usable_ip(text: Any, networks: list | None = None) -> str | None:
    """The pod IP if it is an address a pod can have (not link-local like cloud
    metadata, not multicast, reserved or unspecified) and in `networks` when given."""
    try:
        ip = ipaddress.ip_address(text)
    except (TypeError, ValueError):
        return None
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return None
    if networks and not any(ip.version == n.version and ip in n for n in networks):
        return None
    return str(ip)


def owned_by_workload(pod: dict, kind: str, uid: str, replicasets: dict[str, dict]) -> bool:
    """True when the pod's controller chain ends at the workload with `uid`."""
    ref = _controller(pod)
    if ref is None:
        return False
    if ref.get("kind") == kind and ref.get("uid") == uid:
        return True  # a StatefulSet's pod (or the local cluster's Deployment pods)
    if kind == "Deployment" and ref.get("kind") == "ReplicaSet":
        rs = replicasets.get(ref.get("uid", ""))
        rs_ref = _controller(rs) if rs else None
        return bool(rs_ref and rs_ref.get("kind") == "Deployment" and rs_ref.get("uid") == uid)
    return False


async def find_target(kube: KubeResources, rec: InstanceRecord,
                      networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
                      ) -> Target:
    """A ready pod of the instance's workload, or TargetError saying why there is none
    (`networks`: the pod networks a pod IP must be in; None: any)."""
    proxy = rec.proxy or {}
    workload = proxy.get("workload")
    port = proxy.get("port")
    if not workload or not port:
        raise TargetError(404, f"instance {rec.name!r} has no web service the proxy can reach"
                               " (its Service selects no workload of the template)")
    kind, name = workload["kind"], workload["name"]
    workload_uid = rec.uid_of(kind, name)
    service_uid = rec.uid_of("Service", proxy.get("service", ""))
    if not workload_uid or not service_uid:
        raise TargetError(409, f"instance {rec.name!r} was not completely launched; delete"
                               " it and launch it again")
    selector = f"{L.INSTANCE}={label_value(rec.name)}"
    service, current, pods, rs_list = await asyncio.gather(
        kube.get("Service", proxy["service"], rec.namespace),
        kube.get(kind, name, rec.namespace),
        kube.list("Pod", rec.namespace, label_selector=selector),
        kube.list("ReplicaSet", rec.namespace, label_selector=selector)
        if kind == "Deployment" else asyncio.sleep(0, []),
    )
    for what, obj, uid in ((f"Service {proxy['service']}", service, service_uid),
                           (f"{kind} {name}", current, workload_uid)):
        if obj is None or (obj.get("metadata") or {}).get("uid") != uid:
            raise TargetError(409, f"the {what} of instance {rec.name!r} was deleted or"
                                   " replaced outside the launcher; the proxy only reaches"
                                   " the objects the launch made: delete the instance and"
                                   " launch it again")
    replicasets = {(rs.get("metadata") or {}).get("uid", ""): rs for rs in rs_list
                   if (rs.get("metadata") or {}).get("namespace") == rec.namespace}
    candidates = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("namespace") != rec.namespace or (pod.get("spec") or {}).get("hostNetwork"):
            continue
        if not (_ready(pod) and owned_by_workload(pod, kind, workload_uid, replicasets)):
            continue
        ip = usable_ip((pod.get("status") or {}).get("podIP"), networks)
        if ip:
            candidates.append(Target(ip, port, meta.get("name", "")))
    if not candidates:
        raise TargetError(503, f"instance {rec.name!r} has no ready pod yet; try again in a"
                               " moment (its details page says why)")
    return random.choice(candidates)
