"""The kinds the emulator serves and where they live: group, version, plural, scope, verbs.

This one table drives routing, discovery (what kubectl reads from /api and /apis) and the
per-kind behaviour flags used by the rest of the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _r(group: str, version: str, kind: str, plural: str, **kw) -> ResourceType:
    return ResourceType(group, version, kind, plural, **kw)


_ST = ("status",)
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    _r("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",),
       subresources=("status", "finalize")),
    _r("", "v1", "Pod", "pods", short_names=("po",),
       subresources=("status", "binding", "log", "exec"), categories=("all",)),
    _r("", "v1", "Service", "services", short_names=("svc",), subresources=_ST,
       categories=("all",)),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",),
       subresources=_ST),
    _r("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False,
       short_names=("pv",), subresources=_ST),
    _r("", "v1", "Secret", "secrets"),
    _r("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _r("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",),
       subresources=("token",)),
    _r("", "v1", "Event", "events", short_names=("ev",)),
    _r("", "v1", "Endpoints", "endpoints", short_names=("ep",)),
    _r("", "v1", "Node", "nodes", namespaced=False, short_names=("no",), subresources=_ST),
    _r("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), subresources=_ST),
    _r("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    _r("", "v1", "Binding", "bindings", verbs=("create",)),
    _r("", "v1", "ReplicationController", "replicationcontrollers", short_names=("rc",),
       subresources=("status", "scale"), categories=("all",)),
    _r("", "v1", "PodTemplate", "podtemplates"),
    _r("apps", "v1", "Deployment", "deployments", short_names=("deploy",),
       subresources=("status", "scale"), categories=("all",)),
    _r("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",),
       subresources=("status", "scale"), categories=("all",)),
    _r("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",),
       subresources=("status", "scale"), categories=("all",)),
    _r("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), subresources=_ST,
       categories=("all",)),
    _r("batch", "v1", "Job", "jobs", subresources=_ST, categories=("all",)),
    _r("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), subresources=_ST,
       categories=("all",)),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies",
       short_names=("netpol",)),
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",),
       subresources=_ST),
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",),
       subresources=_ST),
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False,
       short_names=("sc",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
       namespaced=False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
       namespaced=False, verbs=("create",)),
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
       namespaced=False),
    _r("apiregistration.k8s.io", "v1", "APIService", "apiservices", namespaced=False,
       subresources=_ST, categories=("api-extensions",)),
)

# (groupPriorityMinimum, versionPriority) of each served group-version's APIService, as
# kube-apiserver registers them; discovery lists groups in this order, highest first
API_SERVICE_PRIORITY: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apiregistration.k8s.io", "v1"): (18000, 15),
    ("apps", "v1"): (17800, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("batch", "v1"): (17400, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
}

# answered at once, never stored: a Binding is the scheduler's verb on a pod, and access
# reviews are always allowed (the emulator does no authorization)
VIRTUAL_KINDS = {"Binding", "SelfSubjectAccessReview", "SubjectAccessReview"}
STORED_TYPES = tuple(t for t in RESOURCE_TYPES if t.kind not in VIRTUAL_KINDS)

_BY_PATH = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}
_BY_KIND = {(t.group, t.kind): t for t in RESOURCE_TYPES}
_BY_KIND_ONLY = {t.kind: t for t in RESOURCE_TYPES}


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(kind: str, api_version: str | None = None) -> ResourceType | None:
    """The type of `kind` (optionally of one apiVersion, e.g. 'apps/v1')."""
    if api_version is None:
        return _BY_KIND_ONLY.get(kind)
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    t = _BY_KIND.get((group, kind))
    if t and t.api_version == api_version:
        return t
    return None


@cache
def groups() -> dict[str, list[str]]:
    """group -> versions served, for discovery (the core group '' included), in the
    aggregator's order: by APIService group priority, highest first, then by name."""
    out: dict[str, list[str]] = {}
    for t in RESOURCE_TYPES:
        versions = out.setdefault(t.group, [])
        if t.version not in versions:
            versions.append(t.version)
    return dict(sorted(out.items(), key=lambda kv: (
        -API_SERVICE_PRIORITY.get((kv[0], kv[1][0]), (0, 0))[0], kv[0])))
