"""The objects of a user's namespace bundle, as plain dicts (no API calls here).

Namespace, the RoleBindings giving the hub, the launcher and the culler their rights in the
namespace, ResourceQuota, LimitRange, NetworkPolicy, ServiceAccount, the user's RoleBinding
and copies of image pull secrets. Every object carries kdash-hub's managed/owner labels, so
ownership checks, the admission policies (helm-values/rbac/admission-policies.yaml) and the
drift watch (label-selected) see exactly these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import stable_hash

COMPONENT = "user-namespace"
BUNDLE_HASH_ANNOTATION = L.BUNDLE_HASH
QUOTA_NAME = "kdash-quota"
LIMIT_RANGE_NAME = "kdash-limits"
NETWORK_POLICY_NAME = "kdash-user-pods"
ROLE_BINDING_NAME = "kdash-user"
PULL_SECRET_COMPONENT = "pull-secret"
POD_SECURITY_LABEL = "pod-security.kubernetes.io/enforce"
POD_SECURITY_VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"


@dataclass(frozen=True)
class BundleSpec:
    """Everything the bundle of one user's namespace depends on."""

    username: str
    namespace: str
    hub_namespace: str
    quota: dict[str, Any]
    limit_range: dict[str, Any]
    service_account: str = "kdash-user"
    cluster_role: str = "kdash-user"  # "" = no RoleBinding for the user's ServiceAccount
    # the hub's own rights in the namespace: this ClusterRole bound to its ServiceAccount
    # (made before anything else there); "" = the hub holds cluster-wide rights instead
    hub_role: str = ""
    hub_service_account: str = "hub"
    # the other services' rights: {ClusterRole: "serviceaccount" (in hub_namespace) or
    # "namespace/serviceaccount"}
    service_roles: dict[str, str] = field(default_factory=dict)
    ingress_from: list[dict] = field(default_factory=list)
    egress: list[dict] | None = None
    egress_denied_cidrs: tuple[str, ...] = (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.169.254/32")
    hub_api_port: int = 8081
    dns_peers: list[dict] = field(default_factory=lambda: list(KUBE_DNS_PEERS))
    allow_same_namespace: bool = True
    namespace_labels: dict[str, str] = field(default_factory=dict)
    namespace_annotations: dict[str, str] = field(default_factory=dict)
    pull_secrets: list[dict] = field(default_factory=list)  # source Secrets as read
    # PersistentVolumes and claims of NFS shared directories and datasets (storage.py)
    storage_objects: list[dict] = field(default_factory=list)
    pod_security_level: str = "baseline"


def _meta(spec: BundleSpec, name: str, component: str = COMPONENT,
          namespaced: bool = True) -> dict:
    meta: dict[str, Any] = {
        "name": name,
        "labels": L.owner_labels(spec.username, component),
        "annotations": L.owner_annotations(spec.username),
    }
    if namespaced:
        meta["namespace"] = spec.namespace
    return meta


def namespace(spec: BundleSpec, bundle_hash: str | None = None) -> dict:
    meta = _meta(spec, spec.namespace, namespaced=False)
    meta["labels"] = {**spec.namespace_labels, **meta["labels"],
                      POD_SECURITY_LABEL: spec.pod_security_level,
                      POD_SECURITY_VERSION_LABEL: "latest"}
    meta["annotations"] = {**spec.namespace_annotations, **meta["annotations"]}
    if bundle_hash:
        meta["annotations"][BUNDLE_HASH_ANNOTATION] = bundle_hash
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def quota_enforced(quota: dict) -> bool:
    """Whether an API server's admission enforces `quota` now: a real one skips a quota
    until the quota controller has set its status (hard and used) for each of its limits."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    status = quota.get("status") or {}
    return all(k in (status.get("hard") or {}) and k in (status.get("used") or {})
               for k in hard)


def resource_quota(spec: BundleSpec) -> dict:
    return {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": _meta(spec, QUOTA_NAME),
        "spec": {"hard": {k: str(v) for k, v in sorted(spec.quota.items())}},
    }


def limit_range(spec: BundleSpec) -> dict:
    item: dict[str, Any] = {"type": "Container"}
    for key in ("default", "defaultRequest", "max", "min", "maxLimitRequestRatio"):
        if spec.limit_range.get(key):
            item[key] = {k: str(v) for k, v in sorted(spec.limit_range[key].items())}
    return {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": _meta(spec, LIMIT_RANGE_NAME),
        "spec": {"limits": [item]},
    }


def limit_range_shapes(limit_range: dict, containers: list[dict]) -> bool:
    """Whether the LimitRange item `limit_range` (BundleSpec.limit_range) would change or
    judge any of `containers` (pod spec containers as dicts): a min, max or ratio judges
    every container; a default fills in a limit a container lacks, a defaultRequest a
    request (the API server takes a request from the limit before admission)."""
    if any(limit_range.get(k) for k in ("min", "max", "maxLimitRequestRatio")):
        return True
    for container in containers:
        resources = container.get("resources") or {}
        limits = {k for k, v in (resources.get("limits") or {}).items() if v is not None}
        requests = {k for k, v in (resources.get("requests") or {}).items() if v is not None}
        if set(limit_range.get("default") or {}) - limits:
            return True
        if set(limit_range.get("defaultRequest") or {}) - limits - requests:
            return True
    return False


def hub_peers(hub_namespace: str) -> list[dict]:
    """The pods allowed to reach notebooks: the hub and proxy (z2jh marks them with the
    `hub.jupyter.org/network-access-singleuser` label) in the hub's namespace."""
    return [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": hub_namespace}},
        "podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}},
    }]


