"""The emulator's compiled schema check agrees with jsonschema's full validation.

schemacheck.py lets a write skip jsonschema's walk when it finds the object valid, so a yes
from it must be jsonschema's yes. Here both judge valid objects of many kinds and thousands
of mutations of them (wrong types, unknown fields, missing required fields, values outside an
enum, a list where a map goes), and must give the same verdict.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdash_hub.localcluster.apiserver import resources
from kdash_hub.localcluster.apiserver.schemacheck import SchemaCheck
from kdash_hub.localcluster.apiserver.validation import (
    DEFAULT_KUBE_VERSION,
    Validator,
    _fast_check,
    _validator,
)
from kdash_hub.spawner import bundle
from tests.fixtures.realcp import bundle_spec

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "jupyter-alice", "namespace": "kdash-alice",
                 "labels": {"app": "jupyterhub", "component": "singleuser-server"},
                 "annotations": {"hub.jupyter.org/username": "alice"}},
    "spec": {
        "serviceAccountName": "kdash-notebook", "automountServiceAccountToken": False,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "notebook", "image": "quay.io/jupyter/base-notebook:2025-01-01",
            "args": ["jupyterhub-singleuser"], "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "notebook-port", "containerPort": 8888, "protocol": "TCP"}],
            "env": [{"name": "JUPYTERHUB_API_TOKEN",
                     "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                    {"name": "MEM_LIMIT", "value": "1073741824"}],
            "envFrom": [{"secretRef": {"name": "kdash-notebook-env", "optional": True}}],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1},
                          "requests": {"cpu": "100m", "memory": "256Mi"}},
            "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"},
                             {"name": "files", "mountPath": "/etc/kdash", "readOnly": True}],
            "securityContext": {"allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "readinessProbe": {"httpGet": {"path": "/api", "port": "notebook-port"},
                               "periodSeconds": 5},
        }],
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}},
                    {"name": "files", "secret": {"secretName": "kdash-notebook-files",
                                                 "optional": True, "defaultMode": 0o440}}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}}},
        "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 1.0,
    },
}
DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "pg", "namespace": "kdash-alice"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pg"}},
             "strategy": {"type": "Recreate"},
             "template": {"metadata": {"labels": {"app": "pg"}},
                          "spec": {"containers": [{"name": "pg", "image": "postgres:16",
                                                   "env": [{"name": "A", "value": "b"}]}]}}},
}
INGRESS = {
    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
    "metadata": {"name": "kdash-public-web", "namespace": "kdash-alice",
                 "annotations": {"nginx.ingress.kubernetes.io/auth-url": "https://hub/x"}},
    "spec": {"ingressClassName": "nginx",
             "tls": [{"hosts": ["web--alice.apps.example.org"], "secretName": "wild"}],
             "rules": [{"host": "web--alice.apps.example.org", "http": {"paths": [{
                 "path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]},
}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.org"},
    "spec": {"group": "example.org", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "properties": {"size": {"type": "integer"},
                                                      "tags": {"type": "array",
                                                               "items": {"type": "string"}}},
                     "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}


def corpus() -> list[dict]:
    spec = bundle_spec("alice")
    return [POD, DEPLOYMENT, INGRESS, CRD, bundle.namespace(spec, "h"),
            *bundle.bundle_objects(spec)]


def _rtype(obj: dict):
    rtype = resources.by_kind(obj["kind"], obj["apiVersion"])
    assert rtype is not None
    return rtype


def full_verdict(obj: dict) -> bool:
    v = _validator(DEFAULT_KUBE_VERSION, obj["kind"], obj["apiVersion"])
    return not list(v.iter_errors(obj))


def fast_verdict(obj: dict) -> bool:
    check = _fast_check(DEFAULT_KUBE_VERSION, obj["kind"], obj["apiVersion"])
    assert check is not None, f"{obj['kind']}: no compiled check (an unsupported keyword?)"
    return check(obj)


@pytest.mark.parametrize("obj", corpus(), ids=lambda o: o["kind"])
def test_valid_objects_of_every_kind_pass_both(obj):
    assert full_verdict(obj)
    assert fast_verdict(obj)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, mutate) -> Any:
    if not path:
        return mutate(obj)
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = mutate(parent[path[-1]])
    return obj


MUTATIONS = {
    "int": lambda v: 7, "float": lambda v: 2.5, "string": lambda v: "x", "bool": lambda v: True,
    "null": lambda v: None, "list": lambda v: [v], "map": lambda v: {"k": v},
    "unknown field": lambda v: {**v, "surprise": 1} if isinstance(v, dict) else v,
    "first key removed": lambda v: dict(list(v.items())[1:]) if isinstance(v, dict) else v,
    "bad enum": lambda v: "NotAChoice" if isinstance(v, str) else v,
    "empty": lambda v: type(v)() if isinstance(v, dict | list | str) else v,
}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_objects_get_the_same_verdict(data):
    obj = copy.deepcopy(data.draw(st.sampled_from(corpus()), label="object"))
    path = data.draw(st.sampled_from(_paths(obj)[1:]), label="path")
    how = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
    obj = _set(obj, path, MUTATIONS[how])
    if obj.get("kind") not in ("Pod", "Deployment", "Ingress", "CustomResourceDefinition",
                               "Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy",
                               "ServiceAccount", "RoleBinding", "PersistentVolumeClaim",
                               "Secret") or not isinstance(obj.get("apiVersion"), str) or (
            _validator(DEFAULT_KUBE_VERSION, obj["kind"], obj["apiVersion"]) is None):
        return  # the kind or its version was mutated: no schema to compare with
    assert fast_verdict(obj) == full_verdict(obj), (how, path)


def test_the_validator_still_words_every_error_and_drops_unknown_fields():
    v = Validator()
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["surprise"] = 1
    pod["spec"]["terminationGracePeriodSeconds"] = "soon"
    causes = v.validate(_rtype(pod), pod, field_validation="Strict")
    assert {c["field"] for c in causes} == {"spec.containers[0].surprise",
                                            "spec.terminationGracePeriodSeconds"}
    warned = copy.deepcopy(POD)
    warned["spec"]["containers"][0]["surprise"] = 1
    assert v.validate(_rtype(warned), warned, field_validation="Warn") == []
    assert "surprise" not in warned["spec"]["containers"][0]


def test_an_unknown_keyword_makes_the_schema_unsupported_not_valid():
    checks = SchemaCheck(lambda ref: {"type": "string"})
    assert checks.check({"type": "string", "pattern": "^a$"}) is None
    assert checks.check({"properties": {"a": {"minLength": 3}}}) is None
    assert checks.check({"type": "integer"})(3.0) is True
    assert checks.check({"type": "integer"})(True) is False
    recursive = SchemaCheck(lambda ref: {"type": "object",
                                         "additionalProperties": {"$ref": "#/$defs/T"}})
    tree = recursive.check({"$ref": "#/$defs/T"})
    assert tree({"a": {"b": {}}}) is True
    assert tree({"a": {"b": 1}}) is False
