"""Discovery documents (/version, /api, /apis, /api/v1, /apis/G/V) from the resource table.

kubectl reads these to map kinds to URLs (and short names like `po`, `deploy`); the legacy,
non-aggregated JSON form is served, which every client understands.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import resources
from .resources import ResourceType

_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"],
              "binding": ["create"], "finalize": ["update"], "log": ["get"],
              "exec": ["create", "get"], "token": ["create"]}


def version_info(kube_version: str) -> dict[str, Any]:
    major, minor = kube_version.split(".")[:2]
    return {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0-kdash",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_doc(g, vs) for g, vs in resources.groups().items() if g]}


def api_group(group: str) -> dict[str, Any] | None:
    versions = resources.groups().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group, versions)}


def _entry(t: ResourceType) -> dict[str, Any]:
    e: dict[str, Any] = {"name": t.plural, "singularName": t.singular,
                         "namespaced": t.namespaced, "kind": t.kind, "verbs": list(t.verbs),
                         "storageVersionHash": hashlib.sha256(
                             str(t).encode()).hexdigest()[:11]}
    if t.short_names:
        e["shortNames"] = list(t.short_names)
    if t.categories:
        e["categories"] = list(t.categories)
    return e


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in resources.RESOURCE_TYPES if t.group == group and t.version == version]
    if not types:
        return None
    out = []
    for t in types:
        out.append(_entry(t))
        for sub in t.subresources:
            e = {"name": f"{t.plural}/{sub}", "singularName": "", "namespaced": t.namespaced,
                 "kind": t.kind, "verbs": _SUB_VERBS.get(sub, ["get"])}
            if sub == "scale":
                e.update(group="autoscaling", version="v1", kind="Scale")
            if sub == "binding":
                e["kind"] = "Binding"
            if sub == "exec":
                e["kind"] = "PodExecOptions"
            if sub == "token":
                e.update(group="authentication.k8s.io", version="v1", kind="TokenRequest")
            out.append(e)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": out}


# ---------------------------------------------------------------- OpenAPI v3 (paths only)

def _gv_key(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_index() -> dict[str, Any]:
    """/openapi/v3: where each group-version's document is."""
    paths = {}
    for group, versions in resources.groups().items():
        for v in versions:
            key = _gv_key(group, v)
            digest = hashlib.sha256(key.encode()).hexdigest()[:16].upper()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_document(gv_path: str) -> dict[str, Any] | None:
    """A group-version's OpenAPI v3 document with its operations but no schemas.

    kubectl reads the PATCH operations to learn that the server does field validation
    (`fieldValidation` query parameter), and then validates on the server instead of
    downloading schemas; strategic-merge metadata falls back to its built-in types.
    """
    parts = gv_path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        group, version = "", parts[1]
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    types = [t for t in resources.RESOURCE_TYPES if t.group == group and t.version == version]
    if not types:
        return None
    paths: dict[str, Any] = {}
    for t in types:
        gvk = {"group": group, "version": version, "kind": t.kind}
        base = "/" + gv_path.strip("/")
        base += "/namespaces/{namespace}" if t.namespaced else ""
        ops: dict[str, Any] = {}
        for verb in ("get", "put", "patch", "delete"):
            ops[verb] = {
                "operationId": f"{verb}{t.kind}",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
                     "uniqueItems": True},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"},
                     "uniqueItems": True}],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk}
        paths[f"{base}/{t.plural}/{{name}}"] = ops
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.36.0"},
            "paths": paths, "components": {"schemas": {}}}
