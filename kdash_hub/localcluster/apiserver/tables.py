"""Server-side printing: `meta.k8s.io/v1` Table responses, which `kubectl get` asks for.

Columns follow the real printers for the kinds people look at (pods, deployments,
statefulsets, jobs, services, PVCs, namespaces, nodes, events); other kinds get NAME/AGE.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        then = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    s = max(int((datetime.now(UTC) - then).total_seconds()), 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    return f"{h}h" if h < 48 else f"{h // 24}d"


def _pod(o: dict) -> list[Any]:
    st = o.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    phase = st.get("reason") or st.get("phase") or "Unknown"
    for c in cs:
        waiting = (c.get("state") or {}).get("waiting")
        terminated = (c.get("state") or {}).get("terminated")
        if waiting and waiting.get("reason"):
            phase = waiting["reason"]
        elif terminated and terminated.get("reason") and phase not in ("Succeeded",):
            phase = terminated["reason"]
    if o["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(c.get("restartCount") or 0) for c in cs)
    return [f"{ready}/{total}", phase, restarts, _age(o["metadata"].get("creationTimestamp")),
            st.get("podIP") or "<none>", (o.get("spec") or {}).get("nodeName") or "<none>"]


def _deploy(o: dict) -> list[Any]:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    return [f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0),
            _age(o["metadata"].get("creationTimestamp"))]


def _sts(o: dict) -> list[Any]:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    return [f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            _age(o["metadata"].get("creationTimestamp"))]


def _job(o: dict) -> list[Any]:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    conds = {c.get("type") for c in st.get("conditions") or [] if c.get("status") == "True"}
    status = "Complete" if "Complete" in conds else "Failed" if "Failed" in conds else (
        "Suspended" if spec.get("suspend") else "Running")
    return [status, f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}",
            _age(o["metadata"].get("creationTimestamp"))]


def _svc(o: dict) -> list[Any]:
    spec = o.get("spec") or {}
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/"
        f"{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", "<none>", ports,
            _age(o["metadata"].get("creationTimestamp"))]


def _pvc(o: dict) -> list[Any]:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    return [st.get("phase", ""), spec.get("volumeName", ""),
            (st.get("capacity") or {}).get("storage", ""),
            ",".join({"ReadWriteOnce": "RWO", "ReadWriteMany": "RWX", "ReadOnlyMany": "ROX",
                      "ReadWriteOncePod": "RWOP"}.get(m, m)
                     for m in st.get("accessModes") or []),
            spec.get("storageClassName", ""), _age(o["metadata"].get("creationTimestamp"))]


def _ns(o: dict) -> list[Any]:
    return [(o.get("status") or {}).get("phase", ""),
            _age(o["metadata"].get("creationTimestamp"))]


def _node(o: dict) -> list[Any]:
    conds = (o.get("status") or {}).get("conditions") or []
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    roles = ",".join(k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
                     if k.startswith("node-role.kubernetes.io/")) or "<none>"
    version = ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [status, roles, _age(o["metadata"].get("creationTimestamp")), version]


def _event(o: dict) -> list[Any]:
    io = o.get("involvedObject") or {}
    return [_age(o.get("lastTimestamp") or o["metadata"].get("creationTimestamp")),
            o.get("type", ""), o.get("reason", ""),
            f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", o.get("message", "")]


def _default(o: dict) -> list[Any]:
    return [_age(o["metadata"].get("creationTimestamp"))]


_COLUMNS: dict[str, tuple[list[tuple[str, str, int]], Callable[[dict], list[Any]]]] = {
    "Pod": ([("Ready", "string", 0), ("Status", "string", 0), ("Restarts", "integer", 0),
             ("Age", "string", 0), ("IP", "string", 1), ("Node", "string", 1)], _pod),
    "Deployment": ([("Ready", "string", 0), ("Up-to-date", "integer", 0),
                    ("Available", "integer", 0), ("Age", "string", 0)], _deploy),
    "StatefulSet": ([("Ready", "string", 0), ("Age", "string", 0)], _sts),
    "Job": ([("Status", "string", 0), ("Completions", "string", 0), ("Age", "string", 0)],
            _job),
    "Service": ([("Type", "string", 0), ("Cluster-IP", "string", 0),
                 ("External-IP", "string", 0), ("Port(s)", "string", 0),
                 ("Age", "string", 0)], _svc),
    "PersistentVolumeClaim": ([("Status", "string", 0), ("Volume", "string", 0),
                               ("Capacity", "string", 0), ("Access Modes", "string", 0),
                               ("StorageClass", "string", 0), ("Age", "string", 0)], _pvc),
    "Namespace": ([("Status", "string", 0), ("Age", "string", 0)], _ns),
    "Node": ([("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
              ("Version", "string", 0)], _node),
    "Event": ([("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
               ("Object", "string", 0), ("Message", "string", 0)], _event),
}


def table(rtype: ResourceType, items: list[dict], list_meta: dict,
          include_object: str = "Metadata") -> dict[str, Any]:
    columns, cells = _COLUMNS.get(rtype.kind, ([("Age", "string", 0)], _default))
    defs = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace."}]
    defs += [{"name": n, "type": t, "format": "", "priority": p, "description": n}
             for n, t, p in columns]
    rows = []
    for o in items:
        row: dict[str, Any] = {"cells": [o["metadata"]["name"], *cells(o)]}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata",
                             "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": defs, "rows": rows}
