"""The objects of a user's namespace bundle, as plain dicts (no API calls here).

Namespace, ResourceQuota, LimitRange, NetworkPolicy, ServiceAccount, RoleBinding and copies
of image pull secrets. Every object carries kdash-hub's managed/owner labels, so ownership
checks and the drift watch (label-selected) see exactly these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import stable_hash

COMPONENT = "user-namespace"
BUNDLE_HASH_ANNOTATION = "kdash-hub.io/bundle-hash"
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
    cluster_role: str = "edit"
    ingress_from: list[dict] = field(default_factory=list)
    egress: list[dict] | None = None
    allow_same_namespace: bool = True
    namespace_labels: dict[str, str] = field(default_factory=dict)
    namespace_annotations: dict[str, str] = field(default_factory=dict)
    pull_secrets: list[dict] = field(default_factory=list)  # source Secrets as read
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


def hub_peers(hub_namespace: str) -> list[dict]:
    """The pods allowed to reach notebooks: the hub and proxy (z2jh marks them with the
    `hub.jupyter.org/network-access-singleuser` label) in the hub's namespace."""
    return [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": hub_namespace}},
        "podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}},
    }]


def default_egress(hub_namespace: str) -> list[dict]:
    """DNS anywhere, the hub API, and the internet except the cloud metadata address."""
    return [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": hub_namespace}},
            "podSelector": {"matchLabels": {"component": "hub"}},
        }], "ports": [{"protocol": "TCP", "port": 8081}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]},
    ]


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
    egress = default_egress(spec.hub_namespace) if spec.egress is None else list(spec.egress)
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


def role_binding(spec: BundleSpec) -> dict:
    """The user's ServiceAccount gets `cluster_role` in this namespace only (a RoleBinding,
    never a ClusterRoleBinding)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(spec, ROLE_BINDING_NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": spec.cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": spec.service_account,
                      "namespace": spec.namespace}],
    }


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
    """The namespaced objects of the bundle, in the order they are ensured."""
    return [
        resource_quota(spec),
        limit_range(spec),
        network_policy(spec),
        service_account(spec),
        role_binding(spec),
        *(pull_secret_copy(spec, s) for s in spec.pull_secrets),
    ]


def bundle_hash(spec: BundleSpec) -> str:
    """A stable digest of the desired bundle; stored on the Namespace once all is in place."""
    desired = [namespace(spec)] + bundle_objects(spec)
    return stable_hash(json.dumps(desired, sort_keys=True), length=16)


STEP_TITLES = {
    "ResourceQuota": "resource quota",
    "LimitRange": "default container limits",
    "NetworkPolicy": "network policy",
    "ServiceAccount": "service account",
    "RoleBinding": "role binding",
    "Secret": "image pull secret",
}
