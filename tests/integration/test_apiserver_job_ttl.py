"""Finished Jobs are cleaned up after their lifetime: `spec.ttlSecondsAfterFinished`.

The emulator's controllers do what kube-controller-manager's ttl-after-finished controller
does: a Job whose Complete (or Failed) condition is `ttlSecondsAfterFinished` seconds old is
deleted with propagation Background, so its pods go with it; a Job without a TTL stays; a TTL
set after the Job finished counts from when it finished.

Like the semantics suite, everything goes through HTTP, so with KDASH_TEST_KUBECONFIG (the
real tier: KDASH_REAL_TIER=1) the same test checks the real controller-manager. The Jobs'
pods name a scheduler that doesn't exist, so no kubelet runs them on either tier: the test
plays the kubelet and reports each pod Succeeded through the status subresource.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from tests.fixtures.apiserver import KubeTarget
from tests.integration.test_apiserver_semantics import MERGE, eventually

TTL = 4


def job(name: str, ttl: int | None = None) -> dict:
    spec: dict = {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never", "schedulerName": "kdash-test-none",
        "containers": [{"name": "c", "image": "busybox:1.36", "command": ["true"]}]}}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": spec}


async def pods_of(k: KubeTarget, ns: str, uid: str) -> list[dict]:
    listed = await k.request("GET", f"/api/v1/namespaces/{ns}/pods")
    return [p for p in listed.body["items"]
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]


async def some_pods(k: KubeTarget, ns: str, uid: str) -> list[dict] | None:
    """The Job's pods, None until it has one (for `eventually`, which takes [] as done)."""
    return await pods_of(k, ns, uid) or None


async def run_to_success(k: KubeTarget, ns: str, name: str) -> tuple[dict, datetime]:
    """Report the Job's pod Succeeded (as its kubelet would); the Job once Complete, and the
    time its Complete condition says it finished."""
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    made = (await k.request("GET", f"{jobs}/{name}")).body
    uid = made["metadata"]["uid"]
    [pod] = await eventually(lambda: some_pods(k, ns, uid), within=30.0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    r = await k.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}"
                        "/status", {"status": {"phase": "Succeeded", "containerStatuses": [{
                            "name": "c", "image": "busybox:1.36", "imageID": "",
                            "ready": False, "restartCount": 0, "started": False,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                     "startedAt": stamp,
                                                     "finishedAt": stamp}}}]}},
                        content_type=MERGE)
    assert r.status == 200, r.body

    async def complete():
        got = (await k.request("GET", f"{jobs}/{name}")).body
        for cond in (got.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Complete" and cond["status"] == "True":
                return got, datetime.fromisoformat(
                    cond["lastTransitionTime"].replace("Z", "+00:00"))
        return None

    return await eventually(complete, within=30.0, interval=0.2)


async def test_a_finished_job_is_deleted_with_its_pods_after_its_ttl(kube_target: KubeTarget):
    k = kube_target
    ns = await k.namespace("jobttl")
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    for body in (job("brief", ttl=TTL), job("kept")):
        r = await k.request("POST", jobs, body)
        assert r.status == 201, r.body
    brief, finished = await run_to_success(k, ns, "brief")
    kept, _ = await run_to_success(k, ns, "kept")
    uid = brief["metadata"]["uid"]

    async def deleted():
        return (await k.request("GET", f"{jobs}/brief")).status == 404

    # not before its TTL ran out (times are whole seconds: allow one)
    while not await deleted():
        await asyncio.sleep(0.2)
        if time.time() > finished.timestamp() + TTL + 30:
            raise AssertionError("the Job was not deleted within 30 s of its TTL")
    gone_after = time.time() - finished.timestamp()
    assert gone_after >= TTL - 1, f"deleted {gone_after:.1f}s after it finished, TTL {TTL}"
    # Background propagation: its pods are collected too
    await eventually(lambda: _none(k, ns, uid), within=30.0)
    # the Job without a TTL stays
    still = await k.request("GET", f"{jobs}/kept")
    assert still.status == 200 and still.body["metadata"]["uid"] == kept["metadata"]["uid"]
    assert not still.body["metadata"].get("deletionTimestamp")

    # a TTL set after the Job finished counts from its finish: 0 deletes it now
    r = await k.request("PATCH", f"{jobs}/kept", {"spec": {"ttlSecondsAfterFinished": 0}},
                        content_type=MERGE)
    assert r.status == 200, r.body
    await eventually(lambda: _gone(k, f"{jobs}/kept"), within=30.0)


async def _none(k: KubeTarget, ns: str, uid: str) -> bool:
    return not await pods_of(k, ns, uid)


async def _gone(k: KubeTarget, path: str) -> bool:
    return (await k.request("GET", path)).status == 404


async def test_a_running_job_with_a_ttl_is_not_deleted(kube_target: KubeTarget):
    """The TTL counts from the finish only: an unfinished Job with TTL 0 stays."""
    k = kube_target
    ns = await k.namespace("jobttl")
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    r = await k.request("POST", jobs, job("running", ttl=0))
    assert r.status == 201, r.body
    uid = r.body["metadata"]["uid"]
    await eventually(lambda: some_pods(k, ns, uid), within=30.0)
    await asyncio.sleep(2.0)
    got = await k.request("GET", f"{jobs}/running")
    assert got.status == 200 and not got.body["metadata"].get("deletionTimestamp")


async def test_deleting_a_job_without_a_policy_keeps_its_pods_and_warns(
        kube_target: KubeTarget):
    """batch/v1's default: a Job deleted without propagationPolicy orphans its pods (which
    is why the TTL controller, the CronJob controller and kubectl all send Background)."""
    k = kube_target
    ns = await k.namespace("jobdel")
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    r = await k.request("POST", jobs, job("left"))
    assert r.status == 201, r.body
    uid = r.body["metadata"]["uid"]
    [pod] = await eventually(lambda: some_pods(k, ns, uid), within=30.0)
    r = await k.request("DELETE", f"{jobs}/left")
    assert r.status == 200, r.body
    assert r.warnings == ['299 - "child pods are preserved by default when jobs are deleted;'
                          ' set propagationPolicy=Background to remove them or set'
                          ' propagationPolicy=Orphan to suppress this warning"']
    await eventually(lambda: _gone(k, f"{jobs}/left"), within=30.0)
    path = f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}"

    async def orphaned():
        got = await k.request("GET", path)
        return got.status == 200 and not got.body["metadata"].get("ownerReferences")

    await eventually(orphaned, within=30.0)
    # with Background, as kubectl sends it, the pods go with their Job
    r = await k.request("POST", jobs, job("taken"))
    uid = r.body["metadata"]["uid"]
    await eventually(lambda: some_pods(k, ns, uid), within=30.0)
    r = await k.request("DELETE", f"{jobs}/taken", {"propagationPolicy": "Background"})
    assert r.status == 200 and not r.warnings, (r.body, r.warnings)
    await eventually(lambda: _none(k, ns, uid), within=30.0)
