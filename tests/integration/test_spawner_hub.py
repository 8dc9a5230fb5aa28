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
from kdash_hub.localcluster import LocalCluster
from tests.fixtures.spawner import hub_config

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kdash-spawner-hub")
    cluster = LocalCluster(gpus={"nvidia.com/gpu": 2}, kubelet="process",
                           kubeconfig_path=workdir / "kubeconfig", workdir=workdir / "nodes")
    cluster.start_in_thread()
    hub = HubProcess(hub_config(), workdir / "hub", env={"KUBECONFIG": str(workdir / "kubeconfig")})
    try:
        asyncio.run(hub.start())
        yield hub
    finally:
        hub.stop_sync()
        cluster.stop_thread()


async def api(hub, method, path, body=None):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{hub.api_url}{path}", json=body,
                                   headers=hub.auth_headers()) as resp:
            text = await resp.text()
            return resp.status, text


async def wait_ready(hub, name, limit=60):
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
    assert status == 403 and "not available to you" in text, text
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
        assert "2 GPUs free now" in text
        assert "Admin debug" not in text  # mia is not in platform-admins
        shot = REPO / "artifacts" / "profile-chooser.png"
        shot.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(shot), full_page=True)

        # asking for more GPUs than are free is refused at once, with the reason
        await page.click("#profile-item-gpu-a100")
        await page.select_option("#profile-option-gpu-a100--gpus", "4")
        await page.click("form input[type=submit], form button[type=submit]")
        await page.wait_for_load_state()
        body = await page.inner_text("body")
        assert "only 2 are free" in body, body[:2000]

        await page.goto(f"{hub.url}/hub/spawn")
        await page.click("#profile-item-cpu-large")
        await page.click("form input[type=submit], form button[type=submit]")
        await page.wait_for_url(f"{hub.url}/user/mia/**", timeout=60_000)
        server = await wait_ready(hub, "mia")
        assert server["user_options"]["profile"] == "cpu-large"
        await browser.close()
    assert (await api(hub, "DELETE", "/users/mia/server"))[0] in (202, 204)