# the cluster's resolver: CoreDNS/kube-dns pods keep the `k8s-app: kube-dns` label
KUBE_DNS_PEERS: tuple[dict, ...] = ({
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
},)


def default_egress(hub_namespace: str, denied_cidrs: tuple[str, ...] | list[str] = (
        "169.254.169.254/32",), hub_api_port: int = 8081,
        same_namespace: bool = False,
        dns_peers: list[dict] | tuple[dict, ...] = KUBE_DNS_PEERS) -> list[dict]:
    """DNS to the cluster's resolver (`dns_peers`; not port 53 anywhere, which would open
    every cluster address listening there), the hub API, (the user's own pods) and the
    internet except `denied_cidrs` (the cluster's own addresses and cloud metadata)."""
    rules: list[dict] = [
        {"to": [dict(peer) for peer in dns_peers],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": hub_namespace}},
            "podSelector": {"matchLabels": {"component": "hub"}},
        }], "ports": [{"protocol": "TCP", "port": hub_api_port}]},
    ]
    if same_namespace:
        rules.append({"to": [{"podSelector": {}}]})
    internet: dict[str, Any] = {"cidr": "0.0.0.0/0"}
    if denied_cidrs:
        internet["except"] = list(denied_cidrs)
    rules.append({"to": [{"ipBlock": internet}]})
    return rules


def _with_protocols(rule: dict) -> dict:
    """The rule with each port's protocol spelled out (the API server defaults it to TCP, and
    a stored object that differs from the desired one would look like drift forever)."""
    if not rule.get("ports"):
        return dict(rule)
    return {**rule, "ports": [{"protocol": "TCP", **p} for p in rule["ports"]]}


def network_policy(spec: BundleSpec) -> dict:
    """Ingress only from the hub/proxy (and, optionally, the user's own pods); other users'
    namespaces are not selected, so they are kept out. Egress as configured."""
    peers = list(spec.ingress_from) or hub_peers(spec.hub_namespace)
    if spec.allow_same_namespace:
        peers = peers + [{"podSelector": {}}]
    if spec.egress is None:
        egress = default_egress(spec.hub_namespace, spec.egress_denied_cidrs,
                                spec.hub_api_port, spec.allow_same_namespace, spec.dns_peers)
    else:
        egress = list(spec.egress)
    egress = [_with_protocols(rule) for rule in egress]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(spec, NETWORK_POLICY_NAME),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers}],
            "egress": egress,
        },
    }


