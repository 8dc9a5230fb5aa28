"""Least privilege, judged by a real API server: what the hub, the launcher, the culler and a
user's ServiceAccount may do, in the user's own namespace, another user's, the hub's and
kube-system.

The identities hold ServiceAccount tokens (TokenRequest API) bound only by what helm-values/
ships (rbac/*.yaml, applied by tests/fixtures/realcp.py) and by the RoleBindings the spawner
makes in each user namespace; the user namespaces are provisioned here by the spawner's own
code running with the hub's token. Each row of the table is checked twice: by a
SubjectAccessReview (what RBAC says) and by doing the request with the identity's token
(writes as a server-side dry run, `dryRun=All`, so admission runs too): RBAC, escalation
checks, the ValidatingAdmissionPolicies and Pod Security all have their say.

Run: KDASH_REAL_TIER=1 .venv/bin/python -m pytest -q tests/realtier/test_rbac_matrix.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kdash_hub import labels as L
from kdash_hub.localcluster.apiclient import ApiError
from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.naming import user_namespace
from kdash_hub.spawner import bundle
from tests.fixtures.realcp import (
    ACCOUNTS,
    HUB_NAMESPACE,
    REAL_TIER_ENV,
    RealTier,
    bundle_spec,
    identity_kubeconfig,
    mint_token,
    provision_as_hub,
)

OWN, OTHER, HUB, SYSTEM, CLUSTER = "own", "other", "hub", "kube-system", "cluster"
# users of their own: the session's cluster is shared, and other tests' alice and bob have
# namespaces already (this matrix provisions fresh ones, at the levels it needs)
ALICE, BOB = "rbac-alice", "rbac-bob"
NS = {OWN: user_namespace(ALICE), OTHER: user_namespace(BOB), HUB: HUB_NAMESPACE,
      SYSTEM: "kube-system"}
RECORD = "kdash-instance-demo"
log = logging.getLogger("tests.rbac_matrix")

# resource -> (API group/version path, plural, namespaced)
API = {
    "pods": ("/api/v1", "pods", True), "secrets": ("/api/v1", "secrets", True),
    "configmaps": ("/api/v1", "configmaps", True), "services": ("/api/v1", "services", True),
    "endpoints": ("/api/v1", "endpoints", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "serviceaccounts": ("/api/v1", "serviceaccounts", True),
    "persistentvolumeclaims": ("/api/v1", "persistentvolumeclaims", True),
    "resourcequotas": ("/api/v1", "resourcequotas", True),
    "limitranges": ("/api/v1", "limitranges", True), "events": ("/api/v1", "events", True),
    "namespaces": ("/api/v1", "namespaces", False), "nodes": ("/api/v1", "nodes", False),
    "persistentvolumes": ("/api/v1", "persistentvolumes", False),
    "deployments": ("/apis/apps/v1", "deployments", True),
    "jobs": ("/apis/batch/v1", "jobs", True),
    "cronjobs": ("/apis/batch/v1", "cronjobs", True),
    "networkpolicies": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "ingresses": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "clusterrolebindings": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
}
# kind -> resource, for objects made in set-up
PLURAL = {"Secret": "secrets", "Deployment": "deployments", "Pod": "pods",
          "ResourceQuota": "resourcequotas", "LimitRange": "limitranges",
          "NetworkPolicy": "networkpolicies", "ServiceAccount": "serviceaccounts",
          "RoleBinding": "rolebindings"}
GROUPS = {"/api/v1": "", "/apis/apps/v1": "apps", "/apis/batch/v1": "batch",
          "/apis/networking.k8s.io/v1": "networking.k8s.io",
          "/apis/discovery.k8s.io/v1": "discovery.k8s.io",
          "/apis/rbac.authorization.k8s.io/v1": "rbac.authorization.k8s.io"}


# --- bodies of the writes -------------------------------------------------------------------

def meta(name: str, ns: str | None, labels: dict | None = None) -> dict:
    out: dict[str, Any] = {"name": name}
    if ns:
        out["namespace"] = ns
    if labels:
        out["labels"] = labels
    return out


def ours(owner: str = ALICE, component: str = "launcher") -> dict[str, str]:
    return L.owner_labels(owner, component)


def restricted_pod(name: str, ns: str, labels: dict | None = None,
                   volumes: list | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, labels), "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {"kdash-test/nowhere": "true"},  # never runs
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"],
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}}}],
        "volumes": volumes or []}}


def secret(name: str, ns: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta(name, ns, labels),
            "stringData": {"k": "v"}}


def record(ns: str, owner: str = ALICE, name: str = RECORD) -> dict:
    labels = {**L.owner_labels(owner, "launcher-instance"), L.INSTANCE: "demo"}
    return secret(name, ns, labels)


def deployment(name: str, ns: str, labels: dict | None = None) -> dict:
    pod = restricted_pod("x", ns)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, ns, labels),
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": pod["spec"]}}}


def service(name: str, ns: str, kind: str = "ClusterIP", labels: dict | None = None) -> dict:
    spec: dict[str, Any] = {"type": kind}
    if kind == "ExternalName":
        spec["externalName"] = "kubernetes.default.svc.cluster.local"
    else:
        spec["ports"] = [{"port": 80}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, ns, labels),
            "spec": spec}


def ingress(name: str, ns: str, labels: dict | None = None) -> dict:
    """A public URL's Ingress (services/launcher/publicurl.py)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": meta(name, ns, labels), "spec": {"rules": [{
                "host": f"{name}.apps.example.org", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix", "backend": {"service": {
                        "name": name, "port": {"number": 80}}}}]}}]}}


