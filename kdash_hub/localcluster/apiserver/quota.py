"""Admission for pods and claims: ServiceAccount, LimitRange defaults and limits, ResourceQuota.

Mirrors the real admission chain: LimitRanger fills in a container's default requests and
limits (mutating) and enforces min/max; ResourceQuota then rejects a create that would take
usage over a hard limit (403 "exceeded quota: ...") or that lacks a request/limit a quota
constrains (403 "failed quota: ...: must specify ..."), and keeps quota status.used current.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from kdash_hub import quantities

from . import resources
from .copying import deep_copy
from .resources import ResourceType
from .status import forbidden

if TYPE_CHECKING:
    from .operations import Operations

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

# quota names that constrain each container's cpu/memory (the "must specify" rule)
_MUST_SPECIFY = {"cpu": "requests.cpu", "memory": "requests.memory",
                 "requests.cpu": "requests.cpu", "requests.memory": "requests.memory",
                 "limits.cpu": "limits.cpu", "limits.memory": "limits.memory"}
_OBJECT_COUNTS = {"pods": "pods", "services": "services", "secrets": "secrets",
                  "configmaps": "configmaps", "persistentvolumeclaims": "persistentvolumeclaims",
                  "resourcequotas": "resourcequotas"}


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity ('500m', '2Gi', '1e3', 4) as an exact number."""
    return Fraction(quantities.parse_quantity(value))

def format_quantity(value: Fraction, resource: str = "") -> str:
    """Canonical-ish text of a quantity: '2', '500m', '1Gi' (binary units for bytes)."""
    if value.denominator == 1:
        n = int(value)
        if n and any(w in resource for w in ("memory", "storage")):
            for suffix, size in reversed(_BINARY.items()):
                if n % size == 0:
                    return f"{n // size}{suffix}"
        return str(n)
    millis = value * 1000
    if millis.denominator == 1:
        return f"{int(millis)}m"
    return str(float(value))


def _safe(value: Any) -> Fraction:
    try:
        return parse_quantity(value)
    except ValueError:
        return Fraction(0)


def pod_resources(spec: dict) -> dict[str, Fraction]:
    """Effective requests.X / limits.X of a pod: max(sum of containers, largest init)."""
    out: dict[str, Fraction] = {}
    for section in ("requests", "limits"):
        total: dict[str, Fraction] = {}
        for c in spec.get("containers") or []:
            for r, v in ((c.get("resources") or {}).get(section) or {}).items():
                total[r] = total.get(r, Fraction(0)) + _safe(v)
        for c in spec.get("initContainers") or []:
            for r, v in ((c.get("resources") or {}).get(section) or {}).items():
                total[r] = max(total.get(r, Fraction(0)), _safe(v))
        for r, v in total.items():
            out[f"{section}.{r}"] = v
    return out