def service_account(spec: BundleSpec) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(spec, spec.service_account)}


def _binding(spec: BundleSpec, name: str, role: str, subject: dict) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(spec, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role},
        "subjects": [subject],
    }


def role_binding(spec: BundleSpec) -> dict:
    """The user's ServiceAccount gets `cluster_role` in this namespace only (a RoleBinding,
    never a ClusterRoleBinding)."""
    return _binding(spec, ROLE_BINDING_NAME, spec.cluster_role,
                    {"kind": "ServiceAccount", "name": spec.service_account,
                     "namespace": spec.namespace})


def service_account_ref(ref: str, hub_namespace: str) -> tuple[str, str]:
    """("namespace", "name") of "name" (in the hub's namespace) or "namespace/name"."""
    namespace, _, name = ref.rpartition("/")
    return namespace or hub_namespace, name


def service_role_bindings(spec: BundleSpec) -> list[dict]:
    """The hub's RoleBinding (first), then one per other service (launcher, culler): their
    rights in this namespace, granted here and nowhere else. Each is named after its role."""
    roles = ([(spec.hub_role, spec.hub_service_account)] if spec.hub_role else []) + [
        (role, ref) for role, ref in sorted(spec.service_roles.items()) if role != spec.hub_role]
    out = []
    for role, ref in roles:
        namespace, name = service_account_ref(ref, spec.hub_namespace)
        out.append(_binding(spec, role, role, {"kind": "ServiceAccount", "name": name,
                                               "namespace": namespace}))
    return out


def pull_secret_copy(spec: BundleSpec, source: dict) -> dict:
    """A copy of an image pull secret in the user's namespace (type and data only)."""
    src_meta = source.get("metadata") or {}
    meta = _meta(spec, src_meta["name"], PULL_SECRET_COMPONENT)
    meta["annotations"]["kdash-hub.io/copied-from"] = (
        f"{src_meta.get('namespace', '')}/{src_meta['name']}"
    )
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": meta,
        "type": source.get("type", "kubernetes.io/dockerconfigjson"),
        "data": dict(source.get("data") or {}),
    }


def bundle_objects(spec: BundleSpec) -> list[dict]:
    """The namespaced objects of the bundle, in the order they are ensured: the services'
    RoleBindings first (the hub's own rights here come from the first one)."""
    return [
        *service_role_bindings(spec),
        resource_quota(spec),
        limit_range(spec),
        network_policy(spec),
        service_account(spec),
        *([role_binding(spec)] if spec.cluster_role else []),
        *(pull_secret_copy(spec, s) for s in spec.pull_secrets),
        *spec.storage_objects,
    ]


def bootstrap_count(spec: BundleSpec) -> int:
    """How many of `bundle_objects` must be in place before the rest can be written: the
    hub's own RoleBinding, when the hub holds its namespace rights through one."""
    return 1 if spec.hub_role else 0


def bundle_hash(spec: BundleSpec, objects: list[dict] | None = None) -> str:
    """A stable digest of the desired bundle; stored on the Namespace once all is in place.
    `objects`: `bundle_objects(spec)` when the caller has them already."""
    desired = [namespace(spec)] + (bundle_objects(spec) if objects is None else objects)
    return stable_hash(json.dumps(desired, sort_keys=True), length=16)


STEP_TITLES = {
    "ResourceQuota": "resource quota",
    "LimitRange": "default container limits",
    "NetworkPolicy": "network policy",
    "ServiceAccount": "service account",
    "RoleBinding": "role binding",
    "Secret": "secret",  # image pull secrets, S3 dataset files (datasets.py)
    "PersistentVolume": "shared volume",
    "PersistentVolumeClaim": "shared volume claim",
}
