"""The status of an instance from what the cluster says: ready, pending, failed, stopped.

Computed from lists fetched once for many instances (workloads, pods, events), so the list
of 1,000 instances costs a handful of requests, not thousands.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import label_value

from .records import STOPPED, InstanceRecord

FAILED_WAITING = {
    "ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError",
    "CreateContainerError", "InvalidImageName", "RunContainerError",
}
FAILED_EVENTS = {
    "Failed", "FailedCreate", "BackOff", "ErrImagePull", "InspectFailed", "FailedCreatePodSandBox",
    "ProvisioningFailed", "FailedAttachVolume",
}
PENDING_EVENTS = {"FailedScheduling", "FailedMount", "Unhealthy"}
# the local cluster's process kubelet: a container that runs nothing (written in the pod's
# status, which only the kubelet writes); the same name as kdash_hub.localcluster's, which
# the hub image doesn't ship
NO_PROGRAM_CONDITION = "localcluster.kdash-hub.io/NoLocalProgram"


@dataclass
class ClusterView:
    """Objects fetched in bulk, indexed for status computation."""

    workloads: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], list[dict]] = field(default_factory=lambda: defaultdict(list))
    events: dict[tuple[str, str], list[dict]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def build(cls, workloads: list[dict], pods: list[dict], events: list[dict]) -> ClusterView:
        view = cls()
        for obj in workloads:
            meta = obj["metadata"]
            view.workloads[(meta.get("namespace", ""), obj.get("kind", ""), meta["name"])] = obj
        for pod in pods:
            meta = pod["metadata"]
            instance = (meta.get("labels") or {}).get(L.INSTANCE)
            if instance:
                view.pods[(meta.get("namespace", ""), instance)].append(pod)
        for event in events:
            involved = event.get("involvedObject") or {}
            key = (involved.get("namespace") or event["metadata"].get("namespace", ""),
                   involved.get("name", ""))
            view.events[key].append(event)
        return view

    def instance_pods(self, rec: InstanceRecord) -> list[dict]:
        return self.pods.get((rec.namespace, label_value(rec.name)), [])

    def instance_events(self, rec: InstanceRecord) -> list[dict]:
        names = {o["name"] for o in rec.objects}
        names |= {p["metadata"]["name"] for p in self.instance_pods(rec)}
        found = [e for n in names for e in self.events.get((rec.namespace, n), [])]
        return sorted(found, key=event_time)


def event_time(event: dict) -> str:
    return (event.get("lastTimestamp") or event.get("eventTime")
            or event["metadata"].get("creationTimestamp") or "")


def _workload_ready(obj: dict) -> bool:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return want > 0 and (status.get("readyReplicas") or 0) >= want


def instance_status(rec: InstanceRecord, view: ClusterView) -> tuple[str, str]:
    """(status, reason) with status one of ready, pending, failed, stopped."""
    if rec.state == STOPPED:
        return "stopped", "scaled to zero; start it to run again"
    for pod in view.instance_pods(rec):
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            return "failed", f"pod {pod['metadata']['name']}: {status.get('reason') or 'Failed'}"
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILED_WAITING:
                return "failed", f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    warnings = [e for e in view.instance_events(rec) if e.get("type") == "Warning"]
    for event in reversed(warnings):
        if event.get("reason") in FAILED_EVENTS:
            return "failed", f"{event['reason']}: {event.get('message', '')}"
    for pod in view.instance_pods(rec):  # after the real failures, which say more
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == NO_PROGRAM_CONDITION and cond.get("status") == "True":
                return "failed", f"can't run on this local cluster: {cond.get('message', '')}"
    workloads: list[dict[str, Any]] = []
    for obj in rec.workloads:
        found = view.workloads.get((rec.namespace, obj["kind"], obj["name"]))
        if found is None:
            return "failed", f"{obj['kind']} {obj['name']} is missing"
        workloads.append(found)
    jobs = [view.workloads.get((rec.namespace, "Job", o["name"]))
            for o in rec.objects if o["kind"] == "Job"]
    for job in filter(None, jobs):
        if (job.get("status") or {}).get("failed"):
            return "failed", f"Job {job['metadata']['name']} failed"
    if all(_workload_ready(w) for w in workloads) and all(
            (j or {}).get("status", {}).get("succeeded") for j in jobs):
        return "ready", ""
    for event in reversed(warnings):
        if event.get("reason") in PENDING_EVENTS:
            return "pending", f"{event['reason']}: {event.get('message', '')}"
    return "pending", "starting"
