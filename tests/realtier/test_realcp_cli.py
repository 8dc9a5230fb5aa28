"""`kdash-hub local-cluster --control-plane real`: the same contract as the emulator's.

Foreground; prints the URL and writes an admin kubeconfig; SIGTERM stops every component
with no process left behind; a component that can't start is named with its log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdash_hub.dev.ports import free_port
from kdash_hub.localcluster.kubeconfig import client_for
from tests.fixtures.realcp import real_tier_enabled

pytestmark = pytest.mark.skipif(not real_tier_enabled(),
                                reason="real tier only (KDASH_REAL_TIER=1)")


def processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes that mention `workdir` (our components do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmdline:
            found.append(cmdline)
    return found


def start(workdir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    log = workdir / "out.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdash_hub.cli", "local-cluster", "--control-plane", "real",
         "--port", str(port), "--kubeconfig", str(workdir / "kubeconfig"),
         "--workdir", str(workdir / "cluster"), "--gpus", "nvidia.com/gpu=2"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc, log


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        if text in out or proc.poll() is not None:
            return out
        time.sleep(0.2)
    return log.read_text(errors="replace")


async def read_cluster(kubeconfig: Path) -> tuple[list[dict], dict]:
    api = client_for(kubeconfig)
    try:
        return ((await api.request("GET", "/api/v1/nodes"))["items"],
                await api.request("GET", "/version"))
    finally:
        await api.close()


def test_starts_serves_and_stops_with_nothing_left(tmp_path: Path) -> None:
    port = free_port()
    proc, log = start(tmp_path, port)
    try:
        out = wait_for(log, "local cluster: https://", proc)
        assert f"local cluster: https://127.0.0.1:{port}" in out, out
        assert len(processes_under(tmp_path)) >= 5  # cli, etcd, apiserver, kcm, scheduler
        nodes, version = asyncio.run(read_cluster(tmp_path / "kubeconfig"))
        assert version["gitVersion"].startswith("v1.36.")
        assert [n["metadata"]["name"] for n in nodes] == ["node-0"]
        assert nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] == "2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(tmp_path) == []
    assert "local cluster stopped" in log.read_text()


def test_a_component_that_fails_is_named_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, log = start(tmp_path, port)
        assert proc.wait(180) == 1
    out = log.read_text()
    assert "error: kube-apiserver exited during start-up; its log" in out, out
    assert "address already in use" in out
    assert processes_under(tmp_path) == []
