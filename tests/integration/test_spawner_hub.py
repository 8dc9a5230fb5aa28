"""A real JupyterHub (+ proxy) with KDashSpawner on a local cluster in process mode.

The cluster runs in a thread of the test process; the hub subprocess reaches it through
KUBECONFIG. Process mode runs each notebook pod as a real jupyterhub-singleuser, so
"running" means the hub's server is `ready` and the browser reaches it through the proxy.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from tests.fixtures.cluster import api_client_for
from tests.fixtures.realcp import HUB_NAMESPACE
from tests.fixtures.spawner import hub_config

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


FREE_GPUS = 2  # what the tests see free on the GPU node
# a spawn's limit: the real tier's control plane shares the 2 cores with the servers, and
# a notebook process on a loaded 2-core machine (the fast tier runs files side by side) can
# take a minute to import jupyter_server
START_TIMEOUT = 120
HOLDER = "kdash-test-gpu-holder"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, _real_tier_session):
    """The hub, on a local cluster with 2 GPUs (process kubelet); in the real tier on the
    session's control plane, acting with the hub's ServiceAccount token, where a pod of the
    test's holds what the GPU node has beyond 2."""
    workdir = tmp_path_factory.mktemp("kdash-spawner-hub")
    cluster = None
    extra = ""
    if _real_tier_session is not None:
        kubeconfig = _real_tier_session.identity("hub")
        admin = _real_tier_session.admin_kubeconfig
        extra = f"c.KDashSpawner.hub_namespace = {HUB_NAMESPACE!r}\n"
    else:
        cluster = LocalCluster(gpus={"nvidia.com/gpu": FREE_GPUS}, kubelet="process",
                               kubeconfig_path=workdir / "kubeconfig", workdir=workdir / "nodes")
        cluster.start_in_thread()
        kubeconfig = admin = workdir / "kubeconfig"
    hub = HubProcess(hub_config(start_timeout=START_TIMEOUT, extra=extra), workdir / "hub",
                     env={"KUBECONFIG": str(kubeconfig)})
    try:
        asyncio.run(hold_gpus_beyond(admin, FREE_GPUS))
        asyncio.run(hub.start())
        yield hub
    finally:
        hub.stop_sync()
        asyncio.run(release_gpus(admin))
        if cluster is not None:
            cluster.stop_thread()


async def hold_gpus_beyond(admin: Path, free: int) -> None:
    """A pod holding what the GPU node has beyond `free` (none on the emulator's node)."""
    async with api_client_for(admin) as client:
        kube = KubeResources(client)
        [node] = [n for n in await kube.list("Node")
                  if n["metadata"].get("labels", {}).get("nvidia.com/gpu.present") == "true"]
        hold = int(node["status"]["allocatable"]["nvidia.com/gpu"]) - free
        if hold <= 0:
            return
        await kube.create({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": HOLDER, "namespace": "default"},
                           "spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"},
                                    "containers": [{"name": "c", "image": "busybox",
                                                    "resources": {"limits": {
                                                        "nvidia.com/gpu": str(hold)}}}]}})
        deadline = time.monotonic() + 60
        while not ((await kube.get("Pod", HOLDER, "default")) or {}).get("spec", {}).get(
                "nodeName"):
            assert time.monotonic() < deadline, "the GPU holder pod was not scheduled"
            await asyncio.sleep(0.2)


async def release_gpus(admin: Path) -> None:
    """Delete the holder, and wait until it is gone (its GPUs are free only then)."""
    async with api_client_for(admin) as client:
        kube = KubeResources(client)
        await kube.delete("Pod", HOLDER, "default")
        deadline = time.monotonic() + 60
        while await kube.get("Pod", HOLDER, "default") is not None:
            assert time.monotonic() < deadline, "the GPU holder pod is still there"
            await asyncio.sleep(0.2)


async def api(hub, method, path, body=None):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{hub.api_url}{path}", json=body,
                                   headers=hub.auth_headers()) as resp:
            text = await resp.text()
            return resp.status, text


async def wait_ready(hub, name, limit=START_TIMEOUT):
    import json
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, text = await api(hub, "GET", f"/users/{name}")
        server = (json.loads(text).get("servers") or {}).get("")
        if server and server.get("ready"):
            return server
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}'s server not ready; hub log:\n{hub.log_tail(60)}")


async def progress_messages(hub, name, limit=30):
    """The messages of the hub's progress event stream of `name`'s pending spawn."""
    import json
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession(headers=hub.auth_headers()) as session:
        while time.monotonic() < deadline:
            async with session.get(f"{hub.api_url}/users/{name}/server/progress") as resp:
                if resp.status != 200:
                    await asyncio.sleep(0.05)
                    continue
                messages = []
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        messages.append(event.get("message", ""))
                        if event.get("ready") or event.get("failed"):
                            break
                return messages
    raise AssertionError("no progress stream")


async def test_rest_api_spawn_and_refusals(hub):
    for name in ("rest-ok", "rest-bad"):
        assert (await api(hub, "POST", f"/users/{name}"))[0] == 201
    status, text = await api(hub, "POST", "/users/rest-bad/server",
                             {"profile": "gpu-a100", "gpus": "1"})
    assert status == 403 and "is for the group ml, and you are not a member" in text, text
    status, text = await api(hub, "POST", "/users/rest-bad/server", {"profile": "nope"})
    assert status == 400 and "no server profile" in text.lower(), text
    spawn = asyncio.ensure_future(
        api(hub, "POST", "/users/rest-ok/server", {"profile": "cpu-small"}))
    messages = await progress_messages(hub, "rest-ok")
    status, text = await spawn
    assert status in (201, 202), text
    # the bundle steps are in the hub's progress bar, before KubeSpawner's pod events
    assert any("Creating namespace kdash-rest-ok" in m for m in messages), messages
    assert any("network policy" in m for m in messages), messages
    server = await wait_ready(hub, "rest-ok")
    assert server["user_options"] == {"profile": "cpu-small"}
    assert (await api(hub, "DELETE", "/users/rest-ok/server"))[0] in (202, 204)


@pytest.mark.browser
async def test_profile_chooser_in_chromium(hub):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(f"{hub.url}/hub/login")
        await page.fill("input[name=username]", "mia")
        await page.fill("input[name=password]", "any")
        await page.click("input[type=submit], button[type=submit]")
        await page.goto(f"{hub.url}/hub/spawn")
        await page.wait_for_selector("#kubespawner-profiles-list")
        text = await page.inner_text("#kubespawner-profiles-list")
        assert "GPU A100" in text and "CPU large" in text
        assert f"{FREE_GPUS} NVIDIA GPUs free now" in text
        assert "Admin debug" not in text  # mia is not in platform-admins
        # the chooser's choices, refusals and screenshot: tests/integration/test_chooser_hub.py
        await page.goto(f"{hub.url}/hub/spawn")
        await page.click("#profile-item-cpu-large")
        await page.click("form input[type=submit], form button[type=submit]")
        # the spawn, then JupyterLab's page
        await page.wait_for_url(f"{hub.url}/user/mia/**", timeout=(START_TIMEOUT + 60) * 1000)
        server = await wait_ready(hub, "mia")
        assert server["user_options"]["profile"] == "cpu-large"
        await browser.close()
    assert (await api(hub, "DELETE", "/users/mia/server"))[0] in (202, 204)
