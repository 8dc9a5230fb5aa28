"""Process mode doesn't hand out root: each pod's processes run as its securityContext user,
its home is that uid's alone, and what the hub and the cluster keep is out of its sight.

Attacks kept as tests: a pod reading another pod's home, the cluster's admin kubeconfig,
the hub's database, or the kubelet's environment; a notebook's terminal doing the same
through a real hub and a real jupyterhub-singleuser."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from tests.fixtures.cluster import api_client_for, requires_emulator

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="switching users needs a kubelet running as root")

PROBE = """
import json, os, sys, pathlib
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
       "home": os.environ["HOME"], "reads": {}}
for path in sys.argv[1:]:
    try:
        out["reads"][path] = pathlib.Path(path).read_text()[:200]
    except OSError as e:
        out["reads"][path] = type(e).__name__
home = pathlib.Path(os.environ["HOME"])
(home / "secret.txt").write_text("mine")
print("RESULT " + json.dumps(out), flush=True)
"""


def probe_pod(name: str, targets: list[str], security: dict | None = None,
              container_security: dict | None = None) -> dict:
    container: dict = {"name": "main", "image": "python",
                       "command": ["python", "-c", PROBE, *targets]}
    if container_security:
        container["securityContext"] = container_security
    spec: dict = {"restartPolicy": "Never", "containers": [container]}
    if security:
        spec["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": spec}


async def result_of(cluster, kube: KubeResources, name: str, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        pod = await kube.get("Pod", name, "default")
        if pod and pod["status"].get("phase") in ("Succeeded", "Failed"):
            break
        assert time.monotonic() < deadline, pod and pod["status"]
        await asyncio.sleep(0.05)
    text = cluster.kubelet.read_log("default", name) or ""
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert pod["status"]["phase"] == "Succeeded" and lines, text
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture
def open_dir():
    """A world-traversable folder (as `make demo --workdir DIR` may be given): only the
    kubelet's covering of its folder keeps the hub's files there out of a pod's sight."""
    path = Path(tempfile.mkdtemp(prefix="kdash-users-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_pods_run_as_their_users_with_private_homes(make_local_cluster, open_dir):
    cluster = await make_local_cluster(kubelet="process", workdir=open_dir / "cluster",
                                       kubeconfig_path=open_dir / "admin.kubeconfig")
    requires_emulator(cluster)
    hub_db = open_dir / "hub" / "jupyterhub.sqlite"
    hub_db.parent.mkdir()
    hub_db.write_text("SQLite format 3 -- the hub's users and tokens")
    os.chmod(hub_db, 0o644)  # as jupyterhub leaves it (umask 022)
    kubeconfig = cluster.kubeconfig_path
    os.chmod(kubeconfig, 0o644)
    workdir = cluster.kubelet.workdir
    async with api_client_for(kubeconfig) as client:
        kube = KubeResources(client)
        # bob's pod first: its home holds a secret
        await kube.create(probe_pod("bob", [], {"runAsUser": 2002, "runAsGroup": 2002}))
        bob = await result_of(cluster, kube, "bob")
        assert (bob["uid"], bob["gid"]) == (2002, 2002)
        bob_home = Path(bob["home"])
        assert (bob_home / "secret.txt").read_text() == "mine"

        targets = [str(bob_home / "secret.txt"), str(hub_db), str(kubeconfig),
                   f"/proc/{os.getpid()}/environ", "/root/.bashrc"]
        await kube.create(probe_pod(
            "alice", targets, {"runAsUser": 2001, "runAsGroup": 2001, "fsGroup": 3000,
                               "supplementalGroups": [3001]}))
        alice = await result_of(cluster, kube, "alice")
        assert (alice["uid"], alice["gid"]) == (2001, 2001)
        assert {3000, 3001} <= set(alice["groups"]) and 0 not in alice["groups"]
        for target in targets:  # nothing readable: covered, or not hers
            assert alice["reads"][target] in ("PermissionError", "FileNotFoundError",
                                              "NotADirectoryError"), (target, alice)
        # the homes: each its user's, mode 0700, under the kubelet's traversable dirs
        for home, uid in ((Path(alice["home"]), 2001), (bob_home, 2002)):
            rootfs = home.parents[1]
            info = os.stat(rootfs)
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700)
            assert os.stat(home).st_uid == uid
        assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o711

        # a container's own runAsUser wins over the pod's; none at all is nobody, not root
        await kube.create(probe_pod("own", [], {"runAsUser": 2001}, {"runAsUser": 2005}))
        await kube.create(probe_pod("plain", []))
        await kube.create(probe_pod("root", [], {"runAsUser": 0}))
        assert (await result_of(cluster, kube, "own"))["uid"] == 2005
        plain = await result_of(cluster, kube, "plain")
        assert (plain["uid"], plain["gid"]) == (65534, 65534)
        root = await result_of(cluster, kube, "root")
        assert root["uid"] == 0

        # a claim's directory (a home kept across servers) belongs to the pod's uid, 0700
        body = probe_pod("claim", [], {"runAsUser": 2001, "runAsGroup": 2001})
        body["spec"]["volumes"] = [{"name": "home",
                                    "persistentVolumeClaim": {"claimName": "home-alice"}}]
        body["spec"]["containers"][0]["volumeMounts"] = [{"name": "home",
                                                          "mountPath": "/home/jovyan"}]
        await kube.create(body)
        await result_of(cluster, kube, "claim")
        claim = workdir / "volumes" / "default" / "home-alice"
        info = os.stat(claim)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (2001, 0o700)
        assert (claim / "secret.txt").read_text() == "mine"


async def test_termination_log_link_reads_nothing_of_the_machine(make_local_cluster):
    """A pod that makes its termination log a link to a root-only file gets no message
    out of it (the kubelet, root, never follows the pod's links)."""
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    secret = cluster.kubelet.workdir.parent / "root-only.txt"
    secret.write_text("root's secret")
    os.chmod(secret, 0o600)
    script = (f"import os; os.makedirs('/'.join([os.environ['HOME'], '..', '..', 'dev']), "
              f"exist_ok=True); os.symlink({str(secret)!r}, '/'.join([os.environ['HOME'], "
              f"'..', '..', 'dev', 'termination-log'])); raise SystemExit(1)")
    body = probe_pod("sneaky", [], {"runAsUser": 2001})
    body["spec"]["containers"][0]["command"] = ["python", "-c", script]
    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        await kube.create(body)
        deadline = time.monotonic() + 20
        while (pod := await kube.get("Pod", "sneaky", "default"))["status"].get(
                "phase") != "Failed":
            assert time.monotonic() < deadline, pod["status"]
            await asyncio.sleep(0.05)
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 1
        assert "root's secret" not in json.dumps(pod["status"])


async def test_notebook_terminal_cannot_read_the_hub_or_the_cluster(make_local_cluster,
                                                                   open_dir):
    """The attack as a user makes it: log in, start a server, open a terminal, cat."""
    cluster = await make_local_cluster(kubelet="process", workdir=open_dir / "cluster",
                                       kubeconfig_path=open_dir / "admin.kubeconfig")
    requires_emulator(cluster)
    os.chmod(cluster.kubeconfig_path, 0o644)
    config = """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.KubeSpawner.namespace = "default"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.uid = 2001
c.KubeSpawner.gid = 2001
c.KubeSpawner.fs_gid = 2001
c.KubeSpawner.start_timeout = 60
c.KubeSpawner.http_timeout = 60
"""
    hub = HubProcess(config, open_dir / "hub",
                     env={"KUBECONFIG": str(cluster.kubeconfig_path)})
    async with hub, aiohttp.ClientSession(headers=hub.auth_headers()) as http:
        api = hub.api_url
        async with http.post(f"{api}/users/eve") as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{api}/users/eve/server") as r:
            assert r.status in (201, 202), await r.text()
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"{api}/users/eve") as r:
                server = (await r.json())["servers"].get("")
            if server and server["ready"]:
                break
            assert time.monotonic() < deadline, (
                hub.log_tail(40), cluster.kubelet.read_log("default", "jupyter-eve"))
            await asyncio.sleep(0.2)
        db = open_dir / "hub" / "jupyterhub.sqlite"
        assert db.exists() and db.stat().st_mode & 0o004  # readable by others, if reachable
        # the server runs as the directory uid, without --allow-root
        run = cluster.kubelet.runs["default/jupyter-eve"]
        process = run.runners["notebook"].process
        assert "--allow-root" not in process.argv
        assert os.stat(f"/proc/{process.pid}").st_uid == 2001

        async with http.post(f"{hub.url}/user/eve/api/terminals") as r:
            assert r.status == 200, await r.text()
            name = (await r.json())["name"]
        ws_url = hub.url.replace("http", "ws", 1) + f"/user/eve/terminals/websocket/{name}"
        command = (f"id -u; cat {db} {cluster.kubeconfig_path} {hub.config_path} "
                   f"/proc/{os.getpid()}/environ; ls {open_dir}; echo EN''D\r")
        output = ""
        async with http.ws_connect(ws_url) as ws:
            await ws.send_str(json.dumps(["stdin", command]))
            deadline = time.monotonic() + 20
            while "\nEND" not in output.replace("\r", ""):
                assert time.monotonic() < deadline, output
                message = await ws.receive(timeout=20)
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                kind, *rest = json.loads(message.data)
                if kind == "stdout":
                    output += rest[0]
        # the shell's prompt may land before the first output line ("$ 2001")
        lines = [line.removeprefix("$ ").strip() for line in output.replace("\r", "").split("\n")]
        assert "2001" in lines[1:], output
        for leak in ("SQLite format", "client-key-data", "certificate-authority-data",
                     "c.JupyterHub", "KUBECONFIG="):
            assert leak not in output, output
        assert "Permission denied" in output or "No such file" in output, output
        async with http.delete(f"{api}/users/eve/server") as r:
            assert r.status in (202, 204)


