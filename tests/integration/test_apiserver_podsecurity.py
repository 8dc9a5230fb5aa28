"""Pod Security Admission of the emulated API server: the namespace's enforce level.

Like the semantics suite these tests go through HTTP, so with KDASH_TEST_KUBECONFIG set they
check a real cluster's PodSecurity plugin gives the same answers and messages.
"""

from __future__ import annotations

import uuid

import pytest

from tests.fixtures.apiserver import KubeTarget
from tests.integration.test_apiserver_semantics import eventually

MERGE = "application/merge-patch+json"
LEVEL = "pod-security.kubernetes.io/enforce"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def restricted_container(name: str = "main") -> dict:
    return {"name": name, "image": "busybox:1.36",
            "securityContext": {"allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}}}


def pod(name: str, containers: list[dict] | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            # a scheduler that doesn't exist keeps real clusters from running test pods
            "spec": {"schedulerName": "kdash-test-none",
                     "containers": containers or [{"name": "main", "image": "busybox:1.36"}],
                     **spec}}


def compliant_pod(name: str, volumes: list[dict] | None = None) -> dict:
    return pod(name, [restricted_container()], volumes=volumes or [],
               securityContext={"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}})


NFS = {"name": "home", "nfs": {"server": "10.0.0.5", "path": "/"}}
HOST_PATH = {"name": "data", "hostPath": {"path": "/srv"}}


async def namespace(k: KubeTarget, level: str | None) -> str:
    ns = await k.namespace("psa")
    if level is not None:
        r = await k.request("PATCH", f"/api/v1/namespaces/{ns}",
                            {"metadata": {"labels": {LEVEL: level}}}, content_type=MERGE)
        assert r.status == 200, r.body
    return ns


async def create(k: KubeTarget, ns: str, body: dict):
    return await k.request("POST", f"/api/v1/namespaces/{ns}/pods", body)


async def test_nfs_volume_refused_when_restricted_admitted_when_privileged(
        kube_target: KubeTarget):
    k = kube_target
    restricted = await namespace(k, "restricted")
    name = uniq("nfs")
    r = await create(k, restricted, compliant_pod(name, [NFS]))
    assert r.status == 403 and r.reason == "Forbidden"
    assert r.body["message"] == (
        f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": restricted '
        'volume types (volume "home" uses restricted volume type "nfs")')
    assert r.body["details"] == {"name": name, "kind": "pods"}
    assert (await k.request("GET", f"/api/v1/namespaces/{restricted}/pods/{name}")).status == 404
    for level in (None, "privileged"):  # no label means privileged
        ns = await namespace(k, level)
        assert (await create(k, ns, compliant_pod(name, [NFS]))).status == 201
        assert (await create(k, ns, pod(uniq("hp"), volumes=[HOST_PATH]))).status == 201


async def test_host_path_refused_under_baseline_and_restricted(kube_target: KubeTarget):
    k = kube_target
    baseline = await namespace(k, "baseline")
    name = uniq("hp")
    r = await create(k, baseline, pod(name, volumes=[HOST_PATH, NFS]))
    assert r.status == 403
    assert r.body["message"] == (f'pods "{name}" is forbidden: violates PodSecurity '
                                 '"baseline:latest": hostPath volumes (volume "data")')
    # baseline allows an nfs volume and a default container
    assert (await create(k, baseline, pod(uniq("nfs"), volumes=[NFS]))).status == 201
    restricted = await namespace(k, "restricted")
    r = await create(k, restricted, compliant_pod(name, [HOST_PATH, NFS]))
    assert r.status == 403
    assert r.body["message"].endswith(
        'restricted volume types (volumes "data", "home" use restricted volume types '
        '"hostPath", "nfs")')


async def test_compliant_pod_admitted_under_restricted(kube_target: KubeTarget):
    k = kube_target
    ns = await namespace(k, "restricted")
    volumes = [{"name": "scratch", "emptyDir": {}},
               {"name": "claim", "persistentVolumeClaim": {"claimName": "home"}},
               {"name": "cfg", "configMap": {"name": "cfg"}},
               {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {
                   "path": "token"}}]}}]
    body = compliant_pod(uniq("ok"), volumes)
    body["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = [
        "NET_BIND_SERVICE"]
    r = await create(k, ns, body)
    assert r.status == 201, r.body
    # runAsNonRoot and seccomp may be set on each container instead of the pod
    body = pod(uniq("ok"), [restricted_container("a"), restricted_container("b")])
    for c in body["spec"]["containers"]:
        c["securityContext"].update(runAsNonRoot=True,
                                    seccompProfile={"type": "RuntimeDefault"})
    assert (await create(k, ns, body)).status == 201


async def test_restricted_message_lists_every_failed_check(kube_target: KubeTarget):
    k = kube_target
    ns = await namespace(k, "restricted")
    name = uniq("plain")
    r = await create(k, ns, pod(name))
    assert r.status == 403 and r.body["code"] == 403 and r.body["kind"] == "Status"
    assert r.body["message"] == (
        f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (container "main" must set '
        'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
        '(container "main" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "main" must set '
        'securityContext.runAsNonRoot=true), seccompProfile (pod or container "main" must '
        'set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    root = compliant_pod(uniq("root"))
    root["spec"]["securityContext"]["runAsUser"] = 0
    r = await create(k, ns, root)
    assert r.status == 403 and r.body["message"].endswith(
        "runAsUser=0 (pod must not set runAsUser=0)")


@pytest.mark.parametrize(("spec", "container_sc", "expected"), [
    ({"hostNetwork": True, "hostPID": True}, {},
     "host namespaces (hostNetwork=true, hostPID=true)"),
    ({}, {"privileged": True},
     'privileged (container "main" must not set securityContext.privileged=true)'),
    ({}, {"capabilities": {"add": ["SYS_ADMIN"]}},
     'non-default capabilities (container "main" must not include "SYS_ADMIN" in '
     "securityContext.capabilities.add)"),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, {},
     'seccompProfile (pod must not set securityContext.seccompProfile.type to '
     '"Unconfined")'),
    ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}, {},
     "forbidden sysctls (kernel.msgmax)"),
], ids=["host-namespaces", "privileged", "capabilities", "seccomp-unconfined", "sysctls"])
async def test_baseline_checks(kube_target: KubeTarget, spec: dict, container_sc: dict,
                               expected: str):
    k = kube_target
    ns = await namespace(k, "baseline")
    body = pod(uniq("b"), **spec)
    body["spec"]["containers"][0]["securityContext"] = container_sc
    r = await create(k, ns, body)
    assert r.status == 403
    assert r.body["message"].endswith(f'"baseline:latest": {expected}')


