"""A container never outlives its pod: a pod deleted while its container's process is being
made (the runner's stop finds no process yet) leaves no process behind. Seen in CI: a start
that failed right after its pod was made left the deleted pod's notebook running, answering
on the address the next pod got."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest

from kdash_hub.localcluster import processes
from kdash_hub.localcluster.containers import ContainerRunner
from tests.fixtures.processes import process_alive


def _runner(tmp_path: Path, made: list, slow_start: asyncio.Event) -> ContainerRunner:
    async def start(log_path: Path) -> processes.ContainerProcess:
        await slow_start.wait()  # the kubelet is still making the container
        proc = processes.ContainerProcess(
            "notebook", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ),
            tmp_path, log_path)
        await proc.start()
        made.append(proc)
        return proc

    async def event(reason: str, message: str, kind: str) -> None:
        await asyncio.sleep(0)

    return ContainerRunner(
        {"name": "notebook", "image": "img"}, start=start, restart_policy="Always",
        pod_desc="jupyter-ann_ns(uid)", pod_ip="127.0.0.1", env={}, cwd=tmp_path,
        log_dir=tmp_path / "logs", termination_path=None, implicit_ready=None,
        on_change=lambda: None, on_event=event, grace=5.0)


@pytest.mark.parametrize("then", ["cancelled", "left to run"])
async def test_a_container_stopped_while_it_is_made_does_not_run_on(tmp_path, then):
    made: list[processes.ContainerProcess] = []
    go = asyncio.Event()
    runner = _runner(tmp_path, made, go)
    task = asyncio.ensure_future(runner.run())
    await asyncio.sleep(0.05)
    assert await runner.stop(5.0) is None  # no process to stop yet
    go.set()
    for _ in range(100):  # until the process exists
        if made:
            break
        await asyncio.sleep(0.01)
    assert made, "the process was never made"
    if then == "cancelled":  # as the kubelet ends a deleted pod's run, whatever the
        task.cancel()          # runner was doing by then
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        await asyncio.wait_for(task, 10)
    assert not process_alive(made[0].pid)


async def test_a_running_container_cancelled_is_stopped(tmp_path):
    made: list[processes.ContainerProcess] = []
    go = asyncio.Event()
    go.set()
    runner = _runner(tmp_path, made, go)
    task = asyncio.ensure_future(runner.run())
    for _ in range(200):
        if "running" in runner.state:
            break
        await asyncio.sleep(0.01)
    assert "running" in runner.state and process_alive(made[0].pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not process_alive(made[0].pid)
