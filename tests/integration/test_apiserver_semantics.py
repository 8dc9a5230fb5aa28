"""Semantics of the emulated Kubernetes API server, one test per behaviour clients rely on.

Every test goes through HTTP (kubernetes_asyncio or raw requests), so with
KDASH_TEST_KUBECONFIG set the same suite runs against a real cluster; tests that need the
emulator's fault injection then skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.fixtures.apiserver import KubeTarget

MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod(name: str, *, labels: dict | None = None, cpu: str | None = None,
        image: str = "busybox:1.36", **spec) -> dict:
    container: dict = {"name": "main", "image": image}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            # a scheduler that doesn't exist keeps real clusters from scheduling test pods
            "spec": {"schedulerName": "kdash-test-none", "containers": [container], **spec}}


def cm(name: str, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": {"k": "v"}}


def deployment(name: str, replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"schedulerName": "kdash-test-none",
                                           "containers": [{"name": "main",
                                                           "image": "busybox:1.36",
                                                           "env": [{"name": "A", "value": "1"}]
                                                           }]}}}}


async def eventually(check, within: float = 10.0, interval: float = 0.05):
    """Poll the async `check` until it returns something other than None or False."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


# ------------------------------------------------------------------------- discovery


async def test_discovery_version_api_and_groups(kube_target: KubeTarget):
    k = kube_target
    version = await k.request("GET", "/version")
    assert version.status == 200 and version.body["major"] == "1"
    api = await k.request("GET", "/api")
    assert api.body["kind"] == "APIVersions" and "v1" in api.body["versions"]
    groups = await k.request("GET", "/apis")
    names = {g["name"] for g in groups.body["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io"} <= names
    core = await k.request("GET", "/api/v1")
    by_name = {r["name"]: r for r in core.body["resources"]}
    assert by_name["pods"]["namespaced"] and "po" in by_name["pods"]["shortNames"]
    assert not by_name["namespaces"]["namespaced"]
    assert {"pods/status", "pods/binding"} <= set(by_name)
    apps = await k.request("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps.body["resources"]}
    assert by_name["deployments/scale"]["kind"] == "Scale"
    assert "watch" in by_name["statefulsets"]["verbs"]


# ------------------------------------------------------------------------- CRUD


def _manifests(ns: str, n: str) -> list[tuple[str, dict]]:
    """(collection path, object) for every kind the emulator must serve."""
    meta = {"name": n}
    core, apps = f"/api/v1/namespaces/{ns}", f"/apis/apps/v1/namespaces/{ns}"
    net = f"/apis/networking.k8s.io/v1/namespaces/{ns}"
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    tmpl = deployment(n)["spec"]
    return [
        (f"{core}/pods", pod(n)),
        (f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                              "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]}}),
        (f"{core}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}),
        ("/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/tmp/kdash-pv"}}}),
        (f"{core}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                             "stringData": {"a": "b"}}),
        (f"{core}/configmaps", cm(n)),
        (f"{core}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": meta}),
        (f"{core}/events", {"apiVersion": "v1", "kind": "Event", "metadata": meta,
                            "involvedObject": {"kind": "Pod", "name": "x", "namespace": ns},
                            "reason": "Test", "message": "hello"}),
        ("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": f"{ns}-node"}}),
        (f"{core}/resourcequotas", {"apiVersion": "v1", "kind": "ResourceQuota",
                                    "metadata": meta, "spec": {"hard": {"pods": "10"}}}),
        (f"{core}/limitranges", {"apiVersion": "v1", "kind": "LimitRange", "metadata": meta,
                                 "spec": {"limits": [{"type": "Container",
                                                      "default": {"cpu": "1"}}]}}),
        (f"{core}/replicationcontrollers", {
            "apiVersion": "v1", "kind": "ReplicationController", "metadata": meta,
            "spec": {"replicas": 0, "selector": {"app": n}, "template": tmpl["template"]}}),
        (f"{core}/podtemplates", {"apiVersion": "v1", "kind": "PodTemplate",
                                  "metadata": meta, "template": tmpl["template"]}),
        (f"{apps}/deployments", {**deployment(n), "spec": {**tmpl, "replicas": 0}}),
        (f"{apps}/statefulsets", {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                  "metadata": meta, "spec": {**tmpl, "replicas": 0,
                                                             "serviceName": n}}),
        (f"/apis/batch/v1/namespaces/{ns}/jobs", {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"suspend": True, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "m", "image": "x:1"}]}}}}),
        (f"{net}/networkpolicies", {"apiVersion": "networking.k8s.io/v1",
                                    "kind": "NetworkPolicy", "metadata": meta,
                                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        (f"{net}/ingresses", {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                              "metadata": meta, "spec": {"defaultBackend": {"service": {
                                  "name": n, "port": {"number": 80}}}}}),
        (f"{rbac}/namespaces/{ns}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        (f"{rbac}/namespaces/{ns}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                          "kind": "Role", "name": n},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
        (f"{rbac}/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"{ns}-cr"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        (f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{ns}-crb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"{ns}-cr"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
    ]


async def test_crud_for_every_kind(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("crud")
    for collection, obj in _manifests(ns, "thing"):
        name = obj["metadata"]["name"]
        created = await k.request("POST", collection, obj)
        assert created.status == 201, (collection, created.body)
        assert created.body["kind"] == obj["kind"]
        got = await k.request("GET", f"{collection}/{name}")
        assert got.status == 200 and got.body["metadata"]["uid"] == created.body[
            "metadata"]["uid"]
        listed = await k.request("GET", collection)
        assert listed.body["kind"] == obj["kind"] + "List"
        assert name in [i["metadata"]["name"] for i in listed.body["items"]]
        for _ in range(20):  # a real cluster's controllers may write it meanwhile (PVCs)
            updated = dict(got.body)
            updated["metadata"] = {**got.body["metadata"], "labels": {"updated": "yes"}}
            put = await k.request("PUT", f"{collection}/{name}", updated)
            if put.status != 409:
                break
            got = await k.request("GET", f"{collection}/{name}")
        assert put.status == 200, (collection, put.body)
        assert put.body["metadata"]["labels"]["updated"] == "yes"
        assert int(put.body["metadata"]["resourceVersion"]) > int(
            got.body["metadata"]["resourceVersion"])
        deleted = await k.request("DELETE", f"{collection}/{name}")
        assert deleted.status in (200, 202), (collection, deleted.body)
        if obj["kind"] in ("Pod", "Service", "PersistentVolumeClaim", "PersistentVolume",
                           "ServiceAccount", "ResourceQuota", "PodTemplate"):
            assert deleted.body["kind"] == obj["kind"]  # these answer with the object
        else:  # a Status, unless the object lives on a little (e.g. GC finalizers)
            assert deleted.body["kind"] == "Status" or deleted.body["metadata"].get(
                "deletionTimestamp"), (collection, deleted.body)
            if deleted.body["kind"] == "Status":
                assert deleted.body["status"] == "Success"
                assert deleted.body["details"]["name"] == name

        async def gone(c=collection, n=name):
            return (await k.request("GET", f"{c}/{n}")).status == 404
        await eventually(gone)


async def test_cluster_wide_list_and_list_resource_version(kube_target: KubeTarget):
    k = kube_target
    a, b = await k.namespace("lista"), await k.namespace("listb")
    label = uniq("run")
    for ns in (a, b):
        await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p", labels={"run": label}))
    everywhere = await k.request("GET", "/api/v1/pods", params={"labelSelector": f"run={label}"})
    assert {i["metadata"]["namespace"] for i in everywhere.body["items"]} == {a, b}
    assert int(everywhere.body["metadata"]["resourceVersion"]) >= max(
        int(i["metadata"]["resourceVersion"]) for i in everywhere.body["items"])


async def test_pagination_with_limit_and_continue(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("page")
    for i in range(5):
        await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", cm(f"c{i}"))
    names, token = [], None
    while True:
        params = {"limit": "2", "labelSelector": ""}
        if token:
            params["continue"] = token
        page = await k.request("GET", f"/api/v1/namespaces/{ns}/configmaps", params=params)
        assert len(page.body["items"]) <= 2
        if not token:  # the first page: 6 configmaps (with kube-root-ca.crt), 2 shown
            assert page.body["metadata"]["remainingItemCount"] == 4
        names += [i["metadata"]["name"] for i in page.body["items"]]
        token = page.body["metadata"].get("continue")
        if not token:
            break
    assert [n for n in names if n.startswith("c")] == [f"c{i}" for i in range(5)]


# ------------------------------------------------------------------------- metadata


async def test_metadata_uid_rv_timestamp_generate_name_and_namespace_default(
        kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("meta")
    body = cm("")
    body["metadata"] = {"generateName": "gen-"}
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert r.status == 201
    meta = r.body["metadata"]
    assert meta["name"].startswith("gen-") and len(meta["name"]) == len("gen-") + 5
    assert meta["namespace"] == ns  # defaulted from the URL
    assert len(meta["uid"]) == 36 and meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"].endswith("Z")
    other = await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert other.body["metadata"]["name"] != meta["name"]
    mismatch = cm("x", namespace="elsewhere")
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", mismatch)
    assert r.status == 400 and r.reason == "BadRequest"


# ------------------------------------------------------------------------- errors


async def test_status_errors_not_found_already_exists_missing_namespace(
        kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("err")
    missing = await k.request("GET", f"/api/v1/namespaces/{ns}/pods/nope")
    assert missing.status == 404
    assert missing.body["kind"] == "Status" and missing.body["reason"] == "NotFound"
    assert missing.body["message"] == 'pods "nope" not found'
    assert missing.body["details"] == {"name": "nope", "kind": "pods"}
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    again = await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    assert (again.status, again.reason) == (409, "AlreadyExists")
    assert again.body["message"] == 'pods "p" already exists'
    nons = await k.request("POST", "/api/v1/namespaces/kdash-no-such-ns/pods", pod("p"))
    assert (nons.status, nons.reason) == (404, "NotFound")
    assert nons.body["message"] == 'namespaces "kdash-no-such-ns" not found'
    dep = await k.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/nope")
    assert dep.body["message"] == 'deployments.apps "nope" not found'


async def test_conflict_on_stale_resource_version(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("conflict")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    first = (await k.request("POST", path, cm("c"))).body
    newer = dict(first, data={"k": "v2"})
    assert (await k.request("PUT", f"{path}/c", newer)).status == 200
    stale = dict(first, data={"k": "v3"})
    r = await k.request("PUT", f"{path}/c", stale)
    assert (r.status, r.reason) == (409, "Conflict")
    assert "the object has been modified" in r.body["message"]
    r = await k.request("PATCH", f"{path}/c", {"metadata": {
        "resourceVersion": first["metadata"]["resourceVersion"]}, "data": {"k": "v4"}},
        content_type=MERGE)
    assert (r.status, r.reason) == (409, "Conflict")
    # kubernetes_asyncio surfaces it as ApiException 409
    v1 = client.CoreV1Api(k.api)
    with pytest.raises(ApiException) as e:
        await v1.replace_namespaced_config_map("c", ns, stale)
    assert e.value.status == 409


async def test_invalid_objects_get_422_with_causes(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("inval")
    path = f"/api/v1/namespaces/{ns}/pods"
    bad_name = await k.request("POST", path, pod("Not_A_Name"))
    assert (bad_name.status, bad_name.reason) == (422, "Invalid")
    causes = bad_name.body["details"]["causes"]
    assert any(c["field"] == "metadata.name" and c["reason"] == "FieldValueInvalid"
               for c in causes)
    assert bad_name.body["message"].startswith('Pod "Not_A_Name" is invalid: metadata.name')
    no_containers = pod("empty")
    no_containers["spec"].pop("containers")
    r = await k.request("POST", path, no_containers)
    assert r.status == 422
    assert any(c["field"] == "spec.containers" and c["reason"] == "FieldValueRequired"
               for c in r.body["details"]["causes"])
    unknown = pod("unknown")
    unknown["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    r = await k.request("POST", path, unknown, params={"fieldValidation": "Strict"})
    # a strict decoding error is a 400, not a 422 (see test_apiserver_parity.py)
    assert (r.status, r.reason) == (400, "BadRequest")
    assert "imagePullPolcy" in r.body["message"]
    ignored = pod("ignored")
    ignored["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    r = await k.request("POST", path, ignored, params={"fieldValidation": "Ignore"})
    assert r.status == 201  # unknown fields dropped, not stored
    assert "imagePullPolcy" not in r.body["spec"]["containers"][0]
    warned = pod("warned")
    warned["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    session = k.api.rest_client.pool_manager
    async with session.post(f"{k.url}{path}", json=warned, params={"fieldValidation": "Warn"},
                            headers=await k._headers("application/json")) as resp:
        assert resp.status == 201
        warning = resp.headers.get("Warning", "")
        assert warning.startswith("299 - ") and "spec.containers[0].imagePullPolcy" in warning
    wrong_type = pod("wrongtype")
    wrong_type["spec"]["containers"][0]["ports"] = [{"containerPort": "eighty"}]
    r = await k.request("POST", path, wrong_type)
    assert 400 <= r.status < 500 and r.status != 404
    gpu_without_limit = pod("gpu")
    gpu_without_limit["spec"]["containers"][0]["resources"] = {
        "requests": {"nvidia.com/gpu": "1"}}
    r = await k.request("POST", path, gpu_without_limit)
    assert r.status == 422
    assert any(c["field"].endswith("resources.limits") for c in r.body["details"]["causes"])


async def test_immutable_fields(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("immut")
    path = f"/api/v1/namespaces/{ns}/pods/p"
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    image = await k.request("PATCH", path, {"spec": {"containers": [
        {"name": "main", "image": "busybox:1.37"}]}}, content_type=SMP)
    assert image.status == 200
    assert image.body["spec"]["containers"][0]["image"] == "busybox:1.37"
    other = await k.request("PATCH", path, {"spec": {"restartPolicy": "Never"}},
                            content_type=MERGE)
    assert (other.status, other.reason) == (422, "Invalid")
    assert any(c["field"] == "spec" and c["reason"] == "FieldValueForbidden"
               for c in other.body["details"]["causes"])
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"
    rb = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
          "metadata": {"name": "rb"},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "a"},
          "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}
    assert (await k.request("POST", rbac, rb)).status == 201
    r = await k.request("PATCH", f"{rbac}/rb", {"roleRef": {"name": "b"}}, content_type=MERGE)
    assert r.status == 422
    assert any(c["field"] == "roleRef" for c in r.body["details"]["causes"])


async def test_bad_input_gets_4xx_status_never_5xx(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("bad")
    pods = f"/api/v1/namespaces/{ns}/pods"
    cases = [
        await k.request("POST", pods, raw_body=b'{"apiVersion": "v1", "kind": "Pod", '),
        await k.request("POST", pods, raw_body=b"[1, 2"),
        await k.request("GET", f"/api/v1/namespaces/{ns}/widgets"),
        await k.request("GET", "/apis/example.com/v1/things"),
        await k.request("POST", pods, cm("not-a-pod")),
        await k.request("GET", pods, params={"labelSelector": "a in (b"}),
        await k.request("GET", pods, params={"fieldSelector": "spec.nope=1"}),
        await k.request("PATCH", f"{pods}/missing", {"a": 1}, content_type=MERGE),
        await k.request("POST", pods, raw_body=b'"just a string"'),
    ]
    await k.request("POST", pods, pod("p"))
    cases += [
        await k.request("PATCH", f"{pods}/p", [{"op": "remove", "path": "/no/such"}],
                        content_type=JSONP),
        await k.request("PATCH", f"{pods}/p", {"a": 1}, content_type="text/plain"),
        await k.request("PATCH", f"{pods}/p", raw_body=b"{nope", content_type=MERGE),
        await k.request("PUT", f"{pods}/p", pod("other-name")),
    ]
    malformed = [  # wrongly typed fields are decode errors: 400 on a real server
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m1"}, "spec": "x"},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m2"},
         "spec": {"containers": "x"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "m3", "labels": "x"},
         "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}},
    ]
    for body in malformed:
        r = await k.request("POST", pods, body)
        assert r.status == 400 and r.reason == "BadRequest", (body, r.body)
    huge = {**cm("huge"), "data": {"k": "x" * (4 * 1024 * 1024)}}
    cases.append(await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", huge))
    assert cases[-1].status == 413
    statuses = [c.status for c in cases]
    assert all(400 <= s < 500 for s in statuses), statuses
    # a group nobody serves: Go's plain "404 page not found", as on a real server
    assert statuses[3] == 404 and cases[3].body == "404 page not found\n"
    del cases[3]
    assert all(isinstance(c.body, dict) and c.body.get("kind") == "Status"
               for c in cases), [c.body for c in cases]
    assert statuses[0] == 400 and statuses[1] == 400
    # an unknown resource of a served group-version: the route table's generic 404
    assert cases[2].body == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Failure",
                             "message": "the server could not find the requested resource",
                             "reason": "NotFound", "details": {}, "code": 404}
    assert cases[3].status == 400  # a ConfigMap posted to pods


# ------------------------------------------------------------------------- selectors


async def test_label_selectors(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("labels")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for name, labels in [("a", {"tier": "web", "env": "prod"}),
                         ("b", {"tier": "db", "env": "dev"}),
                         ("c", {"tier": "cache"})]:
        await k.request("POST", path, cm(name, labels=labels))

    async def names(selector: str) -> set[str]:
        r = await k.request("GET", path, params={"labelSelector": selector})
        assert r.status == 200, r.body
        return {i["metadata"]["name"] for i in r.body["items"]} - {"kube-root-ca.crt"}

    assert await names("tier=web") == {"a"}
    assert await names("tier==db") == {"b"}
    assert await names("tier!=web") == {"b", "c"}
    assert await names("tier in (web, db)") == {"a", "b"}
    assert await names("tier notin (web,db)") == {"c"}
    assert await names("env") == {"a", "b"}
    assert await names("!env") == {"c"}
    assert await names("env,tier in (db,cache)") == {"b"}


async def test_field_selectors(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("fields")
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("one"))
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("two"))

    async def pod_names(selector: str, where: str = f"/api/v1/namespaces/{ns}/pods"):
        r = await k.request("GET", where, params={"fieldSelector": selector})
        assert r.status == 200, r.body
        return {i["metadata"]["name"] for i in r.body["items"]}

    assert await pod_names("metadata.name=one") == {"one"}
    assert await pod_names("metadata.name!=one") == {"two"}
    assert await pod_names(f"metadata.namespace={ns}", "/api/v1/pods") == {"one", "two"}
    assert await pod_names("status.phase=Pending") == {"one", "two"}
    assert await pod_names("status.phase=Running") == set()
    events = f"/api/v1/namespaces/{ns}/events"
    for i, (kind, name) in enumerate([("Pod", "one"), ("Pod", "two"), ("Service", "one")]):
        r = await k.request("POST", events, {
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"ev{i}"},
            "involvedObject": {"kind": kind, "name": name, "namespace": ns},
            "reason": "Tested", "message": "m", "type": "Normal"})
        assert r.status == 201
    sel = await k.request("GET", events, params={
        "fieldSelector": "involvedObject.kind=Pod,involvedObject.name=one"})
    assert [e["metadata"]["name"] for e in sel.body["items"]] == ["ev0"]
    bad = await k.request("GET", events, params={"fieldSelector": "nope=1"})
    assert (bad.status, bad.reason) == (400, "BadRequest")


# ------------------------------------------------------------------------- watch


async def test_watch_resume_from_resource_version_with_timeout(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("watch")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    start = await k.request("GET", path)
    rv = start.body["metadata"]["resourceVersion"]
    await k.request("POST", path, cm("w"))
    await k.request("PATCH", f"{path}/w", {"data": {"k": "2"}}, content_type=MERGE)
    await k.request("DELETE", f"{path}/w")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    events = await k.watch(path, {"resourceVersion": rv, "timeoutSeconds": "1"})
    elapsed = loop.time() - t0
    mine = [(e["type"], e["object"]["metadata"]["name"]) for e in events
            if e["type"] != "BOOKMARK" and e["object"]["metadata"]["name"] == "w"]
    assert mine == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert 0.8 <= elapsed < 5, elapsed  # the server ended the stream at timeoutSeconds
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events
           if e["type"] != "BOOKMARK"]
    assert rvs == sorted(set(rvs)) and rvs[0] > int(rv)  # each version its own RV


async def test_watch_without_resource_version_sends_current_state_then_changes(
        kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("watch0")
    path = f"/api/v1/namespaces/{ns}/pods"
    await k.request("POST", path, pod("existing", labels={"w": "1"}))

    async def later():
        await asyncio.sleep(0.3)
        await k.request("POST", path, pod("new", labels={"w": "1"}))
        await k.request("POST", path, pod("other", labels={"w": "2"}))

    task = asyncio.create_task(later())
    events = await k.watch(path, {"labelSelector": "w=1", "timeoutSeconds": "5"}, limit=2)
    await task
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "existing"), ("ADDED", "new")]


async def test_watch_kubernetes_asyncio_stream(kube_target: KubeTarget):
    from kubernetes_asyncio import watch

    k = kube_target
    ns = await k.namespace("kwatch")
    v1 = client.CoreV1Api(k.api)
    listed = await v1.list_namespaced_pod(ns)

    async def later():
        await asyncio.sleep(0.2)
        await v1.create_namespaced_pod(ns, pod("kw"))
        await v1.delete_namespaced_pod("kw", ns)

    task = asyncio.create_task(later())
    seen = []
    w = watch.Watch()
    async with w.stream(v1.list_namespaced_pod, ns, timeout_seconds=2,
                        resource_version=listed.metadata.resource_version) as stream:
        async for ev in stream:
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                break
    await task
    assert seen == [("ADDED", "kw"), ("MODIFIED", "kw"), ("DELETED", "kw")] or seen == [
        ("ADDED", "kw"), ("DELETED", "kw")]


async def test_watch_bookmarks(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("bookmark")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    events = await k.watch(path, {"allowWatchBookmarks": "true", "timeoutSeconds": "4"},
                           until=lambda e: e["type"] == "BOOKMARK", max_wait=10)
    bookmark = events[-1]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "ConfigMap"
    assert bookmark["object"]["metadata"]["resourceVersion"].isdigit()


async def test_watch_too_old_resource_version_is_410_expired(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("gone")
    await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", cm("x"))
    await k.expire_history()
    events = await k.watch(f"/api/v1/namespaces/{ns}/configmaps",
                           {"resourceVersion": "1", "timeoutSeconds": "5"}, limit=1)
    if not k.is_local and events[0]["type"] == "ADDED":
        # a young real cluster still holds resourceVersion 1 (etcd compacts every 5 min,
        # which a client can't force): then it replays the history instead
        assert events[0]["object"]["metadata"]["namespace"] == ns
        return
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert "too old resource version" in status["message"]


async def test_watch_from_resource_version_survives_a_small_event_window():
    """The emulator's window is bounded: old events are dropped, newer ones still resume."""
    from kdash_hub.localcluster.apiserver import APIServer

    srv = APIServer(event_window=10)
    await srv.start()
    try:
        from kdash_hub.localcluster.apiserver import resources
        cms = resources.by_kind("ConfigMap")
        for i in range(30):
            srv.ops.create(cms, "default", cm(f"c{i}"))
        assert srv.store.compacted_rv > 0
        with pytest.raises(Exception) as e:
            srv.store.subscribe(cms, "default", lambda o: True, 1)
        assert getattr(e.value, "code", None) == 410
        w = srv.store.subscribe(cms, "default", lambda o: True, srv.store.rv - 2)
        assert w.queue.qsize() == 2
    finally:
        await srv.stop()


# ------------------------------------------------------------------------- patch


async def test_merge_patch(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("merge")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    await k.request("POST", path, {**cm("m", labels={"a": "1", "b": "2"}),
                                   "data": {"x": "1", "y": "2"}})
    r = await k.request("PATCH", f"{path}/m", {"metadata": {"labels": {"a": None, "c": "3"}},
                                                "data": {"y": "two"}}, content_type=MERGE)
    assert r.status == 200
    assert r.body["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert r.body["data"] == {"x": "1", "y": "two"}


async def test_json_patch(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("jsonp")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    created = await k.request("POST", path, {**cm("j", annotations={"a/b": "2", "c": "3"}),
                                             "data": {"x": "1"}})
    assert created.status == 201, created.body
    ops = [{"op": "add", "path": "/data/z", "value": "3"},
           {"op": "replace", "path": "/data/x", "value": "one"},
           {"op": "remove", "path": "/metadata/annotations/a~1b"},
           {"op": "test", "path": "/data/z", "value": "3"},
           {"op": "copy", "from": "/data/z", "path": "/data/w"},
           {"op": "add", "path": "/metadata/labels", "value": {"l": "v"}}]
    r = await k.request("PATCH", f"{path}/j", ops, content_type=JSONP)
    assert r.status == 200, r.body
    assert r.body["data"] == {"x": "one", "z": "3", "w": "3"}
    assert r.body["metadata"]["labels"] == {"l": "v"}
    assert r.body["metadata"]["annotations"] == {"c": "3"}
    failed = await k.request("PATCH", f"{path}/j", [
        {"op": "test", "path": "/data/x", "value": "nope"}], content_type=JSONP)
    assert failed.status == 422


async def test_strategic_merge_patch_merges_lists_by_key(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("smp")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    dep = deployment("d", replicas=0)
    spec = dep["spec"]["template"]["spec"]
    spec["containers"][0]["volumeMounts"] = [{"name": "v1", "mountPath": "/a"}]
    spec["containers"].append({"name": "side", "image": "busybox:1.36"})
    spec["volumes"] = [{"name": "v1", "emptyDir": {}}]
    spec["tolerations"] = [{"key": "a", "operator": "Exists"}]
    assert (await k.request("POST", path, dep)).status == 201
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "env": [{"name": "B", "value": "2"}],
                        "volumeMounts": [{"name": "v2", "mountPath": "/b"}]},
                       {"name": "side", "$patch": "delete"}],
        "volumes": [{"name": "v2", "emptyDir": {}}],
        "tolerations": [{"key": "b", "operator": "Exists"}]}}}}
    r = await k.request("PATCH", f"{path}/d", patch, content_type=SMP)
    assert r.status == 200, r.body
    tspec = r.body["spec"]["template"]["spec"]
    assert [c["name"] for c in tspec["containers"]] == ["main"]
    main = tspec["containers"][0]
    assert main["image"] == "busybox:1.36"  # untouched fields stay
    # merged lists in a real server's order: the patch's new items first
    assert [(e["name"], e["value"]) for e in main["env"]] == [("B", "2"), ("A", "1")]
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/b", "/a"]
    assert [v["name"] for v in tspec["volumes"]] == ["v2", "v1"]
    # tolerations are an atomic list in Kubernetes: a strategic patch replaces them
    assert [t["key"] for t in tspec["tolerations"]] == ["b"]
    assert r.body["metadata"]["generation"] == 2


# ------------------------------------------------------------------------- subresources


async def test_status_subresource(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("status")
    path = f"/api/v1/namespaces/{ns}/pods/p"
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    ignored = await k.request("PATCH", path, {"status": {"phase": "Running"},
                                              "metadata": {"labels": {"x": "y"}}},
                              content_type=MERGE)
    assert ignored.status == 200
    assert ignored.body["status"]["phase"] == "Pending"  # status can't change via the pod
    assert ignored.body["metadata"]["labels"] == {"x": "y"}
    r = await k.request("PATCH", f"{path}/status", {
        "status": {"phase": "Running", "podIP": "10.1.2.3"},
        "metadata": {"labels": {"x": "ignored"}}}, content_type=MERGE)
    assert r.status == 200, r.body
    assert r.body["status"]["phase"] == "Running" and r.body["status"]["podIP"] == "10.1.2.3"
    # a pod's status strategy keeps only its spec and owners: labels change here too
    assert r.body["metadata"]["labels"] == {"x": "ignored"}
    current = (await k.request("GET", path)).body
    current["status"]["phase"] = "Succeeded"
    put = await k.request("PUT", f"{path}/status", current)
    assert put.status == 200 and put.body["status"]["phase"] == "Succeeded"
    gotten = await k.request("GET", f"{path}/status")
    assert gotten.body["status"]["phase"] == "Succeeded"


async def test_pod_binding_sets_node_name(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("bind")
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}}
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/pods/p/binding", binding)
    assert r.status == 201, r.body
    got = await k.request("GET", f"/api/v1/namespaces/{ns}/pods/p")
    assert got.body["spec"]["nodeName"] == "node-a"
    again = await k.request("POST", f"/api/v1/namespaces/{ns}/pods/p/binding", binding)
    assert again.status == 409


async def test_scale_subresource(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("scale")
    for plural, body in (("deployments", deployment("d", 1)),
                         ("statefulsets", {**deployment("s", 1), "kind": "StatefulSet"})):
        if plural == "statefulsets":
            body["spec"]["serviceName"] = "s"
        path = f"/apis/apps/v1/namespaces/{ns}/{plural}"
        assert (await k.request("POST", path, body)).status == 201
        name = body["metadata"]["name"]
        for _ in range(20):  # a real controller may write the status meanwhile: 409
            scale = await k.request("GET", f"{path}/{name}/scale")
            assert scale.body["kind"] == "Scale" and scale.body["spec"]["replicas"] == 1
            scale.body["spec"]["replicas"] = 3
            put = await k.request("PUT", f"{path}/{name}/scale", scale.body)
            if put.status != 409:
                break
        assert put.status == 200 and put.body["spec"]["replicas"] == 3
        patched = await k.request("PATCH", f"{path}/{name}/scale",
                                  {"spec": {"replicas": 0}}, content_type=MERGE)
        assert patched.status == 200
        assert patched.body["spec"] == {}  # ScaleSpec.replicas is omitempty
        obj = await k.request("GET", f"{path}/{name}")
        assert obj.body["spec"]["replicas"] == 0


async def test_workload_controllers_create_owned_pods(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("ctrl")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    await k.request("POST", path, deployment("web", replicas=2))

    async def pods_of(app: str, n: int):
        r = await k.request("GET", f"/api/v1/namespaces/{ns}/pods",
                            params={"labelSelector": f"app={app}"})
        return r.body["items"] if len(r.body["items"]) == n else None

    pods = await eventually(lambda: pods_of("web", 2))
    assert all(p["metadata"]["ownerReferences"][0]["controller"] for p in pods)
    await k.request("PATCH", f"{path}/web", {"spec": {"replicas": 1}}, content_type=MERGE)
    await eventually(lambda: pods_of("web", 1))
    sts = {**deployment("db", 2), "kind": "StatefulSet"}
    sts["spec"]["serviceName"] = "db"
    sts["spec"]["podManagementPolicy"] = "Parallel"  # real clusters: don't wait for db-0
    await k.request("POST", f"/apis/apps/v1/namespaces/{ns}/statefulsets", sts)
    pods = await eventually(lambda: pods_of("db", 2))
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]
    await k.request("DELETE", f"{path}/web")
    await eventually(lambda: pods_of("web", 0))


# ------------------------------------------------------------------------- lifecycle


async def test_finalizers_keep_object_until_removed(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("fin")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    await k.request("POST", path, cm("held", finalizers=["kdash.test/hold"]))
    r = await k.request("DELETE", f"{path}/held")
    assert r.status in (200, 202)
    held = await k.request("GET", f"{path}/held")
    assert held.status == 200 and held.body["metadata"]["deletionTimestamp"]
    assert held.body["metadata"]["finalizers"] == ["kdash.test/hold"]
    r = await k.request("PATCH", f"{path}/held", {"metadata": {"finalizers": None}},
                        content_type=MERGE)
    assert r.status == 200

    async def gone():
        return (await k.request("GET", f"{path}/held")).status == 404
    await eventually(gone)


async def _owner_and_dependents(k: KubeTarget, ns: str, dep_meta: dict | None = None):
    path = f"/api/v1/namespaces/{ns}/configmaps"
    owner = (await k.request("POST", path, cm("owner"))).body
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}
    for i in range(2):
        body = cm(f"dep{i}", ownerReferences=[ref], **(dep_meta or {}))
        assert (await k.request("POST", path, body)).status == 201
    return path


async def test_owner_reference_gc_background(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("gcbg")
    path = await _owner_and_dependents(k, ns)
    await k.request("DELETE", f"{path}/owner", {"propagationPolicy": "Background"})

    async def collected():
        return all([(await k.request("GET", f"{path}/dep{i}")).status == 404
                    for i in range(2)])
    await eventually(collected)


async def test_owner_reference_gc_foreground(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("gcfg")
    path = await _owner_and_dependents(k, ns, {"finalizers": ["kdash.test/hold"]})
    r = await k.request("DELETE", f"{path}/owner", {"propagationPolicy": "Foreground"})
    assert r.status in (200, 202)

    async def owner_waits():
        o = await k.request("GET", f"{path}/owner")
        return o.status == 200 and "foregroundDeletion" in (
            o.body["metadata"].get("finalizers") or []) and o.body
    await eventually(owner_waits)

    async def deps_deleting():
        ds = [await k.request("GET", f"{path}/dep{i}") for i in range(2)]
        return all(d.body["metadata"].get("deletionTimestamp") for d in ds)
    await eventually(deps_deleting)
    assert (await k.request("GET", f"{path}/owner")).status == 200  # still waiting
    for i in range(2):
        await k.request("PATCH", f"{path}/dep{i}", {"metadata": {"finalizers": None}},
                        content_type=MERGE)

    async def all_gone():
        names = ["owner", "dep0", "dep1"]
        return all([(await k.request("GET", f"{path}/{n}")).status == 404 for n in names])
    await eventually(all_gone)


async def test_owner_reference_orphan(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("gcor")
    path = await _owner_and_dependents(k, ns)
    await k.request("DELETE", f"{path}/owner", {"propagationPolicy": "Orphan"})

    async def orphaned():
        if (await k.request("GET", f"{path}/owner")).status != 404:
            return False
        deps = [await k.request("GET", f"{path}/dep{i}") for i in range(2)]
        return all(d.status == 200 and not d.body["metadata"].get("ownerReferences")
                   for d in deps)
    await eventually(orphaned)


async def test_namespace_deletion_cascades_and_blocks_new_content(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("cascade")
    core = f"/api/v1/namespaces/{ns}"
    await k.request("POST", f"{core}/pods", pod("p"))
    await k.request("POST", f"{core}/configmaps", cm("held", finalizers=["kdash.test/hold"]))
    await k.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("d", 0))
    r = await k.request("DELETE", f"/api/v1/namespaces/{ns}")
    assert r.status in (200, 202)
    got = await k.request("GET", f"/api/v1/namespaces/{ns}")
    assert got.body["status"]["phase"] == "Terminating"
    assert got.body["metadata"]["deletionTimestamp"]
    refused = await k.request("POST", f"{core}/configmaps", cm("late"))
    assert (refused.status, refused.reason) == (403, "Forbidden")
    assert "because it is being terminated" in refused.body["message"]

    async def emptied_but_held():
        pods = await k.request("GET", f"{core}/pods")
        deps = await k.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments")
        return not pods.body["items"] and not deps.body["items"]
    await eventually(emptied_but_held, within=30)
    assert (await k.request("GET", f"/api/v1/namespaces/{ns}")).status == 200
    await k.request("PATCH", f"{core}/configmaps/held", {"metadata": {"finalizers": None}},
                    content_type=MERGE)

    async def ns_gone():
        return (await k.request("GET", f"/api/v1/namespaces/{ns}")).status == 404
    await eventually(ns_gone, within=60)


# ------------------------------------------------------------------------- quota


async def _quota(k: KubeTarget, ns: str, hard: dict, name: str = "compute") -> None:
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
        "spec": {"hard": hard}})
    assert r.status == 201, r.body

    async def ready():  # admission needs the quota's status (real clusters fill it async)
        q = await k.request("GET", f"/api/v1/namespaces/{ns}/resourcequotas/{name}")
        return (q.body.get("status") or {}).get("used") is not None
    await eventually(ready)


async def test_quota_cpu_memory_gpu_and_pod_count(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("quota")
    await _quota(k, ns, {"requests.cpu": "1", "limits.memory": "1Gi",
                         "requests.nvidia.com/gpu": "1", "pods": "3"})
    pods = f"/api/v1/namespaces/{ns}/pods"

    def p(name: str, cpu: str, mem: str = "256Mi", gpu: int = 0) -> dict:
        body = pod(name)
        limits = {"cpu": cpu, "memory": mem}
        if gpu:
            limits["nvidia.com/gpu"] = str(gpu)
        body["spec"]["containers"][0]["resources"] = {"limits": limits}
        return body

    assert (await k.request("POST", pods, p("a", "600m", gpu=1))).status == 201
    over = await k.request("POST", pods, p("b", "500m"))
    assert (over.status, over.reason) == (403, "Forbidden")
    assert over.body["message"] == (
        'pods "b" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, '
        'used: requests.cpu=600m, limited: requests.cpu=1')
    gpu = await k.request("POST", pods, p("c", "100m", gpu=1))
    assert gpu.status == 403
    assert "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, " \
           "limited: requests.nvidia.com/gpu=1" in gpu.body["message"]
    mem = await k.request("POST", pods, p("d", "100m", mem="2Gi"))
    assert mem.status == 403 and "limits.memory=2Gi" in mem.body["message"]

    async def used():
        q = await k.request("GET", f"/api/v1/namespaces/{ns}/resourcequotas/compute")
        u = q.body["status"]["used"]
        return u if u.get("requests.cpu") == "600m" and u.get("pods") == "1" else None
    used_now = await eventually(used)
    assert used_now["requests.nvidia.com/gpu"] == "1"
    assert q_hard_equal((await k.request(
        "GET", f"/api/v1/namespaces/{ns}/resourcequotas/compute")).body)
    assert (await k.request("POST", pods, p("e", "100m"))).status == 201
    assert (await k.request("POST", pods, p("f", "100m"))).status == 201
    count = await k.request("POST", pods, p("g", "100m"))
    assert count.status == 403 and "pods=3" in count.body["message"]


async def test_quota_usage_follows_a_pods_phase_not_its_other_status(kube_target: KubeTarget):
    """A status write that changes nothing a quota counts leaves the usage as it was; a pod
    that ended (Failed) frees its share. The emulator works a pod's usage out again only
    when what it reads of the pod changed: this checks it still does then."""
    k = kube_target
    ns = await k.namespace("quota-phase")
    await _quota(k, ns, {"pods": "1", "limits.cpu": "1"})
    pods = f"/api/v1/namespaces/{ns}/pods"
    assert (await k.request("POST", pods, pod("first", cpu="500m"))).status == 201

    async def used(expected: dict) -> dict | None:
        q = await k.request("GET", f"/api/v1/namespaces/{ns}/resourcequotas/compute")
        u = (q.body.get("status") or {}).get("used") or {}
        return u if {k_: u.get(k_) for k_ in expected} == expected else None

    await eventually(lambda: used({"pods": "1", "limits.cpu": "500m"}))
    quota = f"/api/v1/namespaces/{ns}/resourcequotas/compute"
    before = (await k.request("GET", quota)).body["metadata"]["resourceVersion"]
    noted = await k.request("PATCH", f"{pods}/first/status", {"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "waiting"}]}}, content_type=MERGE)
    assert noted.status == 200, noted.body
    refused = await k.request("POST", pods, pod("second", cpu="500m"))
    assert refused.status == 403 and "exceeded quota: compute" in refused.body["message"]
    assert await used({"pods": "1", "limits.cpu": "500m"})
    # nothing counted changed: the quota was not written again
    assert (await k.request("GET", quota)).body["metadata"]["resourceVersion"] == before
    ended = await k.request("PATCH", f"{pods}/first/status", {"status": {"phase": "Failed"}},
                            content_type=MERGE)
    assert ended.status == 200, ended.body
    await eventually(lambda: used({"pods": "0", "limits.cpu": "0"}))
    # a real API server's quota admission reads its own cache of the quota, which may
    # lag the status a GET shows: the freed share is taken within a few seconds there,
    # at once on the emulator (its admission reads the quota it stores)
    tries: list[int] = []

    async def admitted() -> bool:
        tries.append((await k.request("POST", pods, pod("second", cpu="500m"))).status)
        return tries[-1] == 201
    await eventually(admitted, within=20)
    assert set(tries[:-1]) <= {403}
    if k.is_local:
        assert tries == [201]


def q_hard_equal(quota: dict) -> bool:
    return quota["status"]["hard"] == quota["spec"]["hard"]


async def test_quota_requires_limits_and_limit_range_defaults_them(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("lrange")
    await _quota(k, ns, {"limits.cpu": "2", "limits.memory": "2Gi"})
    pods = f"/api/v1/namespaces/{ns}/pods"
    for _ in range(50):  # a real server's quota admission may not know the quota yet
        r = await k.request("POST", pods, pod("bare"))
        if r.status != 201:
            break
        await k.request("DELETE", f"{pods}/bare", params={"gracePeriodSeconds": "0"})
        await asyncio.sleep(0.1)
    assert (r.status, r.reason) == (403, "Forbidden")
    assert r.body["message"] == ('pods "bare" is forbidden: failed quota: compute: must '
                                 'specify limits.cpu for: main; limits.memory for: main')
    lr = await k.request("POST", f"/api/v1/namespaces/{ns}/limitranges", {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
        "spec": {"limits": [{"type": "Container",
                             "default": {"cpu": "500m", "memory": "512Mi"},
                             "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}})
    assert lr.status == 201
    r = await k.request("POST", pods, pod("defaulted"))
    assert r.status == 201, r.body
    res = r.body["spec"]["containers"][0]["resources"]
    assert res == {"limits": {"cpu": "500m", "memory": "512Mi"},
                   "requests": {"cpu": "100m", "memory": "128Mi"}}


async def test_quota_persistent_volume_claims_and_storage(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("pvcq")
    await _quota(k, ns, {"persistentvolumeclaims": "2", "requests.storage": "3Gi"})
    path = f"/api/v1/namespaces/{ns}/persistentvolumeclaims"

    def pvc(name: str, size: str) -> dict:
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": size}}}}

    assert (await k.request("POST", path, pvc("a", "2Gi"))).status == 201
    big = await k.request("POST", path, pvc("b", "2Gi"))
    assert big.status == 403 and "requests.storage=2Gi" in big.body["message"]
    assert (await k.request("POST", path, pvc("c", "1Gi"))).status == 201
    count = await k.request("POST", path, pvc("d", "1Mi"))
    assert count.status == 403 and "persistentvolumeclaims=2" in count.body["message"]


# ------------------------------------------------------------------------- events


async def test_events_post_and_read_back(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("events")
    v1 = client.CoreV1Api(k.api)
    await v1.create_namespaced_event(ns, {
        "metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "p",
                                                        "namespace": ns},
        "reason": "Scheduled", "message": "assigned", "type": "Normal",
        "source": {"component": "kdash-test"}})
    events = await v1.list_namespaced_event(
        ns, field_selector="involvedObject.kind=Pod,involvedObject.name=p")
    assert [(e.reason, e.message) for e in events.items] == [("Scheduled", "assigned")]


# ------------------------------------------------------------------------- clients


async def test_unmodified_kubespawner_spawns_polls_and_stops(kube_target: KubeTarget,
                                                             monkeypatch):
    """KubeSpawner 7.1 as-is: namespace, PVC, pod, reflectors, 409 on an existing pod."""
    from unittest.mock import Mock

    from kubespawner import KubeSpawner

    from kdash_hub.localcluster.apiserver import resources

    srv = kube_target.require_local("needs a kubelet; the emulator test fakes one")
    # kubernetes_asyncio reads KUBECONFIG at import, and kubespawner caches load_config
    import kubernetes_asyncio.config.kube_config as kube_config
    from kubespawner import clients

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                        str(kube_target.kubeconfig))
    clients.load_config.cache_clear()
    pods = resources.by_kind("Pod")

    def fake_kubelet(ev):
        if ev.rtype is pods and ev.type == "ADDED":
            m = ev.obj["metadata"]

            async def run():
                cur = srv.store.find("Pod", m["name"], m["namespace"])
                if cur:
                    cur["status"].update(phase="Running", podIP="127.0.0.7", conditions=[
                        {"type": "Ready", "status": "True"}], containerStatuses=[{
                            "name": "notebook", "ready": True, "restartCount": 0,
                            "image": "x", "imageID": "", "state": {"running": {}}}])
                    srv.ops.update(pods, m["namespace"], m["name"], cur, subresource="status")
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(run()))

    srv.store.listeners.append(fake_kubelet)
    user = Mock()
    user.name, user.id, user.url, user.escaped_name = "alice", 1, "/user/alice/", "alice"
    name = uniq("kdash-ks")
    spawner = KubeSpawner(_mock=True, user=user, enable_user_namespaces=True,
                          user_namespace_template=name, storage_pvc_ensure=True,
                          storage_capacity="1Gi", start_timeout=20, http_timeout=20,
                          api_token="t", oauth_client_id="c")
    spawner.user = user
    kube_target.namespaces.append(name)
    # a leftover pod of the same name: KubeSpawner gets 409, deletes it and retries
    await kube_target.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    leftover = pod(spawner.pod_name)
    assert (await kube_target.request("POST", f"/api/v1/namespaces/{name}/pods",
                                      leftover)).status == 201
    url = await spawner.start()
    assert any(m == "POST" and p.endswith("/pods") and s == 409
               for m, p, s in srv.request_log)
    assert url == "http://127.0.0.7:8888"
    assert await spawner.poll() is None
    assert srv.store.find("PersistentVolumeClaim", "claim-alice", name)["status"][
        "phase"] == "Bound"
    await spawner.stop()
    clients.load_config.cache_clear()
    assert await spawner.poll() == 1
    assert srv.store.find("Pod", spawner.pod_name, name) is None
    assert srv.request_count["watch"] >= 2 and srv.request_count["create"] >= 3
    assert srv.resource_count["watch pods"] >= 1 and srv.resource_count["watch events"] >= 1
    assert srv.resource_count["create persistentvolumeclaims"] == 1
    assert srv.resource_count["create pods"] == 3  # the leftover, the 409, the retry


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_apply_get_delete(kube_target: KubeTarget, tmp_path):
    k = kube_target
    ns = uniq("kdash-kctl")
    manifest = tmp_path / "app.yaml"

    def write(value: str) -> None:
        manifest.write_text(f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{mode: "{value}"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env: [{{name: MODE, value: "{value}"}}]
""")

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", str(k.kubeconfig), *args],
                              capture_output=True, text=True, timeout=60)

    write("one")
    k.namespaces.append(ns)
    # default --validate=strict: kubectl finds fieldValidation in /openapi/v3 and lets the
    # server validate
    r = await asyncio.to_thread(kubectl, "apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    assert "configmap/settings created" in r.stdout
    write("two")
    r = await asyncio.to_thread(kubectl, "apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/web configured" in r.stdout
    r = await asyncio.to_thread(kubectl, "get", "deploy", "web", "-n", ns, "-o", "json")
    dep = json.loads(r.stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "MODE", "value": "two"}]
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep["metadata"][
        "annotations"]
    r = await asyncio.to_thread(kubectl, "get", "cm", "-n", ns, "-o", "name")
    assert "configmap/settings" in r.stdout.split()
    r = await asyncio.to_thread(kubectl, "get", "ns", ns)  # a server-side Table
    assert r.stdout.split()[:5] == ["NAME", "STATUS", "AGE", ns, "Active"], r.stdout
    typo = manifest.read_text().replace(
        "image: nginx:1.27", "image: nginx:1.27\n        imagePulPolicy: Always")
    manifest.write_text(typo)
    r = await asyncio.to_thread(kubectl, "apply", "-f", str(manifest))
    assert r.returncode != 0 and "imagePulPolicy" in r.stderr
    # the namespace goes first and takes its content with it, as on a real cluster
    r = await asyncio.to_thread(kubectl, "delete", "-f", str(manifest), "--wait=false",
                                "--ignore-not-found")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------- faults


async def test_fault_injection_errors_and_latency(kube_target: KubeTarget):
    k = kube_target
    srv = k.require_local()
    ns = await k.namespace("faults")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    srv.faults.add(method="POST", path_regex=r"/configmaps$", status=503, times=1)
    first = await k.request("POST", path, cm("f"))
    assert (first.status, first.reason) == (503, "ServiceUnavailable")
    assert (await k.request("POST", path, cm("f"))).status == 201
    srv.faults.add(method="GET", path_regex=r"/configmaps/f$", status=None, latency=0.3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert (await k.request("GET", f"{path}/f")).status == 200
    assert loop.time() - t0 >= 0.3
    # the same over HTTP, for emulators running in another process
    r = await k.request("POST", "/_kdash/faults", {"method": "DELETE", "status": 500,
                                                   "reason": "InternalError", "times": 2})
    assert r.status == 201
    assert (await k.request("DELETE", f"{path}/f")).status == 500
    assert (await k.request("GET", "/_kdash/faults")).body["faults"][0]["times"] == 1
    assert (await k.request("DELETE", "/_kdash/faults")).status == 200
    assert (await k.request("DELETE", f"{path}/f")).status == 200
    counts = (await k.request("GET", "/_kdash/requests")).body
    assert counts["fault"] == 2 and counts["total"] >= 6


async def test_fault_injection_drops_watches(kube_target: KubeTarget):
    k = kube_target
    srv = k.require_local()
    ns = await k.namespace("drop")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    task = asyncio.create_task(k.watch(path, {"timeoutSeconds": "30"}))
    await eventually(lambda: asyncio.sleep(0, result=len(srv.store.watchers) > 0))
    r = await k.request("POST", "/_kdash/drop-watches")
    assert r.body["dropped"] >= 1
    with pytest.raises(Exception):  # noqa: B017 - a broken connection, whatever its type
        await asyncio.wait_for(task, 5)
    assert not srv.store.watchers


async def test_unexpected_errors_become_500_status(kube_target: KubeTarget, monkeypatch):
    k = kube_target
    srv = k.require_local()

    def boom(*a, **kw):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(srv.ops, "get", boom)
    r = await k.request("GET", "/api/v1/namespaces/default/pods/x")
    assert (r.status, r.reason) == (500, "InternalError")
    assert "kaboom" in r.body["message"]


async def test_limit_range_maximum_is_enforced(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("lrmax")
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/limitranges", {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "max"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}})
    assert r.status == 201
    # max also becomes the default limit, so a bare pod is admitted with cpu limit 1
    ok = await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("ok"))
    assert ok.status == 201
    assert ok.body["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"
    big = await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("big", cpu="2"))
    assert (big.status, big.reason) == (403, "Forbidden")
    assert big.body["message"] == ('pods "big" is forbidden: maximum cpu usage per Container '
                                   'is 1, but limit is 2')


async def test_dry_run_does_not_store(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("dry")
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps", cm("dry"),
                        params={"dryRun": "All"})
    assert r.status == 201 and r.body["metadata"]["name"] == "dry"
    assert (await k.request("GET", f"/api/v1/namespaces/{ns}/configmaps/dry")).status == 404


async def test_graceful_pod_deletion_waits_for_the_kubelet():
    """With graceful_pod_deletion a bound pod stays Terminating until deleted with grace 0
    (what a kubelet does once its containers are stopped); unbound pods go at once."""
    from kdash_hub.localcluster.apiserver import APIServer, resources

    srv = APIServer(graceful_pod_deletion=True)
    await srv.start()
    try:
        pods = resources.by_kind("Pod")
        srv.ops.create(pods, "default", pod("bound"))
        srv.ops.create(pods, "default", pod("unbound"))
        srv.ops.bind("default", {"target": {"name": "node-1"}}, pod_name="bound")
        deleting = srv.ops.delete(pods, "default", "bound")
        assert deleting["metadata"]["deletionTimestamp"]
        assert deleting["metadata"]["deletionGracePeriodSeconds"] == 30
        assert srv.store.find("Pod", "bound", "default") is not None
        # the kubelet reports the stopped containers: the pod still waits for its delete
        stopping = srv.store.get("Pod", "bound", "default")
        stopping["status"]["phase"] = "Succeeded"
        srv.ops.update(pods, "default", "bound", stopping, subresource="status")
        assert srv.store.find("Pod", "bound", "default") is not None
        again = srv.ops.delete(pods, "default", "bound")  # a second delete changes nothing
        assert again["metadata"]["deletionGracePeriodSeconds"] == 30
        shorter = srv.ops.delete(pods, "default", "bound", {"gracePeriodSeconds": 5})
        assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
        srv.ops.delete(pods, "default", "bound", {"gracePeriodSeconds": 0})
        assert srv.store.find("Pod", "bound", "default") is None
        srv.ops.delete(pods, "default", "unbound")
        assert srv.store.find("Pod", "unbound", "default") is None
    finally:
        await srv.stop()


async def test_scoped_quota_counts_only_matching_pods(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("scoped")
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/resourcequotas", {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "besteffort"},
        "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}})
    assert r.status == 201

    async def ready():
        q = await k.request("GET", f"/api/v1/namespaces/{ns}/resourcequotas/besteffort")
        return (q.body.get("status") or {}).get("used") is not None
    await eventually(ready)
    pods = f"/api/v1/namespaces/{ns}/pods"
    assert (await k.request("POST", pods, pod("be1"))).status == 201
    second = await k.request("POST", pods, pod("be2"))
    assert second.status == 403 and "exceeded quota: besteffort" in second.body["message"]
    # a pod with requests is not BestEffort: outside the quota's scope
    assert (await k.request("POST", pods, pod("burstable", cpu="100m"))).status == 201


async def test_pod_log_subresource_uses_the_kubelets_log_source(kube_target: KubeTarget):
    k = kube_target
    srv = k.require_local("pod logs need a kubelet; the emulator test provides a fake source")
    ns = await k.namespace("logs")
    await k.request("POST", f"/api/v1/namespaces/{ns}/pods", pod("p"))
    waiting = await k.request("GET", f"/api/v1/namespaces/{ns}/pods/p/log")
    assert waiting.status == 400 and "waiting to start" in waiting.body["message"]
    srv.pod_log_source = lambda namespace, name, container: (
        f"{namespace}/{name}/{container} line 1\nline 2\n")
    r = await k.request("GET", f"/api/v1/namespaces/{ns}/pods/p/log", params={"tailLines": "1"})
    assert (r.status, r.body) == (200, "line 2\n")
    bad = await k.request("GET", f"/api/v1/namespaces/{ns}/pods/p/log",
                          params={"container": "nope"})
    assert bad.status == 400


async def test_watch_from_a_future_resource_version_asks_to_relist(kube_target: KubeTarget):
    """A client holding a resourceVersion the server hasn't reached (e.g. it outlived an
    emulator restart) gets an ERROR event (504, ResourceVersionTooLarge) and relists."""
    k = kube_target
    ns = await k.namespace("future")
    listed = await k.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    future = str(int(listed.body["metadata"]["resourceVersion"]) + 10**9)
    r = await k.request("GET", f"/api/v1/namespaces/{ns}/configmaps", params={
        "watch": "1", "resourceVersion": future, "timeoutSeconds": "4"})
    if not k.is_local:
        # kube-apiserver 1.36 keeps such a watch open, silent, until timeoutSeconds; the
        # emulator answers 504 instead so a client that outlived its restart relists
        # (docs/apiserver.md lists this difference)
        assert (r.status, r.body) == (200, "")
        return
    # an ERROR event in a 200 stream
    status = r.body["object"] if r.status == 200 else r.body
    assert r.status == 200 and r.body["type"] == "ERROR" or r.status == 504
    assert status["code"] == 504 and status["reason"] == "Timeout"
    assert "Too large resource version" in status["message"]


async def test_pod_needs_its_service_account(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("sa")
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/pods",
                        pod("p", serviceAccountName="not-yet"))
    assert (r.status, r.reason) == (403, "Forbidden")
    assert r.body["message"] == (f'pods "p" is forbidden: error looking up service account '
                                 f'{ns}/not-yet: serviceaccount "not-yet" not found')
    await k.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "not-yet"}})
    r = await k.request("POST", f"/api/v1/namespaces/{ns}/pods",
                        pod("p", serviceAccountName="not-yet"))
    assert r.status == 201


async def test_secret_string_data_is_stored_as_base64_data(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("secret")
    path = f"/api/v1/namespaces/{ns}/secrets"
    r = await k.request("POST", path, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "s"}, "data": {"a": "YQ=="},
                                       "stringData": {"b": "bee"}})
    assert r.status == 201
    assert r.body["data"] == {"a": "YQ==", "b": "YmVl"} and "stringData" not in r.body
    assert r.body["type"] == "Opaque"
    r = await k.request("PATCH", f"{path}/s", {"stringData": {"a": "new"}}, content_type=MERGE)
    assert r.body["data"]["a"] == "bmV3" and "stringData" not in r.body
    bad = await k.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                          {**cm("c"), "data": {"not/a/key": "v"}})
    assert bad.status == 422
