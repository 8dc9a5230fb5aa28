"""RunningWatch: every waiting start of a hub looked at in one pass of the pod reflector."""

from __future__ import annotations

import asyncio

import pytest

from kdash_hub.spawner.running import RunningWatch

INTERVAL = 0.01


class Reflector:
    """What RunningWatch reads of KubeSpawner's pod reflector: `pods`, keyed ns/name."""

    def __init__(self) -> None:
        self.pods: dict[str, dict] = {}


def is_running(pod: dict) -> bool:  # KubeSpawner's test reads fields a Pending pod lacks
    return pod["status"]["phase"] == "Running" and pod["status"]["podIP"] is not None


def pod(phase: str, **status) -> dict:
    return {"metadata": {"uid": phase}, "status": {"phase": phase, **status}}


async def test_each_start_is_told_when_its_own_pod_runs():
    reflector = Reflector()
    watch = RunningWatch.of(reflector)
    assert RunningWatch.of(reflector) is watch  # one per reflector
    a = watch.wait("u1/jupyter-a", is_running, INTERVAL)
    b = watch.wait("u2/jupyter-b", is_running, INTERVAL)
    reflector.pods["u1/jupyter-a"] = pod("Running")  # no podIP: the test raises KeyError
    reflector.pods["u2/jupyter-b"] = pod("Pending")
    await asyncio.sleep(INTERVAL * 5)
    assert not a.done() and not b.done()
    reflector.pods["u1/jupyter-a"] = running = pod("Running", podIP="10.0.0.5")
    assert await asyncio.wait_for(a, 1) is running
    assert not b.done()
    b.cancel()
    await asyncio.sleep(INTERVAL * 3)
    assert watch._starts == {} and watch._ticker.done()  # nothing left looking


async def test_a_pod_of_another_key_never_ends_a_wait():
    reflector = Reflector()
    wait = RunningWatch.of(reflector).wait("u1/jupyter-a", is_running, INTERVAL)
    reflector.pods["u2/jupyter-a"] = pod("Running", podIP="10.0.0.6")
    reflector.pods["u1/jupyter-a-2"] = pod("Running", podIP="10.0.0.7")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(wait), INTERVAL * 10)
    wait.cancel()
