"""A stopped probe ends, and leaves nothing running, whenever the stop comes.

Found by tests/security/test_pod_address_reuse.py: a pod deleted as its readiness probe's
connection was being made stayed on the node for good. Python 3.11's asyncio.wait_for drops
a cancellation that arrives as its awaitable completes; the probe's loop ran on, and the
container's stop waited for it for ever (the pod's address with it).
"""

from __future__ import annotations

import asyncio
import os
import sys

from kdash_hub.localcluster import probes
from tests.fixtures.processes import process_alive

PROBE = {"periodSeconds": 1, "initialDelaySeconds": 0}


async def _results(_ok: bool) -> None:
    return None




async def test_a_probe_that_lost_its_cancellation_still_stops():
    runs = 0

    async def run_losing_one_cancellation() -> tuple[bool, str]:
        """As wait_for did: the check completes as the stop cancels it, and says ok."""
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if runs == 1:
                return True, ""  # the cancellation is lost here
            raise
        return True, ""

    worker = probes.ProbeWorker("Readiness", PROBE, run_losing_one_cancellation, _results,
                                _results)
    worker.start()
    await asyncio.sleep(0.01)  # inside the first check
    loop_task = worker._task
    stopping = asyncio.ensure_future(worker.stop())
    await asyncio.wait({stopping}, timeout=3)  # never cancelled: it must end by itself
    try:
        assert stopping.done(), "the stop still waits for a probe loop that runs on"
        ran = runs
        await asyncio.sleep(1.5)  # more than the probe's period
        assert runs == ran, "the probe's loop ran on after its stop"
    finally:
        stopping.cancel()
        loop_task.cancel()


async def test_a_stopped_probe_does_not_swallow_its_callers_cancellation():
    async def forever() -> tuple[bool, str]:
        await asyncio.Event().wait()
        return True, ""

    worker = probes.ProbeWorker("Liveness", PROBE, forever, _results, _results)
    worker.start()
    await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(worker.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    try:
        await stopping
        raise AssertionError("the caller's cancellation was swallowed")
    except asyncio.CancelledError:
        pass


async def test_a_cancelled_exec_probe_leaves_no_command_running(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    check = asyncio.ensure_future(probes.check_exec(
        [sys.executable, "-c", script], dict(os.environ), tmp_path, 30))
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    check.cancel()
    try:
        await check
        raise AssertionError("the check should end cancelled")
    except asyncio.CancelledError:
        pass
    for _ in range(100):
        if not process_alive(pid):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the probe's command {pid} runs on")
