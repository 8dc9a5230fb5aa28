"""`kubectl logs` and `kubectl exec` through the real kube-apiserver: it reaches our kubelet's
API (kdash_hub/localcluster/kubeletserver.py) at the node's address over HTTPS, with
certificates of the cluster CA both ways; nobody else gets in."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time

import aiohttp
import pytest
import yaml

from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from tests.fixtures.realcp import real_tier_enabled

pytestmark = pytest.mark.skipif(not real_tier_enabled(),
                                reason="real tier only (KDASH_REAL_TIER=1)")

NS = "default"
SCRIPT = ("import sys, time\n"
          "for i in range(3): print(f'line {i}', flush=True)\n"
          "print('to stderr', file=sys.stderr, flush=True)\n"
          "time.sleep(600)\n")


async def test_kubectl_logs_and_exec_reach_our_kubelet(real_control_plane):
    if shutil.which("kubectl") is None:
        raise AssertionError("kubectl (Debian's kubernetes-client) is needed for this test")
    kubeconfig = real_control_plane.admin_kubeconfig
    api = client_for(kubeconfig)
    name = "talker"
    try:
        await api.request("POST", f"/api/v1/namespaces/{NS}/pods", body={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"securityContext": {"runAsUser": 2001, "runAsGroup": 2001},
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "python",
                                     "command": ["python", "-c", SCRIPT]}]}})
        deadline = time.monotonic() + 90
        while True:
            pod = await api.request("GET", f"/api/v1/namespaces/{NS}/pods/{name}")
            statuses = pod["status"].get("containerStatuses") or [{}]
            if "running" in statuses[0].get("state", {}):
                break
            assert time.monotonic() < deadline, pod["status"]
            await asyncio.sleep(0.3)
        node = await api.request("GET", f"/api/v1/nodes/{pod['spec']['nodeName']}")

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", NS,
                                   *args], capture_output=True, text=True, input=stdin,
                                  timeout=60)

        deadline = time.monotonic() + 20
        while "line 2" not in (r := await asyncio.to_thread(kubectl, "logs", name)).stdout:
            assert time.monotonic() < deadline, (r.stdout, r.stderr)
            await asyncio.sleep(0.3)
        assert r.returncode == 0 and "line 0\nline 1\nline 2\n" in r.stdout, r.stderr
        assert "to stderr" in r.stdout
        r = await asyncio.to_thread(kubectl, "logs", name, "--tail=1")
        assert r.stdout.strip() in ("line 2", "to stderr"), r.stderr

        r = await asyncio.to_thread(kubectl, "exec", name, "--", "sh", "-c",
                                    "id -u; echo oops >&2; exit 3")
        assert r.returncode == 3 and r.stdout.strip() == "2001", (r.stdout, r.stderr)
        assert "oops" in r.stderr
        r = await asyncio.to_thread(kubectl, "exec", "-i", name, "--", "cat",
                                    stdin="piped through\n")
        assert (r.returncode, r.stdout) == (0, "piped through\n"), r.stderr

        # the kubelet's port: only the API server's client certificate gets in
        address = [a["address"] for a in node["status"]["addresses"]
                   if a["type"] == "InternalIP"][0]
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        url = f"https://{address}:{port}/containerLogs/{NS}/{name}/main"
        cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
        ca = ssl.create_default_context()
        import base64

        ca.load_verify_locations(cadata=base64.b64decode(
            cluster["certificate-authority-data"]).decode())
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=ca) as resp:  # no client certificate
                assert resp.status == 401
            admin = ssl.create_default_context()
            admin.load_verify_locations(cadata=base64.b64decode(
                cluster["certificate-authority-data"]).decode())
            user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
            tmp = real_control_plane.workdir / "admin-client"
            tmp.mkdir(exist_ok=True)
            (tmp / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
            (tmp / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
            admin.load_cert_chain(tmp / "c.crt", tmp / "c.key")
            async with http.get(url, ssl=admin) as resp:  # a CA certificate, not the API's
                assert resp.status == 403
    finally:
        try:
            await api.request("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}",
                              body={"gracePeriodSeconds": 0})
        finally:
            await api.close()