def _is_active_pod(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def object_usage(rtype: ResourceType, obj: dict) -> dict[str, Fraction]:
    """What one object adds to each quota resource name."""
    one = Fraction(1)
    kind = rtype.kind
    usage: dict[str, Fraction] = {f"count/{rtype}": one}
    if kind in ("Pod", "Service", "Secret", "ConfigMap", "PersistentVolumeClaim",
                "ResourceQuota"):
        usage[rtype.plural] = one
    if kind == "Pod":
        if not _is_active_pod(obj):
            return {}
        res = pod_resources(obj.get("spec") or {})
        usage.update(res)
        for short in ("cpu", "memory", "ephemeral-storage"):
            if f"requests.{short}" in res:
                usage[short] = res[f"requests.{short}"]
    elif kind == "PersistentVolumeClaim":
        spec = obj.get("spec") or {}
        storage = _safe(((spec.get("resources") or {}).get("requests") or {}).get("storage", 0))
        usage["requests.storage"] = storage
        sc = spec.get("storageClassName")
        if sc:
            usage[f"{sc}.storageclass.storage.k8s.io/requests.storage"] = storage
            usage[f"{sc}.storageclass.storage.k8s.io/persistentvolumeclaims"] = one
    elif kind == "Service":
        stype = (obj.get("spec") or {}).get("type")
        if stype in ("NodePort", "LoadBalancer"):
            usage["services.nodeports"] = Fraction(len((obj.get("spec") or {}).get("ports")
                                                       or []))
        if stype == "LoadBalancer":
            usage["services.loadbalancers"] = one
    return usage


def _usage_inputs(rtype: ResourceType, obj: dict) -> Any:
    """What of `obj` its quota usage (and a scoped quota's choice of it) is read from: two
    versions with equal inputs use the same. Most writes (a pod's status, its binding, any
    label) change none of it, and the usage is not worked out again for them."""
    kind = rtype.kind
    try:
        if kind == "Pod":
            spec = obj.get("spec") or {}
            return (_is_active_pod(obj), spec.get("containers"), spec.get("initContainers"),
                    spec.get("activeDeadlineSeconds"),
                    (obj.get("status") or {}).get("qosClass"))
        if kind in ("PersistentVolumeClaim", "Service"):
            return obj.get("spec")
    except (AttributeError, TypeError):  # malformed (schema validation off)
        return object()  # equal to nothing: worked out as before
    return None  # the usage of other kinds is their count alone


def same_usage(rtype: ResourceType, old: dict | None, new: dict) -> bool:
    """Whether `new`, written over `old`, uses what `old` used (of every quota)."""
    return old is not None and _usage_inputs(rtype, old) == _usage_inputs(rtype, new)


class Admission:
    """LimitRanger + ResourceQuota admission over the operations' store."""

    def __init__(self, ops: Operations):
        self.ops = ops
        # running usage per namespace, kept by the store's events (no rescans per create)
        self.totals: dict[str, dict[str, Fraction]] = {}
        ops.store.listeners.append(self._count)

    def _count(self, ev: Any) -> None:
        if not ev.rtype.namespaced:
            return
        ns = ev.obj["metadata"].get("namespace", "")
        if ev.type == "MODIFIED" and same_usage(ev.rtype, ev.old, ev.obj):
            return
        totals = self.totals.setdefault(ns, {})
        changes: list[tuple[dict, int]] = []
        if ev.type in ("MODIFIED", "DELETED") and ev.old is not None:
            changes.append((ev.old, -1))
        if ev.type in ("ADDED", "MODIFIED"):
            changes.append((ev.obj, 1))
        for obj, sign in changes:
            try:
                usage = object_usage(ev.rtype, obj)
            except (TypeError, AttributeError, ValueError):
                continue  # malformed (schema validation off): counts as nothing
            for k, v in usage.items():
                totals[k] = totals.get(k, Fraction(0)) + sign * v

    @property
    def store(self):  # noqa: ANN201
        return self.ops.store

    def _in_ns(self, kind: str, namespace: str) -> list[dict]:
        return self.store.raw_items(resources.by_kind(kind), namespace)

    # ---------------------------------------------------------------- mutating

    def mutate(self, rtype: ResourceType, obj: dict) -> None:
        if rtype.kind == "LimitRange":
            for item in (obj.get("spec") or {}).get("limits") or []:
                if isinstance(item, dict) and item.get("type") == "Container":
                    for k, v in (item.get("max") or {}).items():
                        item.setdefault("default", {}).setdefault(k, v)
                    for k, v in (item.get("default") or {}).items():
                        item.setdefault("defaultRequest", {}).setdefault(k, v)
            return
        if rtype.kind != "Pod":
            return
        ns = obj["metadata"].get("namespace")
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        for lr in self._in_ns("LimitRange", ns):
            for item in (lr.get("spec") or {}).get("limits") or []:
                if item.get("type") != "Container":
                    continue
                for c in list(spec.get("containers") or []) + list(
                        spec.get("initContainers") or []):
                    if not isinstance(c, dict):
                        continue
                    res = c.setdefault("resources", {})
                    for k, v in (item.get("default") or {}).items():
                        res.setdefault("limits", {}).setdefault(k, v)
                    for k, v in (item.get("defaultRequest") or {}).items():
                        res.setdefault("requests", {}).setdefault(k, v)
        obj["status"]["qosClass"] = _qos(spec)

    def mutate_update(self, rtype: ResourceType, old: dict, new: dict) -> None:
        """Nothing to default on update (LimitRanger only acts on create for pods)."""

    # ---------------------------------------------------------------- validating

    def validate_create(self, rtype: ResourceType, obj: dict) -> None:
        ns = obj["metadata"].get("namespace")
        if not ns:
            return
        name = obj["metadata"]["name"]
        if rtype.kind == "Pod":
            self._check_service_account(rtype, obj, ns, name)
        if rtype.kind in ("Pod", "PersistentVolumeClaim"):
            self._check_limit_ranges(rtype, obj, ns, name)
        quotas = self._in_ns("ResourceQuota", ns)
        if not quotas:
            return
        delta = object_usage(rtype, obj)
        for q in quotas:
            hard = _hard(q)
            if not _in_scope(q, rtype, obj):
                continue
            if rtype.kind == "Pod" and _is_active_pod(obj):
                self._check_must_specify(rtype, obj, q, hard, name)
            relevant = [k for k in hard if delta.get(k)]
            if not relevant:
                continue
            used = self.quota_usage(q, ns, relevant)
            exceeded = sorted(k for k in relevant
                              if used[k] + delta[k] > _safe(hard[k]))
            if exceeded:
                def show(values: dict[str, Any], keys: list[str] = exceeded) -> str:
                    return ",".join(f"{k}={format_quantity(_as_q(values[k]), k)}"
                                    for k in keys)
                raise forbidden(
                    rtype.plural, rtype.group, name,
                    f"exceeded quota: {q['metadata']['name']}, requested: {show(delta)}, "
                    f"used: {show(used)}, limited: {show(hard)}")

    def _check_service_account(self, rtype: ResourceType, pod: dict, ns: str,
                               name: str) -> None:
        """The ServiceAccount admission plugin: a pod's service account must exist."""
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        if self.store.raw(resources.by_kind("ServiceAccount"), ns, sa) is None:
            raise forbidden(rtype.plural, rtype.group, name,
                            f'error looking up service account {ns}/{sa}: serviceaccount '
                            f'"{sa}" not found')

    def _check_must_specify(self, rtype: ResourceType, pod: dict, quota: dict, hard: dict,
                            name: str) -> None:
        required = sorted({_MUST_SPECIFY[k] for k in hard if k in _MUST_SPECIFY})
        missing: dict[str, list[str]] = {}
        for c in (pod.get("spec") or {}).get("containers") or []:
            res = c.get("resources") or {}
            for key in required:
                section, r = key.split(".", 1)
                if r not in (res.get(section) or {}):
                    missing.setdefault(key, []).append(c.get("name", ""))
        if missing:
            detail = "; ".join(f"{k} for: {','.join(sorted(v))}"
                               for k, v in sorted(missing.items()))
            raise forbidden(rtype.plural, rtype.group, name,
                            f"failed quota: {quota['metadata']['name']}: must specify {detail}")

    def _check_limit_ranges(self, rtype: ResourceType, obj: dict, ns: str, name: str) -> None:
        for lr in self._in_ns("LimitRange", ns):
            for item in (lr.get("spec") or {}).get("limits") or []:
                if rtype.kind == "Pod" and item.get("type") == "Container":
                    for c in (obj.get("spec") or {}).get("containers") or []:
                        res = c.get("resources") or {}
                        self._min_max(rtype, name, item, res.get("requests") or {},
                                      res.get("limits") or {}, "Container")
                elif rtype.kind == "PersistentVolumeClaim" and item.get(
                        "type") == "PersistentVolumeClaim":
                    req = ((obj.get("spec") or {}).get("resources") or {}).get(
                        "requests") or {}
                    self._min_max(rtype, name, item, req, req, "PersistentVolumeClaim")

    def _min_max(self, rtype: ResourceType, name: str, item: dict, requests: dict,
                 limits: dict, what: str) -> None:
        for r, limit in (item.get("max") or {}).items():
            if r not in limits:
                raise forbidden(rtype.plural, rtype.group, name,
                                f"maximum {r} usage per {what} is {limit}.  No limit is "
                                f"specified")
            if _safe(limits[r]) > _safe(limit):
                raise forbidden(rtype.plural, rtype.group, name,
                                f"maximum {r} usage per {what} is {limit}, but "
                                f"{'limit' if what == 'Container' else 'request'} is "
                                f"{limits[r]}")
        for r, low in (item.get("min") or {}).items():
            if r in requests and _safe(requests[r]) < _safe(low):
                raise forbidden(rtype.plural, rtype.group, name,
                                f"minimum {r} usage per {what} is {low}, but request is "
                                f"{requests[r]}")

    # ---------------------------------------------------------------- usage/status

    def usage(self, namespace: str, keys: list[str]) -> dict[str, Fraction]:
        totals = self.totals.get(namespace, {})
        return {k: totals.get(k, Fraction(0)) for k in keys}

    def quota_usage(self, quota: dict, namespace: str, keys: list[str]
                    ) -> dict[str, Fraction]:
        """Usage a quota sees: the running totals, or a scan of pods for scoped quotas."""
        if not _scopes(quota):
            return self.usage(namespace, keys)
        pods = resources.by_kind("Pod")
        used = {k: Fraction(0) for k in keys}
        for pod in self.store.raw_items(pods, namespace):
            if _in_scope(quota, pods, pod):
                for k, v in object_usage(pods, pod).items():
                    if k in used:
                        used[k] += v
        return used

    def after_change(self, rtype: ResourceType, obj: dict, deleted: bool = False,
                     old: dict | None = None) -> None:
        """Keep status.hard/used of the namespace's quotas current after a write (`old`:
        the version it replaced, if it was an update)."""
        ns = obj["metadata"].get("namespace")
        if not ns:
            return
        if rtype.kind != "ResourceQuota" and not deleted and same_usage(rtype, old, obj):
            return  # nothing any quota counts changed
        quota_type = resources.by_kind("ResourceQuota")
        quotas = self.store.raw_items(quota_type, ns)
        if not quotas:
            return
        # what the new version uses, and what the old one did: a pod that ended uses
        # nothing any more, and the share it freed must show
        counted = set(object_usage(rtype, obj))
        if old is not None:
            counted.update(object_usage(rtype, old))
        for q in quotas:
            hard = _hard(q)
            if rtype.kind != "ResourceQuota" and not any(k in hard for k in counted):
                continue
            used = self.quota_usage(q, ns, list(hard))
            status = {"hard": dict(hard),
                      "used": {k: format_quantity(v, k) for k, v in used.items()}}
            if q.get("status") != status:
                new = deep_copy(q)
                new["status"] = status
                self.store.put(quota_type, new, "MODIFIED", q)


def _scopes(quota: dict) -> list[str]:
    spec = quota.get("spec") if isinstance(quota.get("spec"), dict) else {}
    scopes = list(spec.get("scopes") or [])
    for e in (spec.get("scopeSelector") or {}).get("matchExpressions") or []:
        if e.get("operator") == "Exists":
            scopes.append(e.get("scopeName", ""))
    return scopes


def _in_scope(quota: dict, rtype: ResourceType, obj: dict) -> bool:
    """Whether a (pod-)scoped quota covers the object (BestEffort, Terminating, ...)."""
    scopes = _scopes(quota)
    if not scopes:
        return True
    if rtype.kind != "Pod":
        return False
    spec = obj.get("spec") or {}
    qos = (obj.get("status") or {}).get("qosClass") or _qos(spec)
    terminating = spec.get("activeDeadlineSeconds") is not None
    checks = {"BestEffort": qos == "BestEffort", "NotBestEffort": qos != "BestEffort",
              "Terminating": terminating, "NotTerminating": not terminating}
    return all(checks.get(scope, True) for scope in scopes)


def _hard(quota: dict) -> dict[str, Any]:
    spec = quota.get("spec")
    hard = spec.get("hard") if isinstance(spec, dict) else None
    return hard if isinstance(hard, dict) else {}


def _as_q(value: Any) -> Fraction:
    return value if isinstance(value, Fraction) else _safe(value)


def _qos(spec: dict) -> str:
    from .defaults import qos_class

    return qos_class(spec)