async def test_pods_in_network_namespaces_cannot_reach_the_emulated_api(make_local_cluster):
    """With pod_network="netns" a pod has its own loopback: the emulated API server (any
    token accepted) on 127.0.0.1 is out of its reach, the hub URL is relayed, and the host
    reaches the pod at its address, across two nodes on one bridge."""
    from aiohttp import web

    from kdash_hub.localcluster import podnetwork

    cluster = await make_local_cluster(kubelet="process", nodes=2, pod_network="netns")
    requires_emulator(cluster)
    hub_app = web.Application()
    hub_app.router.add_get("/hub/api", lambda request: web.Response(text="hub-here"))
    runner = web.AppRunner(hub_app)
    await runner.setup()
    from kdash_hub.dev.ports import free_port

    hub_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hub_port).start()
    api_port = int(cluster.url.rsplit(":", 1)[1])
    script = f"""
import os, socket, urllib.request
out = {{}}
try:
    socket.create_connection(("127.0.0.1", {api_port}), timeout=3).close()
    out["api"] = "reached"
except OSError as e:
    out["api"] = type(e).__name__
out["hub"] = urllib.request.urlopen(os.environ["JUPYTERHUB_API_URL"], timeout=10).read().decode()
print("RESULT " + __import__("json").dumps(out), flush=True)
"""
    try:
        async with api_client_for(cluster.kubeconfig_path) as client:
            kube = KubeResources(client)
            names = []
            for index in range(2):
                body = probe_pod(f"net-{index}", [], {"runAsUser": 2001})
                body["spec"]["nodeName"] = f"node-{index}"
                body["spec"]["containers"][0]["command"] = ["python", "-c", script]
                body["spec"]["containers"][0]["env"] = [
                    {"name": "JUPYTERHUB_API_URL",
                     "value": f"http://127.0.0.1:{hub_port}/hub/api"}]
                await kube.create(body)
                names.append(f"net-{index}")
            for name in names:
                result = await result_of(cluster, kube, name)
                assert result["api"] in ("ConnectionRefusedError", "TimeoutError"), result
                assert result["hub"] == "hub-here"
                pod = await kube.get("Pod", name, "default")
                assert pod["status"]["podIP"].startswith("10.244.")
            network = cluster.kubelet.network
            assert isinstance(network, podnetwork.NetnsPodNetwork)
            blocks = sorted(network.blocks.values())
            assert len(blocks) == 2
    finally:
        await runner.cleanup()
    await cluster.stop()
    for block in blocks:
        assert podnetwork.namespaces(block) == [] and podnetwork.links(block) == []