async def test_workload_pods_refused_record_failed_create(kube_target: KubeTarget):
    k = kube_target
    ns = await namespace(k, "restricted")
    name = uniq("web")
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "main",
                                                          "image": "busybox:1.36"}]}}}}
    r = await k.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", dep)
    assert r.status == 201, r.body  # the template itself is not enforced

    async def failed_create():
        events = (await k.request("GET", f"/api/v1/namespaces/{ns}/events")).body["items"]
        return [e for e in events if e["reason"] == "FailedCreate"] or None

    # the pods' maker records it: the emulator's Deployment itself; on a real cluster the
    # Deployment's ReplicaSet (which retries, so there may be several)
    events = await eventually(failed_create, within=5 if k.is_local else 60)
    if k.is_local:
        [event] = events
        assert event["involvedObject"]["name"] == name
    else:
        sets = (await k.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")).body
        [rs] = sets["items"]
        assert rs["metadata"]["ownerReferences"][0]["name"] == name
        assert {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events} \
            == {("ReplicaSet", rs["metadata"]["name"])}
    for event in events:
        assert event["type"] == "Warning"
        assert 'violates PodSecurity "restricted:latest"' in event["message"]
        assert event["message"].startswith("Error creating: pods ")
    pods = (await k.request("GET", f"/api/v1/namespaces/{ns}/pods")).body["items"]
    assert pods == []
