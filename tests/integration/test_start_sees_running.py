"""A start ends when the hub's pod watch shows its pod running, not at KubeSpawner's next
look (which comes at random moments up to 5 s apart); where KubeSpawner has more to do
after the pod is made, or the setting is off, KubeSpawner's own wait ends it."""

from __future__ import annotations

import asyncio
import time

import kubespawner.spawner
import pytest

from kdash_hub.spawner.running import RunningWatch
from tests.fixtures.polling import eventually
from tests.fixtures.spawner import build_spawner

LATE = 6.0  # KubeSpawner's first look at the new pod, made late (its jitter's unlucky case)


@pytest.fixture
def kubespawner_looks_late(monkeypatch):
    real = kubespawner.spawner.exponential_backoff

    async def late(pass_func, fail_message, *args, **kwargs):
        if "did not start in" in fail_message:  # KubeSpawner's wait for the pod to run
            await asyncio.sleep(LATE)
        return await real(pass_func, fail_message, *args, **kwargs)

    monkeypatch.setattr(kubespawner.spawner, "exponential_backoff", late)


async def test_a_start_ends_when_its_pod_runs(local_cluster, kube, kubespawner_looks_late):
    s = build_spawner(username="rita")
    began = time.monotonic()
    url = await s.start()
    took = time.monotonic() - began
    try:
        assert took < LATE, took
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        assert s.pod_id == pod["metadata"]["uid"]
        assert url == s._get_pod_url(pod)  # what KubeSpawner's own wait returns
        assert s._running_wait is None and s._pod_start is None
    finally:
        await s.stop()


def _hook_calls() -> tuple[list, dict]:
    calls: list = []
    return calls, {"after_pod_created_hook": lambda spawner, pod: calls.append(pod)}


@pytest.mark.parametrize("setting", ["off", "pod hook"])
async def test_kubespawners_own_wait_ends_the_start_where_it_must(
        local_cluster, kubespawner_looks_late, setting):
    calls, hook = _hook_calls()
    traits = {"pod_running_check_seconds": 0} if setting == "off" else hook
    s = build_spawner(username=f"sam-{setting.replace(' ', '-')}", **traits)
    began = time.monotonic()
    try:
        assert (await s.start()).startswith("http")
        assert time.monotonic() - began >= LATE
        assert len(calls) == (1 if setting == "pod hook" else 0)
    finally:
        await s.stop()


async def test_a_cancelled_start_stays_cancelled_when_its_pod_is_seen_running(
        local_cluster, kube, kubespawner_looks_late):
    """The start is cancelled (the user stopped it) in the same moment its pod is seen
    running: it must end cancelled, not as a started server."""
    s = build_spawner(username="tess", node_selector={"no-such": "node"})  # never runs
    start = s.start()
    try:
        await eventually(lambda: asyncio.sleep(0, s._running_wait is not None))
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        pod["status"].update(phase="Running", podIP="10.9.9.9")
        s._running_wait.set_result(pod)  # seen running ...
        start.cancel()  # ... as the start is cancelled
        with pytest.raises(asyncio.CancelledError):
            await start
        await asyncio.wait([s._start_future])  # KubeSpawner's start future, ended too
        assert s._start_future.cancelled()
        assert RunningWatch.of(s.pod_reflector)._starts == {}
    finally:
        await s.stop()