def cronjob(name: str, ns: str, labels: dict | None = None) -> dict:
    """A launcher template's CronJob (services/launcher/catalog/nightly-script.yaml)."""
    pod = restricted_pod("x", ns)
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(name, ns, labels),
            "spec": {"schedule": "0 2 * * *", "suspend": True, "jobTemplate": {"spec": {
                "template": {"spec": {**pod["spec"], "restartPolicy": "Never"}}}}}}


def rolebinding(name: str, ns: str, role: str, sa_ns: str, sa: str,
                labels: dict | None = None) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta(name, ns, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]}


def pv(name: str, source: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta(name, None, labels),
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     **source}}


def netpol(name: str, ns: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": meta(name, ns, labels),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}}


NFS_ROOT = {"name": "everyone", "nfs": {"server": "nfs.example.org", "path": "/exports/homes"}}
HUB_LABELS = L.owner_labels(ALICE, bundle.COMPONENT)
TOKEN_REQUEST = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                 "spec": {"expirationSeconds": 600}}
MERGE = {"metadata": {"annotations": {"kdash-test/touched": "yes"}}}


# --- the table --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    verb: str  # get, list, create, patch, delete, deletecollection, connect (exec)
    resource: str  # "pods", "pods/log", "pods/exec", ...
    where: str  # OWN, OTHER, HUB, SYSTEM or CLUSTER (all namespaces / cluster-scoped)
    rbac: bool  # SubjectAccessReview's answer
    outcome: str  # "allowed", "forbidden" (RBAC), "escalation", "podsecurity", or a policy
    body: Any = None  # callable(ns) -> object, for create; dict for patch
    name: str | None = None  # for get/patch/delete/subresources
    why: str = ""

    def id(self, who: str) -> str:
        return f"{who}:{self.verb}:{self.resource}:{self.where}" + (
            f":{self.why}" if self.why else "")


def allowed(verb, resource, where, body=None, name=None, why=""):
    return Row(verb, resource, where, True, "allowed", body, name, why)


def denied(verb, resource, where, body=None, name=None, why=""):
    return Row(verb, resource, where, False, "forbidden", body, name, why)


def refused(by, verb, resource, where, body=None, name=None, why=""):
    """RBAC allows it, admission (or RBAC's escalation check) refuses it."""
    return Row(verb, resource, where, True, by, body, name, why)


