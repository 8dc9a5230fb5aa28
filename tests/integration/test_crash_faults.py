"""Kubernetes API faults during first spawns: errors on a chosen fraction of the creates and
latency on all of them. Every spawn either succeeds or fails with a sentence a person
understands (the detail is in the hub log), no namespace is marked complete while its
bundle is not, and one more start repairs everything."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tornado import web

from kdash_hub.spawner import bundle
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.crashlab import SPAWNER_CREATES, CrashLab, human
from tests.fixtures.spawner import build_spawner

N = 20


def test_what_counts_as_a_sentence():
    assert not human("500 Internal Server Error")
    assert not human("HTTP 500: Internal Server Error")
    assert not human("Spawn failed: (500)\nReason: Internal Server Error\nHTTP response headers")
    assert human("Spawn failed: The Kubernetes API failed while creating your server's pod "
                 "(500 Internal Server Error: boom). This is usually temporary: try again.")


async def test_faults_hit_a_chosen_fraction_over_the_control_api(local_cluster):
    """The emulator's faults: `fraction` of the matching requests, repeatable with `seed`;
    the requests a fault passes over meet the next one (here: latency only)."""
    requires_emulator(local_cluster)
    url = f"{local_cluster.url}/_kdash/faults"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"method": "GET", "path_regex": "/configmaps$",
                                           "status": 500, "times": None, "fraction": 0.25,
                                           "seed": 7}) as resp:
            assert resp.status == 201
        async with session.post(url, json={"method": "GET", "path_regex": "/configmaps$",
                                           "status": None, "times": None,
                                           "latency": 0.01}) as resp:
            assert resp.status == 201
        async with session.post(url, json={"fraction": 0}) as resp:
            assert resp.status == 400
        statuses = []
        for _ in range(200):
            async with session.get(
                    f"{local_cluster.url}/api/v1/namespaces/default/configmaps") as resp:
                statuses.append(resp.status)
        async with session.get(url) as resp:
            faults = (await resp.json())["faults"]
    errors = statuses.count(500)
    assert 30 <= errors <= 70, errors  # 25% of 200, give or take
    assert statuses.count(200) == 200 - errors
    assert faults[0]["hits"] == errors and faults[1]["hits"] == 200 - errors


async def test_a_failed_bundle_is_not_marked_and_a_pod_create_500_is_a_sentence(
        local_cluster, kube):
    requires_emulator(local_cluster)
    faults = local_cluster.api.faults
    fault = faults.add(method="POST", path_regex="networkpolicies$", status=500, times=None)
    s = build_spawner(username="gina", bundle_drift_check="watch")
    with pytest.raises(web.HTTPError) as e:
        await s.start()
    assert human(e.value.jupyterhub_message), e.value.jupyterhub_message
    ns = await kube.get("Namespace", s.namespace)
    assert bundle.BUNDLE_HASH_ANNOTATION not in (ns["metadata"].get("annotations") or {})

    faults.remove(fault)
    faults.add(method="POST", path_regex=r"/namespaces/kdash-gina/pods$", status=500,
               times=None)
    s = build_spawner(username="gina", api_retries=1)
    with pytest.raises(web.HTTPError) as e:
        await s.start()
    assert e.value.status_code == 503
    message = e.value.jupyterhub_message
    assert message.startswith("The Kubernetes API failed while creating your server's pod "
                              "(500 Internal Server Error"), message
    assert human(message)
    assert faults.faults[-1].hits == 2  # the pod create was tried twice
    # marked (now or once the mark lands) only if complete
    await asyncio.sleep(0.5)
    ns = await kube.get("Namespace", s.namespace)
    if bundle.BUNDLE_HASH_ANNOTATION in (ns["metadata"].get("annotations") or {}):
        assert await kube.get("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)

    faults.clear()
    s = build_spawner(username="gina")
    assert (await s.start()).startswith("http://")
    await s.stop()


async def test_a_bundle_failing_after_the_pod_ends_the_start_at_once(local_cluster, kube):
    """The quota and the rights it bounds go while the pod starts: when they fail, the start
    fails with their sentence then, not once the pod is ready (here: never, no node takes
    it, so only a start that waits for it would end with the start timeout's message), and
    its pod is gone when it does.
    A start ending late leaves JupyterHub's spawn handler racing the stop that follows
    (a bare 500 or "not starting" instead of the sentence)."""
    requires_emulator(local_cluster)
    faults = local_cluster.api.faults
    faults.add(method="POST", path_regex=r"/namespaces/kdash-hana/resourcequotas$",
               status=500, times=None)
    s = build_spawner(username="hana", node_selector={"no-such": "node"})
    try:
        with pytest.raises(web.HTTPError) as e:
            await s.start()
        message = e.value.jupyterhub_message or e.value.log_message
        assert "did not start" not in message and human(message), message
        assert "ResourceQuota" in message or "quota" in message, message
        # deleted by the failed start itself, so JupyterHub's cleanup stop has nothing to
        # wait for (a long one races its spawn handler)
        assert await kube.get("Pod", s.pod_name, s.namespace) is None
        ns = await kube.get("Namespace", s.namespace)
        assert bundle.BUNDLE_HASH_ANNOTATION not in (ns["metadata"].get("annotations") or {})
    finally:
        faults.clear()
        await s.stop()
    assert await kube.get("Pod", s.pod_name, s.namespace) is None


async def test_api_faults_during_first_spawns(tmp_path):
    """20 first spawns through a real hub while 20% of the spawner's creates fail with 500
    and every create takes 200 ms more; retries off, so every fault reaches a user."""
    lab = await CrashLab(tmp_path, N, extra_config="c.KDashSpawner.api_retries = 0\n").start()
    try:
        await lab.faults("POST", {"method": "POST", "path_regex": SPAWNER_CREATES,
                                  "status": 500, "times": None, "fraction": 0.2,
                                  "seed": 17, "latency": 0.2})
        await lab.faults("POST", {"method": "POST", "path_regex": SPAWNER_CREATES,
                                  "status": None, "times": None, "latency": 0.2})
        outcomes = await asyncio.gather(*(lab.spawn(name) for name in lab.names))
        fired = (await lab.faults("GET"))["faults"][0]["hits"]
        await lab.faults("DELETE")
        failed = [o for o in outcomes if o.result != "ready"]
        assert fired > 0 and failed, outcomes  # the faults did reach users
        unclear = [o for o in failed if o.result != "failed" or not human(o.message)]
        assert not unclear, unclear
        await lab.settle()
        during = await lab.counts()
        assert during.false_marked == 0 and during.orphans == 0, during
        assert during.running == N - len(failed), during

        again = await lab.start_the_rest()
        assert [o for o in again if o.result != "ready"] == []
        final = await lab.counts()
        assert final.running == N, final
        assert final.half_made == final.false_marked == final.orphans == 0, final
        log = lab.hub.log_path.read_text(errors="replace")
        assert "Unhandled error" not in log
        assert "injected fault" in log  # the detail is in the log
    finally:
        await lab.stop()


async def test_one_cancelled_caller_does_not_cancel_the_shared_watch(local_cluster):
    """KubeSpawner's event watch is shared by every spawn of the hub; while its first list
    is slow (API latency), a caller that is cancelled (JupyterHub cancels a failed spawn's
    progress stream) must not take the other spawns waiting for that watch with it."""
    requires_emulator(local_cluster)
    from kubespawner import KubeSpawner

    async def race(start) -> BaseException | None:
        """Two spawns wait for the event watch; the first is cancelled while it loads."""
        local_cluster.api.faults.add(method="GET", path_regex=r"^/api/v1/events",
                                     status=None, latency=1.0, times=1)
        first = asyncio.ensure_future(start(build_spawner(username="one")))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(start(build_spawner(username="two")))
        await asyncio.sleep(0.2)
        first.cancel()
        try:
            await asyncio.wait_for(second, 5)
            return None
        except BaseException as e:  # noqa: BLE001 - what the peer got is the point
            return e
        finally:
            await KubeSpawner._stop_all_reflectors()

    # upstream, unshielded: the peer never gets it — cancelled with the shared future, or
    # (cancelled during the first list) waiting on a watch that never loads (why
    # shielded.py exists)
    upstream = await race(lambda s: KubeSpawner._start_watching_events(s))
    assert isinstance(upstream, asyncio.CancelledError | TimeoutError), upstream
    # KDashSpawner: the peer gets its watch
    assert await race(lambda s: s._start_watching_events()) is None
