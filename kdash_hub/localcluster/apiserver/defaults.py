"""Per-kind defaulting on create, like the API server's defaulters and PrepareForCreate.

Only what clients of this project read back is filled in: pod phase and QoS class, the
scheduler/restart/DNS defaults, a Service's cluster IP and node ports, a namespace's phase
and name label, workload replica counts and job selectors.
"""

from __future__ import annotations

import base64
import ipaddress
import uuid
from typing import Any

from .resources import ResourceType


class Allocator:
    """Cluster IPs from 10.96.0.0/12 and node ports from 30000-32767, never reused."""

    def __init__(self) -> None:
        self._ip = int(ipaddress.IPv4Address("10.96.0.10"))
        self._port = 30000

    def cluster_ip(self) -> str:
        self._ip += 1
        return str(ipaddress.IPv4Address(self._ip))

    def node_port(self) -> int:
        self._port += 1
        return self._port


def qos_class(spec: dict) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    guaranteed, any_set = True, False
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or str(req.get(r, lim[r])) != str(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _container_defaults(c: dict) -> None:
    image = str(c.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    res = c["resources"]
    # requests default to limits, as the real defaulter does
    if res.get("limits"):
        req = res.setdefault("requests", {})
        for k, v in res["limits"].items():
            req.setdefault(k, v)
    for p in c.get("ports") or []:
        p.setdefault("protocol", "TCP")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind)
        if isinstance(probe, dict):  # SetDefaults_Probe and SetDefaults_HTTPGetAction
            for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10),
                               ("successThreshold", 1), ("failureThreshold", 3)):
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("path", "/")
                probe["httpGet"].setdefault("scheme", "HTTP")


def pod_spec_defaults(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if "serviceAccountName" not in spec:
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        if isinstance(c, dict):
            _container_defaults(c)


def _template_defaults(obj: dict) -> None:
    tmpl = (obj.get("spec") or {}).get("template")
    if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
        pod_spec_defaults(tmpl["spec"])


def on_create(rtype: ResourceType, obj: dict, alloc: Allocator) -> None:
    """Fill in defaults and reset status as the real server does when an object is created."""
    kind = rtype.kind
    meta = obj["metadata"]
    if rtype.has_status and kind not in ("Node", "PersistentVolume"):
        obj.pop("status", None)
    if kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    elif kind == "Pod":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            pod_spec_defaults(spec)
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif kind == "Service":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            _service_defaults(spec, alloc)
        obj["status"] = {"loadBalancer": {}}
    elif kind == "PersistentVolumeClaim":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("volumeMode", "Filesystem")
        obj["status"] = {"phase": "Pending"}
    elif kind == "PersistentVolume":
        obj.setdefault("status", {"phase": "Available"})
    elif kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            if kind == "Deployment":
                spec.setdefault("progressDeadlineSeconds", 600)
                spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
                    "maxSurge": "25%", "maxUnavailable": "25%"}})
            if kind == "StatefulSet":
                spec.setdefault("podManagementPolicy", "OrderedReady")
                spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                                   "rollingUpdate": {"partition": 0}})
            _template_defaults(obj)
        obj["status"] = {"replicas": 0}
    elif kind == "ReplicationController":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            tmpl = spec.get("template")
            labels = ((tmpl.get("metadata") or {}).get("labels")
                      if isinstance(tmpl, dict) else None)
            if labels:  # as SetDefaults_ReplicationController
                if not spec.get("selector"):
                    spec["selector"] = dict(labels)
                if not meta.get("labels"):
                    meta["labels"] = dict(labels)
            spec.setdefault("replicas", 1)
            _template_defaults(obj)
        obj["status"] = {"replicas": 0}
    elif kind == "Job":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            if "selector" not in spec and not spec.get("manualSelector"):
                uid = meta["uid"]
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                tmpl = spec.setdefault("template", {})
                if isinstance(tmpl, dict):
                    labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
                    labels.setdefault("batch.kubernetes.io/controller-uid", uid)
                    labels.setdefault("batch.kubernetes.io/job-name", meta["name"])
                    labels.setdefault("controller-uid", uid)
                    labels.setdefault("job-name", meta["name"])
            _template_defaults(obj)
        obj["status"] = {}
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Event":
        obj.setdefault("type", "Normal")
        obj.setdefault("count", 1)


def _service_defaults(spec: dict, alloc: Allocator) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = alloc.cluster_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if not isinstance(p, dict):
            continue
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p.get("port"))
        if spec["type"] in ("NodePort", "LoadBalancer") and "nodePort" not in p:
            p["nodePort"] = alloc.node_port()


def normalize(rtype: ResourceType, obj: dict) -> None:
    """On every write: a Secret's write-only stringData is merged into data (base64)."""
    if rtype.kind == "Secret" and isinstance(obj.get("stringData"), dict):
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        for k, v in obj.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data


def new_uid() -> str:
    return str(uuid.uuid4())


def spec_of(obj: dict) -> dict[str, Any]:
    """Everything but metadata and status: a change here bumps metadata.generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