HUB_ROWS = [
    # the namespace and its guardrails, in user namespaces only
    allowed("get", "namespaces", OWN, name=NS[OWN]),
    allowed("create", "namespaces", CLUSTER, lambda ns: {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": meta("kdash-zed", None, L.owner_labels("zed", bundle.COMPONENT))}),
    refused("kdash-namespaces", "create", "namespaces", CLUSTER, lambda ns: {
        "apiVersion": "v1", "kind": "Namespace", "metadata": meta("not-ours", None)},
        why="unlabelled"),
    allowed("patch", "namespaces", OWN, MERGE, name=NS[OWN]),
    refused("kdash-namespaces", "patch", "namespaces", SYSTEM, {"metadata": {"labels": {
        L.MANAGED_BY: L.MANAGED_BY_VALUE, L.COMPONENT: bundle.COMPONENT}}}, name="kube-system",
        why="claim-kube-system"),
    allowed("delete", "namespaces", OTHER, name=NS[OTHER]),
    # (kube-system itself Kubernetes never deletes: the hub's own namespace stands in)
    refused("kdash-namespaces", "delete", "namespaces", HUB, name=HUB_NAMESPACE),
    # the notebook pod and its claim
    allowed("create", "pods", OWN, lambda ns: restricted_pod(
        "jupyter-x", ns, {L.MANAGED_BY: "kubespawner"})),
    allowed("create", "pods", OTHER, lambda ns: restricted_pod(
        "jupyter-x", ns, {L.MANAGED_BY: "kubespawner"})),
    denied("create", "pods", HUB, lambda ns: restricted_pod("x", ns), why="chart-role-not-ours"),
    denied("create", "pods", SYSTEM, lambda ns: restricted_pod("x", ns)),
    refused("kdash-service-writes", "create", "pods", OWN,
            lambda ns: restricted_pod("unlabelled", ns), why="unlabelled"),
    allowed("list", "pods", CLUSTER, why="kubespawner-reflector"),
    denied("get", "pods", SYSTEM, name="anything"),
    allowed("list", "nodes", CLUSTER),
    # RoleBindings: only the pack's roles, only in the pack's namespaces, only for its accounts
    allowed("create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "kdash-user", ns, "kdash-user", HUB_LABELS)),
    refused("escalation", "create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "admin", ns, "kdash-user", HUB_LABELS), why="bind-admin"),
    refused("kdash-role-bindings", "create", "rolebindings", SYSTEM, lambda ns: rolebinding(
        "x", ns, "kdash-hub-namespace", HUB_NAMESPACE, "hub", HUB_LABELS),
        why="itself-in-kube-system"),
    refused("kdash-role-bindings", "create", "rolebindings", HUB, lambda ns: rolebinding(
        "x", ns, "kdash-hub-namespace", HUB_NAMESPACE, "hub", HUB_LABELS),
        why="itself-in-hub-namespace"),
    refused("kdash-role-bindings", "create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "kdash-hub-namespace", NS[OTHER], "kdash-user", HUB_LABELS),
        why="hub-role-to-a-user"),
    refused("kdash-role-bindings", "create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "kdash-user", NS[OTHER], "kdash-user", HUB_LABELS),
        why="user-role-to-another-users-account"),
    denied("create", "clusterrolebindings", CLUSTER, lambda ns: {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta("x", None), "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kdash-user"},
        "subjects": [{"kind": "ServiceAccount", "name": "hub", "namespace": HUB_NAMESPACE}]}),
    allowed("create", "networkpolicies", OWN, lambda ns: netpol("x", ns, HUB_LABELS)),
    refused("kdash-service-writes", "create", "networkpolicies", OWN,
            lambda ns: netpol("allow-all", ns), why="unlabelled"),
    denied("create", "networkpolicies", SYSTEM, lambda ns: netpol("x", ns, HUB_LABELS)),
    allowed("patch", "resourcequotas", OWN, MERGE, name=bundle.QUOTA_NAME),
    # Secrets: pull secret copies in user namespaces, nothing elsewhere
    allowed("get", "secrets", OWN, name="users-own"),
    refused("kdash-service-writes", "patch", "secrets", OWN, MERGE, name="users-own",
            why="a-users-secret"),
    denied("get", "secrets", SYSTEM, name="probe"),
    denied("get", "secrets", HUB, name="probe"),
    denied("list", "secrets", CLUSTER),
    # PersistentVolumes: nfs or local, the pack's labels
    allowed("create", "persistentvolumes", CLUSTER, lambda ns: pv(
        "kdash-home-x", {"nfs": {"server": "nfs.example.org", "path": "/exports/homes/x"}},
        L.owner_labels(ALICE, "home"))),
    refused("kdash-persistent-volumes", "create", "persistentvolumes", CLUSTER, lambda ns: pv(
        "kdash-root", {"hostPath": {"path": "/"}}, L.owner_labels(ALICE, "home")),
        why="hostPath"),
    # the home provisioner's Job, in the hub's namespace only
    allowed("create", "jobs", HUB, lambda ns: {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta("kdash-home-x", ns),
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox"}]}}}}),
    denied("create", "jobs", OWN, lambda ns: {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta("x", ns, HUB_LABELS),
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox"}]}}}}),
    denied("create", "deployments", OWN, lambda ns: deployment("x", ns, HUB_LABELS)),
    denied("create", "configmaps", OWN, lambda ns: {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("x", ns, HUB_LABELS)}),
    denied("create", "serviceaccounts/token", OWN, lambda ns: {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        name="kdash-user"),
]

LAUNCHER_ROWS = [
    allowed("get", "namespaces", OWN, name=NS[OWN]),
    denied("create", "namespaces", CLUSTER, lambda ns: {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": meta("kdash-dave", None, L.owner_labels("dave", bundle.COMPONENT))}),
    allowed("list", "namespaces", CLUSTER),
    # records and the kinds a template may contain, in user namespaces
    allowed("create", "secrets", OWN, lambda ns: record(ns, name="kdash-instance-new")),
    allowed("create", "secrets", OTHER, lambda ns: record(ns, BOB, "kdash-instance-new")),
    allowed("patch", "secrets", OWN, MERGE, name=RECORD),
    allowed("list", "secrets", OWN),
    denied("list", "secrets", CLUSTER),
    denied("get", "secrets", HUB, name="probe"),
    denied("get", "secrets", SYSTEM, name="probe"),
    allowed("create", "deployments", OWN, lambda ns: deployment("x", ns, ours())),
    refused("kdash-service-writes", "create", "deployments", OWN,
            lambda ns: deployment("x", ns), why="unlabelled"),
    refused("kdash-service-writes", "patch", "deployments", OWN, MERGE, name="users-own",
            why="a-users-deployment"),
    denied("create", "deployments", HUB, lambda ns: deployment("x", ns, ours())),
    denied("create", "deployments", SYSTEM, lambda ns: deployment("x", ns, ours())),
    allowed("create", "services", OWN, lambda ns: service("x", ns, labels=ours())),
    refused("kdash-services", "create", "services", OWN,
            lambda ns: service("x", ns, "NodePort", ours()), why="NodePort"),
    allowed("list", "deployments", CLUSTER, why="admin-list"),
    # batch work: a template's CronJob, in user namespaces only, with the pack's labels
    allowed("create", "cronjobs", OWN, lambda ns: cronjob("x", ns, ours())),
    refused("kdash-service-writes", "create", "cronjobs", OWN,
            lambda ns: cronjob("x", ns), why="unlabelled"),
    denied("create", "cronjobs", SYSTEM, lambda ns: cronjob("x", ns, ours())),
    denied("create", "cronjobs", HUB, lambda ns: cronjob("x", ns, ours())),
    allowed("list", "cronjobs", CLUSTER, why="admin-list"),
    # public URLs: the Ingress of a published instance, in user namespaces only
    allowed("create", "ingresses", OWN, lambda ns: ingress("x", ns, ours())),
    refused("kdash-service-writes", "create", "ingresses", OWN,
            lambda ns: ingress("x", ns), why="unlabelled"),
    denied("create", "ingresses", SYSTEM, lambda ns: ingress("x", ns, ours())),
    denied("create", "ingresses", HUB, lambda ns: ingress("x", ns, ours())),
    allowed("get", "pods/log", OWN, name="jupyter-alice"),
    denied("get", "pods/log", SYSTEM, name="anything"),
    denied("create", "pods", OWN, lambda ns: restricted_pod("x", ns, ours())),
    denied("create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "kdash-user", ns, "kdash-user", ours())),
    denied("create", "networkpolicies", OWN, lambda ns: netpol("x", ns, ours())),
    denied("patch", "resourcequotas", OWN, MERGE, name=bundle.QUOTA_NAME),
    denied("list", "nodes", CLUSTER),
    # kubeconfig download: a token of the user's own ServiceAccount, of no other account,
    # in no other namespace
    allowed("create", "serviceaccounts/token", OWN, lambda ns: TOKEN_REQUEST,
            name="kdash-user"),
    denied("create", "serviceaccounts/token", OWN, lambda ns: TOKEN_REQUEST, name="default",
           why="another-account"),
    denied("create", "serviceaccounts/token", SYSTEM, lambda ns: TOKEN_REQUEST,
           name="kdash-user"),
    denied("create", "serviceaccounts/token", HUB, lambda ns: TOKEN_REQUEST, name="hub"),
    denied("create", "serviceaccounts/token", HUB, lambda ns: TOKEN_REQUEST,
           name="kdash-launcher", why="itself"),
    # the Datasets page (userdatasets.py): reads the user's datasets Secret and the hub's
    # copy of the last start, makes the user's Secret with the pack's labels in the user's
    # namespace; a Secret the user made by hand is never changed, nor one elsewhere
    allowed("get", "secrets", OWN, name="users-own", why="user-datasets"),
    allowed("get", "secrets", OWN, name="kdash-notebook-env", why="last-start-copy"),
    allowed("create", "secrets", OWN, lambda ns: secret(
        "my-datasets", ns, ours(component="user-datasets")), why="user-datasets"),
    allowed("patch", "secrets", OWN, MERGE, name="kdash-notebook-env", why="labelled"),
    refused("kdash-service-writes", "create", "secrets", OWN,
            lambda ns: secret("my-datasets", ns), why="unlabelled-user-datasets"),
    refused("kdash-service-writes", "patch", "secrets", OWN, MERGE, name="users-own",
            why="hand-made-user-datasets"),
    denied("create", "secrets", HUB, lambda ns: secret(
        "my-datasets", ns, ours(component="user-datasets")), why="user-datasets"),
    denied("create", "secrets", SYSTEM, lambda ns: secret(
        "my-datasets", ns, ours(component="user-datasets")), why="user-datasets"),
]

CULLER_ROWS = [
    allowed("list", "namespaces", CLUSTER),
    denied("get", "namespaces", OWN, name=NS[OWN]),
    allowed("list", "secrets", OWN),
    allowed("patch", "secrets", OWN, MERGE, name=RECORD),
    allowed("patch", "secrets", OTHER, MERGE, name=RECORD),
    allowed("delete", "secrets", OWN, name=RECORD),
    # a deleted instance's keys out of the launcher's notebook Secrets (notebookenv.forget)
    allowed("get", "secrets", OWN, name="kdash-notebook-env"),
    allowed("patch", "secrets", OWN, MERGE, name="kdash-notebook-env"),
    allowed("delete", "secrets", OWN, name="kdash-notebook-files"),
    refused("kdash-service-writes", "patch", "secrets", OWN, MERGE, name="users-own",
            why="a-users-secret"),
    denied("create", "secrets", OWN, lambda ns: record(ns, name="kdash-instance-new")),
    denied("list", "secrets", CLUSTER),
    denied("get", "secrets", HUB, name="probe"),
    denied("get", "secrets", SYSTEM, name="probe"),
    allowed("patch", "deployments", OWN, {"spec": {"replicas": 0}}, name="kdash-demo"),
    refused("kdash-service-writes", "patch", "deployments", OWN, {"spec": {"replicas": 0}},
            name="users-own", why="a-users-deployment"),
    allowed("delete", "deployments", OWN, name="kdash-demo"),
    denied("create", "deployments", OWN, lambda ns: deployment("x", ns, ours())),
    denied("patch", "deployments", SYSTEM, {"spec": {"replicas": 0}}, name="coredns"),
    denied("create", "pods", OWN, lambda ns: restricted_pod("x", ns, ours())),
    denied("list", "pods", CLUSTER),
    denied("create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "kdash-user", ns, "kdash-user", ours())),
]

USER_ROWS = [
    # their work, in their namespace
    allowed("create", "pods", OWN, lambda ns: restricted_pod("mine", ns)),
    allowed("create", "deployments", OWN, lambda ns: deployment("mine", ns)),
    allowed("create", "secrets", OWN, lambda ns: secret("mine", ns)),
    allowed("patch", "secrets", OWN, MERGE, name="users-own"),
    allowed("create", "services", OWN, lambda ns: service("mine", ns)),
    allowed("create", "persistentvolumeclaims", OWN, lambda ns: {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("mine", ns),
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}),
    allowed("get", "pods/log", OWN, name="jupyter-alice"),
    allowed("connect", "pods/exec", OWN, name="jupyter-alice"),
    allowed("list", "resourcequotas", OWN),
    # nothing of anyone else's
    denied("create", "pods", OTHER, lambda ns: restricted_pod("x", ns)),
    denied("list", "secrets", OTHER),
    denied("get", "secrets", HUB, name="probe"),
    denied("get", "secrets", SYSTEM, name="probe"),
    denied("list", "pods", CLUSTER),
    denied("get", "namespaces", OWN, name=NS[OWN]),
    # not the namespace's guardrails
    denied("create", "networkpolicies", OWN, lambda ns: netpol("allow-all", ns)),
    denied("delete", "networkpolicies", OWN, name=bundle.NETWORK_POLICY_NAME),
    denied("create", "rolebindings", OWN, lambda ns: rolebinding(
        "x", ns, "admin", ns, "kdash-user")),
    denied("patch", "resourcequotas", OWN, MERGE, name=bundle.QUOTA_NAME),
    denied("create", "limitranges", OWN, lambda ns: {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": meta("x", ns),
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "64"}}]}}),
    denied("create", "endpoints", OWN, lambda ns: {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": meta("x", ns)}),
    denied("create", "endpointslices", OWN, lambda ns: {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta("x", ns),
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
    denied("delete", "resourcequotas", OWN, name=bundle.QUOTA_NAME),
    # no Ingress of their own: none that names a public host, or the launcher's forward-auth
    denied("create", "ingresses", OWN, lambda ns: ingress("x", ns)),
    denied("delete", "rolebindings", OWN, name="kdash-launcher-namespace"),
    denied("create", "serviceaccounts/token", OWN, lambda ns: {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        name="kdash-user"),
    # not the launcher's records: RBAC allows their Secrets, the admission policy doesn't
    refused("kdash-instance-records", "patch", "secrets", OWN, MERGE, name=RECORD),
    refused("kdash-instance-records", "delete", "secrets", OWN, name=RECORD),
    # `kubectl delete secrets --all`: a collection DELETE is judged object by object, with
    # no request name (the policy once failed on that and so also blocked the namespace
    # controller: test_a_user_namespace_with_records_can_still_be_deleted)
    refused("kdash-instance-records", "deletecollection", "secrets", OWN),
    refused("kdash-instance-records", "create", "secrets", OWN,
            lambda ns: record(ns, name="kdash-instance-forged"), why="forged"),
    refused("kdash-instance-records", "create", "secrets", OWN,
            lambda ns: secret("kdash-instance-squat", ns), why="squat-the-name"),
    refused("kdash-instance-records", "patch", "secrets", OWN, {"metadata": {"labels": {
        L.COMPONENT: "launcher-instance"}}}, name="users-own", why="relabel-as-record"),
    # no way out of the namespace's network or storage
    refused("kdash-services", "create", "services", OWN,
            lambda ns: service("x", ns, "LoadBalancer"), why="LoadBalancer"),
    refused("kdash-services", "create", "services", OWN,
            lambda ns: service("x", ns, "ExternalName"), why="ExternalName"),
    refused("podsecurity", "create", "pods", OWN,
            lambda ns: restricted_pod("x", ns, volumes=[NFS_ROOT]), why="inline-nfs-export"),
]

TABLE = {"hub": HUB_ROWS, "launcher": LAUNCHER_ROWS, "culler": CULLER_ROWS,
         "user": USER_ROWS}
CASES = [(who, row) for who, rows in TABLE.items() for row in rows]


# --- the world the rows act on ------------------------------------------------------------

@dataclass
class World:
    tier: RealTier
    kubeconfigs: dict[str, Path]
    usernames: dict[str, str]


def spec_for(username: str, level: str, cluster_role: str = "kdash-user") -> bundle.BundleSpec:
    return bundle_spec(username, level, cluster_role)


async def build_world(tier: RealTier) -> World:
    hub = tier.identity("hub")
    # alice's namespace as with NFS homes (restricted), bob's with the default (baseline)
    assert await provision_as_hub(hub, spec_for(ALICE, "restricted")) == "created"
    assert await provision_as_hub(hub, spec_for(BOB, "baseline")) == "created"
    admin = client_for(tier.admin_kubeconfig)
    try:
        objects = [
            record(NS[OWN]), record(NS[OTHER], BOB),
            secret("users-own", NS[OWN]), secret("probe", HUB_NAMESPACE),
            secret("kdash-notebook-env", NS[OWN],
                   L.owner_labels(ALICE, "launcher-notebook-env")),
            secret("kdash-notebook-files", NS[OWN],
                   L.owner_labels(ALICE, "launcher-notebook-files")),
            secret("probe", "kube-system"),
            deployment("kdash-demo", NS[OWN], ours()), deployment("users-own", NS[OWN]),
            restricted_pod("jupyter-alice", NS[OWN], {L.MANAGED_BY: "kubespawner"}),
        ]
        for obj in objects:
            group, plural, _ = API[PLURAL[obj["kind"]]]
            await admin.request("POST", f"{group}/namespaces/{obj['metadata']['namespace']}/"
                                        f"{plural}", body=obj)
    finally:
        await admin.close()
    token = await mint_token(tier.admin_kubeconfig, NS[OWN], "kdash-user")
    user = identity_kubeconfig(tier.admin_kubeconfig, tier.workdir / "alice.kubeconfig", token,
                               NS[OWN])
    return World(tier, {**tier.identities, "user": user}, {
        "hub": f"system:serviceaccount:{HUB_NAMESPACE}:{ACCOUNTS['hub']}",
        "launcher": f"system:serviceaccount:{HUB_NAMESPACE}:{ACCOUNTS['launcher']}",
        "culler": f"system:serviceaccount:{HUB_NAMESPACE}:{ACCOUNTS['culler']}",
        "user": f"system:serviceaccount:{NS[OWN]}:kdash-user"})


@pytest.fixture(scope="module")
def world(_real_tier_session: RealTier | None) -> Iterator[World]:
    """Once per module (real_control_plane is per test): the session's control plane."""
    if _real_tier_session is None:
        pytest.skip(f"the real tier is off ({REAL_TIER_ENV}=1 starts a real control plane)")
    yield asyncio.run(build_world(_real_tier_session))


# --- checking one row -----------------------------------------------------------------------

def path_of(row: Row) -> tuple[str, str | None]:
    """(URL path, SubjectAccessReview subresource) of the row's request."""
    resource, _, sub = row.resource.partition("/")
    group, plural, namespaced = API[resource]
    if row.where == CLUSTER or not namespaced:
        base = f"{group}/{plural}"
    else:
        base = f"{group}/namespaces/{NS[row.where]}/{plural}"
    if row.name:
        base += f"/{row.name}"
    if sub:
        base += f"/{sub}"
    return base, sub or None


async def review(world: World, who: str, row: Row) -> bool:
    resource, _, sub = row.resource.partition("/")
    group, plural, namespaced = API[resource]
    verb = {"connect": "create"}.get(row.verb, row.verb)
    attrs: dict[str, Any] = {"verb": verb, "group": GROUPS[group], "resource": plural}
    if sub:
        attrs["subresource"] = sub
    if row.name:
        attrs["name"] = row.name
    if row.where != CLUSTER and namespaced:
        attrs["namespace"] = NS[row.where]
    elif resource == "namespaces" and row.name:
        attrs["namespace"] = row.name  # a namespace is its own namespace to the authorizer
    user = world.usernames[who]
    sa_ns = user.split(":")[2]
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "resourceAttributes": attrs,
                     "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}",
                                "system:authenticated"]}}
    admin = client_for(world.tier.admin_kubeconfig)
    try:
        answer = await admin.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body)
    finally:
        await admin.close()
    return bool(answer["status"].get("allowed"))


def classify(status: int, body: dict) -> str:
    message = str(body.get("message", ""))
    if status < 400 or status in (400, 404):  # authorized (the object/stream is the issue)
        return "allowed"
    if status != 403:
        return f"HTTP {status}: {message}"
    if "ValidatingAdmissionPolicy" in message:
        return message.split("ValidatingAdmissionPolicy '", 1)[1].split("'", 1)[0]
    if "violates PodSecurity" in message:
        return "podsecurity"
    if "attempting to grant RBAC permissions not currently held" in message:
        return "escalation"
    return "forbidden"


async def do(world: World, who: str, row: Row) -> tuple[str, str]:
    path, _ = path_of(row)
    api = client_for(world.kubeconfigs[who])
    params = {"dryRun": "All"} if row.verb in (
        "create", "patch", "delete", "deletecollection") else None
    try:
        if row.verb in ("get", "list"):
            await api.request("GET", path)
        elif row.verb == "create":
            ns = None if row.where == CLUSTER else NS[row.where]
            await api.request("POST", path, body=row.body(ns), params=params)
        elif row.verb == "patch":
            await api.request("PATCH", path, body=row.body, params=params,
                              content_type="application/merge-patch+json")
        elif row.verb in ("delete", "deletecollection"):
            await api.request("DELETE", path, params=params)
        elif row.verb == "connect":
            await api.request("POST", path, params={"command": "true", "stdout": "true"})
        return "allowed", ""
    except ApiError as e:
        return classify(e.status, e.body), str(e.body.get("message", ""))
    finally:
        await api.close()


@pytest.mark.parametrize(("who", "row"), CASES, ids=[row.id(who) for who, row in CASES])
async def test_rbac_matrix(world: World, who: str, row: Row):
    assert await review(world, who, row) is row.rbac, "SubjectAccessReview"
    outcome, message = await do(world, who, row)
    assert outcome == row.outcome, message


# --- the rest of the promises ------------------------------------------------------------


async def test_the_hub_provisions_a_namespace_with_its_shipped_roles_alone(
        world: World):
    """Made above with the hub's token only: every bundle object is there, the hub's own
    RoleBinding first; a second ensure finds nothing to do."""
    spec = spec_for(ALICE, "restricted")
    assert await provision_as_hub(world.kubeconfigs["hub"], spec) == "unchanged"
    admin = client_for(world.tier.admin_kubeconfig)
    try:
        for obj in bundle.bundle_objects(spec):
            group, plural, _ = API[PLURAL[obj["kind"]]]
            got = await admin.request("GET", f"{group}/namespaces/{NS[OWN]}/{plural}/"
                                             f"{obj['metadata']['name']}")
            assert L.is_owned_by(got, ALICE)
        ns = await admin.request("GET", f"/api/v1/namespaces/{NS[OWN]}")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    finally:
        await admin.close()


async def test_an_empty_user_cluster_role_leaves_the_users_account_without_rights(
        world: World):
    spec = spec_for("rbac-carol", "baseline", cluster_role="")
    assert await provision_as_hub(world.kubeconfigs["hub"], spec) == "created"
    row = Row("list", "pods", OWN, False, "forbidden")
    user = f"system:serviceaccount:{spec.namespace}:kdash-user"
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts"], "resourceAttributes": {
                "verb": row.verb, "resource": "pods", "namespace": spec.namespace}}}
    admin = client_for(world.tier.admin_kubeconfig)
    try:
        answer = await admin.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body)
        assert answer["status"].get("allowed") is not True
        bindings = await admin.request(
            "GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{spec.namespace}/rolebindings")
        assert {b["roleRef"]["name"] for b in bindings["items"]} == {
            "kdash-hub-namespace", "kdash-launcher-namespace", "kdash-culler-namespace"}
    finally:
        await admin.close()


async def test_a_user_namespace_with_records_can_still_be_deleted(world: World):
    """The records policy lets Kubernetes' namespace controller empty a namespace."""
    spec = spec_for("rbac-erin", "baseline")
    assert await provision_as_hub(world.kubeconfigs["hub"], spec) == "created"
    launcher = client_for(world.kubeconfigs["launcher"])
    hub = client_for(world.kubeconfigs["hub"])
    admin = client_for(world.tier.admin_kubeconfig)
    try:
        await launcher.request("POST", f"/api/v1/namespaces/{spec.namespace}/secrets",
                               body=record(spec.namespace, "rbac-erin"))
        await hub.request("DELETE", f"/api/v1/namespaces/{spec.namespace}")
        deadline = time.monotonic() + 120
        while True:
            try:
                await admin.request("GET", f"/api/v1/namespaces/{spec.namespace}")
            except ApiError as e:
                assert e.status == 404
                break
            assert time.monotonic() < deadline, "the namespace was never emptied"
            await asyncio.sleep(1)
    finally:
        for api in (launcher, hub, admin):
            await api.close()


def controller_manager_pid(tier: RealTier) -> int:
    """The kube-controller-manager of `tier`'s control plane (its kubeconfig is there)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (argv[0].endswith(b"kube-controller-manager")
                and any(str(tier.workdir).encode() in arg for arg in argv)):
            return int(proc.name)
    raise AssertionError(f"no kube-controller-manager under {tier.workdir}")


async def test_a_users_first_rights_meet_a_quota_in_force(world: World):
    """Attack: the moment a new namespace is made, its user tries to create more than the
    quota allows. A real API server skips a ResourceQuota until the quota controller has
    filled in its status, so the user's rights wait for that: with the controller-manager
    stopped (SIGSTOP) the namespace gets its quota but no RoleBinding of the user; once it
    runs again, the very first pod over the quota is refused."""
    spec = dataclasses.replace(spec_for("rbac-quinn", "baseline"), quota={"pods": "0"})
    pid = controller_manager_pid(world.tier)
    admin = client_for(world.tier.admin_kubeconfig)
    os.kill(pid, signal.SIGSTOP)
    try:
        provisioning = asyncio.ensure_future(provision_as_hub(world.kubeconfigs["hub"], spec))
        await asyncio.sleep(4)
        assert not provisioning.done()
        quota = await admin.request(
            "GET", f"/api/v1/namespaces/{spec.namespace}/resourcequotas/{bundle.QUOTA_NAME}")
        assert not bundle.quota_enforced(quota), quota
        bindings = await admin.request(
            "GET", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{spec.namespace}/rolebindings")
        assert {b["metadata"]["name"] for b in bindings["items"]} <= {"kdash-hub-namespace"}
    finally:
        os.kill(pid, signal.SIGCONT)
        await admin.close()
    assert await provisioning == "created"
    token = await mint_token(world.tier.admin_kubeconfig, spec.namespace, "kdash-user")
    user = client_for(identity_kubeconfig(world.tier.admin_kubeconfig,
                                          world.tier.workdir / "quinn.kubeconfig", token,
                                          spec.namespace))
    try:
        with pytest.raises(ApiError) as refused:
            await user.request("POST", f"/api/v1/namespaces/{spec.namespace}/pods",
                               body=restricted_pod("over-quota", spec.namespace))
        assert refused.value.status == 403 and "exceeded quota" in str(refused.value), \
            refused.value
    finally:
        await user.close()
