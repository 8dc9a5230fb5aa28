"""`kdash-hub local-cluster` in the foreground, and kubectl against the local cluster."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.dev.ports import free_port
from kdash_hub.localcluster.kubeconfig import server_of
from tests.fixtures.cluster import requires_emulator

CLI = [sys.executable, "-m", "kdash_hub.cli", "local-cluster"]  # = `kdash-hub local-cluster`


async def read_until(stream: asyncio.StreamReader, prefix: str, within: float = 60) -> str:
    async with asyncio.timeout(within):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise EOFError(f"output ended before a line starting with {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()


def pids_with(marker: str) -> list[int]:
    """Processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def server_pod(name: str, marker: str) -> dict:
    """A pod process mode runs: a notebook-like container serving HTTP on its pod IP."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{
            "name": "notebook", "image": "python:3",
            "command": ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8888",
                        "--directory", marker],
            "ports": [{"name": "notebook-port", "containerPort": 8888}],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/"},
            ],
        }]},
    }


@pytest.mark.parametrize("mode,stop_signal", [("process", signal.SIGTERM),
                                              ("status", signal.SIGINT)])
async def test_cli_runs_in_foreground_and_stops_cleanly(tmp_path, mode, stop_signal):
    kubeconfig = tmp_path / "kube" / "config"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "--port", str(port), "--kubeconfig", str(kubeconfig), "--nodes", "2",
        "--gpus", "nvidia.com/gpu=4", "--kubelet", mode,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    # the pod runs as its own user and sees neither tmp_path nor /root: what it serves is
    # in a folder everyone may read
    marker = tempfile.mkdtemp(prefix=f"kdash-served-{mode}-")
    os.chmod(marker, 0o755)
    try:
        url = await read_until(proc.stdout, "local cluster: ")
        assert url == f"http://127.0.0.1:{port}"
        assert server_of(kubeconfig) == url
        headers = {"Authorization": "Bearer anything"}
        async with aiohttp.ClientSession(url, headers=headers) as http:
            async with http.get("/api/v1/nodes") as r:
                nodes = (await r.json())["items"]
            assert [n["metadata"]["name"] for n in nodes] == ["node-0", "node-1"]
            assert all(n["status"]["allocatable"]["nvidia.com/gpu"] == "4" for n in nodes)

            async with http.post("/api/v1/namespaces/default/pods",
                                 json=server_pod("web", marker)) as r:
                assert r.status == 201, await r.text()
            deadline = time.monotonic() + 30
            while True:
                async with http.get("/api/v1/namespaces/default/pods/web") as r:
                    pod = await r.json()
                statuses = pod["status"].get("containerStatuses") or [{}]
                if pod["status"].get("phase") == "Running" and statuses[0].get("ready"):
                    break
                assert time.monotonic() < deadline, pod["status"]
                await asyncio.sleep(0.05)
        ip = pod["status"]["podIP"]
        if mode == "process":
            async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:8888/") as r:
                assert r.status == 200
            assert len(pids_with(marker)) == 1
        else:
            assert pids_with(marker) == []

        proc.send_signal(stop_signal)
        async with asyncio.timeout(20):
            rest = (await proc.stdout.read()).decode()
            assert await proc.wait() == 0, rest
        assert "local cluster stopped" in rest
        assert pids_with(marker) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(marker, ignore_errors=True)


def test_gpu_option_is_checked():
    from kdash_hub.localcluster.cli import parse_gpus

    assert parse_gpus("nvidia.com/gpu=4,amd.com/gpu=2") == {"nvidia.com/gpu": 4,
                                                            "amd.com/gpu": 2}
    with pytest.raises(Exception, match="RESOURCE=COUNT"):
        parse_gpus("gpu")


MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  greeting: hello
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx:1.27
    resources:
      requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: python:3
"""


async def kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        shutil.which("kubectl"), "--kubeconfig", str(kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl is not on PATH (CI installs Debian's kubernetes-client)")
async def test_kubectl_against_the_local_cluster(local_cluster, tmp_path):
    requires_emulator(local_cluster)
    kubeconfig = local_cluster.kubeconfig_path
    assert "node-0" in await kubectl(kubeconfig, "get", "nodes")
    nodes = json.loads(await kubectl(kubeconfig, "get", "nodes", "-o", "json"))["items"]
    ready = [c for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"

    manifest = tmp_path / "demo.yaml"
    manifest.write_text(MANIFEST)
    applied = await kubectl(kubeconfig, "apply", "-f", str(manifest))
    for line in ("namespace/demo created", "configmap/settings created", "pod/web created",
                 "deployment.apps/api created"):
        assert line in applied

    waited = await kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/web", "-n", "demo",
                           "--timeout=30s")
    assert "pod/web condition met" in waited
    deadline = time.monotonic() + 30
    while True:
        pods = json.loads(await kubectl(kubeconfig, "get", "pods", "-n", "demo", "-o", "json"))
        phases = {p["metadata"]["name"]: p["status"].get("phase") for p in pods["items"]}
        if len(phases) == 3 and set(phases.values()) == {"Running"}:
            break
        assert time.monotonic() < deadline, phases
        await asyncio.sleep(0.2)
    assert all(p["status"]["podIP"].startswith("127.") for p in pods["items"])
    assert len([name for name in phases if name.startswith("api-")]) == 2

    again = await kubectl(kubeconfig, "apply", "-f", str(manifest))
    assert "pod/web unchanged" in again
    deleted = await kubectl(kubeconfig, "delete", "pod", "web", "-n", "demo")
    assert 'pod "web" deleted' in deleted
    remaining = json.loads(await kubectl(kubeconfig, "get", "pods", "-n", "demo", "-o", "json"))
    assert "web" not in {p["metadata"]["name"] for p in remaining["items"]}
