"""The chooser and its messages on a real JupyterHub (+ proxy) with KDashSpawner, a local
cluster in process mode with 2 free GPUs, and Chromium.

What a person sees: GPU kinds by the admin's names, choices that can't be met now disabled
with the reason, each flavor's idle timeout, hidden flavors explained, refusals in one plain
sentence (form, REST API, as the user and as an admin); a refusal keeps the last accepted
user_options (the next form preselects them, an admin's "Start server" uses them) and puts
its reason in the server's state, which the admin panel shows.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from kdash_hub.naming import user_namespace
from tests.fixtures.cluster import api_client_for
from tests.fixtures.realcp import HUB_NAMESPACE
from tests.fixtures.spawner import HUB_FLAVORS, hub_config
from tests.fixtures.versions import JUPYTERHUB_MAJOR
from tests.integration.test_spawner_hub import (
    CHROMIUM_ARGS,
    FREE_GPUS,
    START_TIMEOUT,
    hold_gpus_beyond,
    release_gpus,
    wait_ready,
)

REPO = Path(__file__).resolve().parents[2]
GPU_NOTE = "GPU profiles are for the group ml: ask an admin to join it."
FLAVORS = [dict(f) for f in HUB_FLAVORS]
FLAVORS[2] = {**FLAVORS[2], "groups": ["ml", "ml-lite"], "hidden_note": GPU_NOTE}
EXTRA = '''
GROUPS = {"mia": ["ml"], "noah": [], "pia": ["ml-lite"], "quinn": ["ml"], "rita": ["ml"]}
c.Authenticator.admin_users = {"ada"}
c.KDashSpawner.gpu_display_names = {"nvidia.com/gpu": "NVIDIA A100"}
c.KDashSpawner.culler_rules = {"default_rule": {"idle": "8h", "max_age": "never"},
                               "group_rules": {"long-jobs": {"idle": "1d"}}}
c.KDashSpawner.group_quotas = {"ml": {"requests.nvidia.com/gpu": "4", "limits.cpu": "32",
                                      "limits.memory": "64Gi"},
                               "ml-lite": {"requests.nvidia.com/gpu": "1"}}
'''
# the sentences, exactly
TOO_MANY = ("You asked for 4 NVIDIA A100s with GPU A100, but only 2 are free on any one node "
            "right now (2 in all): choose fewer GPUs or try again later.")
NOT_YOURS = ("The profile GPU A100 is for the groups ml and ml-lite, and you are not a member: "
             "choose another profile, or ask an admin to add you.")
OVER_QUOTA = ("This server would go over your quota: it asks for 2 NVIDIA A100s (your quota "
              "is 1); choose a smaller profile, stop other things in your namespace, or ask an "
              "admin for more.")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, _real_tier_session):
    """The hub on a local cluster with 2 free GPUs (process kubelet), or in the real tier
    on the session's control plane with a pod holding the GPU node's GPUs beyond 2."""
    workdir = tmp_path_factory.mktemp("kdash-chooser-hub")
    cluster = None
    extra = EXTRA
    if _real_tier_session is not None:
        kubeconfig = _real_tier_session.identity("hub")
        admin = _real_tier_session.admin_kubeconfig
        extra += f"c.KDashSpawner.hub_namespace = {HUB_NAMESPACE!r}\n"
    else:
        cluster = LocalCluster(gpus={"nvidia.com/gpu": FREE_GPUS}, kubelet="process",
                               kubeconfig_path=workdir / "kubeconfig", workdir=workdir / "nodes")
        cluster.start_in_thread()
        kubeconfig = admin = workdir / "kubeconfig"
    hub = HubProcess(hub_config(FLAVORS, start_timeout=START_TIMEOUT, extra=extra),
                     workdir / "hub", env={"KUBECONFIG": str(kubeconfig)})
    hub.admin_kubeconfig = admin
    try:
        asyncio.run(hold_gpus_beyond(admin, FREE_GPUS))
        asyncio.run(hub.start())
        yield hub
    finally:
        hub.stop_sync()
        asyncio.run(release_gpus(admin))
        if cluster is not None:
            cluster.stop_thread()


async def call(hub, method, path, body=None, token=None):
    """(status, parsed JSON or text) of a hub API request, as `token` (default: admin)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{hub.api_url}{path}", json=body,
                                   headers=hub.auth_headers(token)) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text


GROUPS = {"noah": [], "pia": ["ml-lite"], "quinn": ["ml"], "rita": ["ml"]}


async def user_token(hub, name: str) -> str:
    """A token of `name` (made by the admin service), to act as that user; the user is made
    with the groups the login would give."""
    status, user = await call(hub, "GET", f"/users/{name}")
    if status == 404:
        assert (await call(hub, "POST", f"/users/{name}"))[0] == 201
    for group in GROUPS[name]:
        if (await call(hub, "GET", f"/groups/{group}"))[0] == 404:
            assert (await call(hub, "POST", f"/groups/{group}"))[0] == 201
        status, body = await call(hub, "POST", f"/groups/{group}/users", {"users": [name]})
        assert status == 200, body
    status, body = await call(hub, "POST", f"/users/{name}/tokens", {"note": "test"})
    assert status == 201, body
    return body["token"]


async def default_server(hub, name: str) -> dict:
    """The default server's model, stopped or not, as the admin panel reads it."""
    status, user = await call(hub, "GET", f"/users/{name}?include_stopped_servers")
    assert status == 200, user
    return user["servers"].get("", {})


async def namespace_objects(hub, namespace: str, kinds: tuple[str, ...] = (
        "Pod", "PersistentVolumeClaim", "ResourceQuota")) -> dict[str, list[str]]:
    """What exists in `namespace` ({} when the namespace itself does not)."""
    async with api_client_for(hub.admin_kubeconfig) as client:
        kube = KubeResources(client)
        if await kube.get("Namespace", namespace) is None:
            return {}
        return {kind: sorted(o["metadata"]["name"] for o in await kube.list(kind, namespace))
                for kind in kinds}


async def token_of(hub, name: str) -> str:
    """A new API token of `name` (made a hub user first if needed)."""
    if (await call(hub, "GET", f"/users/{name}"))[0] == 404:
        assert (await call(hub, "POST", f"/users/{name}"))[0] == 201
    status, body = await call(hub, "POST", f"/users/{name}/tokens", {"note": "test"})
    assert status == 201, body
    return body["token"]


async def pod_of(hub, name: str) -> dict:
    """The one pod in `name`'s namespace."""
    async with api_client_for(hub.admin_kubeconfig) as client:
        pods = await KubeResources(client).list("Pod", user_namespace(name, "kdash-"))
    assert len(pods) == 1, pods
    return pods[0]


async def stop(hub, name: str) -> None:
    status, _ = await call(hub, "DELETE", f"/users/{name}/server")
    assert status in (202, 204)
    for _ in range(300):
        if not (await default_server(hub, name)).get("pending"):
            return
        await asyncio.sleep(0.2)


async def test_refusals_are_one_plain_sentence_and_create_nothing(hub):
    """As the users themselves, through the REST API: a hidden profile, a count that is not
    free now (the chooser disables it), a count over the quota. Each is refused with its
    sentence alone; nothing is made in the cluster; user_options stay as they were."""
    noah, pia, quinn = [await user_token(hub, n) for n in ("noah", "pia", "quinn")]
    cases = [("noah", noah, {"profile": "gpu-a100", "gpus": "1"}, 403, NOT_YOURS),
             ("quinn", quinn, {"profile": "gpu-a100", "gpus": "4"}, 400, TOO_MANY),
             ("pia", pia, {"profile": "gpu-a100", "gpus": "2"}, 403, OVER_QUOTA)]
    for name, token, options, code, sentence in cases:
        status, body = await call(hub, "POST", f"/users/{name}/server", options, token)
        assert (status, body["message"]) == (code, sentence), body
        assert not body["message"].startswith("HTTP"), body
        server = await default_server(hub, name)
        assert server.get("user_options", {}) == {}, server  # never ran: nothing stored
        assert server["state"]["kdash_last_refusal"] == sentence, server
        assert await namespace_objects(hub, user_namespace(name, "kdash-")) == {}, name
    # a profile that does not exist, and a count the flavor does not offer
    status, body = await call(hub, "POST", "/users/quinn/server", {"profile": "nope"}, quinn)
    assert (status, body["message"]) == (400, "There is no server profile “nope”; choose CPU "
                                               "small, CPU large or GPU A100."), body
    status, body = await call(hub, "POST", "/users/quinn/server",
                              {"profile": "gpu-a100", "gpus": "3"}, quinn)
    assert (status, body["message"]) == (
        400, "GPU A100 does not offer “3” GPUs; choose 1 NVIDIA A100, 2 NVIDIA A100s or "
             "4 NVIDIA A100s."), body
    # KubeSpawner's free-text choice, which no flavor enables, posted anyway
    status, body = await call(hub, "POST", "/users/quinn/server",
                              {"profile": "gpu-a100", "gpus--unlisted-choice": "8"}, quinn)
    assert (status, body["message"]) == (
        400, "These server options can't be used: choose your server again on the spawn "
             "page."), body
    assert await namespace_objects(hub, user_namespace("quinn", "kdash-")) == {}


async def test_refusal_keeps_the_last_accepted_options(hub):
    """quinn runs CPU large, stops, then asks for what is refused: the stored user_options
    stay CPU large, the refusal's reason is in the server's state, and an admin's "Start
    server" (the admin panel posts no options) starts CPU large again."""
    token = await user_token(hub, "quinn")
    good = {"profile": "cpu-large"}
    status, body = await call(hub, "POST", "/users/quinn/server", good, token)
    assert status in (201, 202), body
    await wait_ready(hub, "quinn")
    await stop(hub, "quinn")
    for bad, sentence in (({"profile": "gpu-a100", "gpus": "4"}, TOO_MANY),
                          ({"profile": "admin-only"}, "The profile Admin debug is for the "
                           "group platform-admins, and you are not a member: choose another "
                           "profile, or ask an admin to add you.")):
        status, body = await call(hub, "POST", "/users/quinn/server", bad, token)
        assert status in (400, 403) and body["message"] == sentence, body
        server = await default_server(hub, "quinn")
        assert server["user_options"] == good, server
        assert server["state"]["kdash_last_refusal"] == sentence, server
        assert (await namespace_objects(hub, user_namespace("quinn", "kdash-")))["Pod"] == []
    # the admin panel's "Start server": POST without a body
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{hub.api_url}/users/quinn/servers/",
                                headers=hub.auth_headers()) as resp:
            assert resp.status in (201, 202), await resp.text()
    server = await wait_ready(hub, "quinn")
    assert server["user_options"] == good
    assert "kdash_last_refusal" not in (await default_server(hub, "quinn"))["state"]
    await stop(hub, "quinn")


async def login(browser, hub, name: str):
    page = await browser.new_page(viewport={"width": 1100, "height": 1000})
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", "any")
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_url(f"{hub.url}/hub/**")
    return page


async def gpu_choices(page) -> list[dict]:
    """The GPU counts as shown: value, the words next to it, disabled, checked."""
    return await page.eval_on_selector_all(
        'input[name="profile-option-gpu-a100--gpus"]',
        "els => els.map(i => ({value: i.value, disabled: i.disabled, checked: i.checked, "
        "text: i.closest('.choice').innerText.replace(/\\s+/g, ' ').trim()}))")


@pytest.mark.browser
async def test_chooser_in_chromium(hub):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium")
                                          or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "mia")
            await page.goto(f"{hub.url}/hub/spawn")
            await page.wait_for_selector("#kubespawner-profiles-list")
            text = await page.inner_text("#kubespawner-profiles-list")
            # 1. the admin's names for GPU kinds, never the resource name
            assert "2 NVIDIA A100s free now" in text and "nvidia.com" not in text, text
            # 2. what can't be had now is disabled, with the reason next to it
            assert await gpu_choices(page) == [
                {"value": "1", "text": "1 NVIDIA A100", "disabled": False, "checked": True},
                {"value": "2", "text": "2 NVIDIA A100s", "disabled": False, "checked": False},
                {"value": "4", "text": "4 NVIDIA A100s (not free now: at most 2 on one node)",
                 "disabled": True, "checked": False}]
            # 5. each flavor's idle timeout: its own (GPU), else the culler's default rule
            assert await page.inner_text("#profile-idle-gpu-a100") == "Stopped after 1h idle"
            assert await page.inner_text("#profile-idle-cpu-small") == "Stopped after 8h idle"
            # 4. the flavor hidden from mia, explained in one line
            assert "Admin debug" not in text
            assert await page.inner_text("#kdash-hidden-profiles") == \
                "Admin debug is for the group platform-admins."
            shot = REPO / "artifacts" / "profile-chooser.png"
            shot.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(shot), full_page=True)

            # the browser will not pick a disabled choice; picking a free one picks its profile
            with pytest.raises(Exception, match="not enabled|disabled"):
                await page.check('input[name="profile-option-gpu-a100--gpus"][value="4"]',
                                 timeout=2000)
            await page.click('label[for="profile-option-gpu-a100--gpus--2"]')
            assert await page.is_checked("#profile-item-gpu-a100")
            assert await page.is_checked("#profile-option-gpu-a100--gpus--2")

            # mia runs CPU large, stops; then forces the disabled 4 through the page
            await page.click("#profile-item-cpu-large")
            await page.click("form input[type=submit], form button[type=submit]")
            await page.wait_for_url(f"{hub.url}/user/mia/**",
                                    timeout=(START_TIMEOUT + 60) * 1000)
            await wait_ready(hub, "mia")
            await stop(hub, "mia")
            await page.goto(f"{hub.url}/hub/spawn")
            assert await page.is_checked("#profile-item-cpu-large")
            await page.click("#profile-item-gpu-a100")
            await page.eval_on_selector(
                'input[name="profile-option-gpu-a100--gpus"][value="4"]',
                "i => { i.disabled = false; i.checked = true; }")
            await page.click("form input[type=submit], form button[type=submit]")
            # 3. the refusal in plain words, nothing else around it (the hub says "Error:")
            error = await page.inner_text(".spawn-error-msg")  # waits for the re-rendered form
            assert error.strip() == f"Error: {TOO_MANY}", error
            assert "HTTP 400" not in await page.inner_text("body")
            # the form below preselects the last accepted choice, and so does a new one
            assert await page.is_checked("#profile-item-cpu-large")
            await page.goto(f"{hub.url}/hub/spawn")
            assert await page.is_checked("#profile-item-cpu-large")
            await page.close()

            # noah sees the admin's own line for the GPU flavor, and one for the others
            page = await login(browser, hub, "noah")
            await page.goto(f"{hub.url}/hub/spawn")
            await page.wait_for_selector("#kdash-hidden-profiles")
            assert await page.eval_on_selector_all(
                "#kdash-hidden-profiles p", "ps => ps.map(p => p.textContent.trim())") == [
                GPU_NOTE, "CPU large is for the group ml.",
                "Admin debug is for the group platform-admins."]
            assert await page.inner_text("#kubespawner-profiles-list") != ""
            assert "GPU A100" not in await page.inner_text("#kubespawner-profiles-list")
        finally:
            await browser.close()
    assert (await default_server(hub, "mia"))["user_options"] == {"profile": "cpu-large"}


@pytest.mark.browser
async def test_admin_panel_shows_the_refusal_and_starts_the_last_good_profile(hub):
    """rita ran CPU small, then was refused 4 GPUs. The admin panel's "Profile used" still
    says cpu-small, her server's details carry the refusal's sentence, and its "Start
    Server" starts CPU small (no bare "Failed to start server.")."""
    token = await user_token(hub, "rita")
    status, body = await call(hub, "POST", "/users/rita/server", {"profile": "cpu-small"}, token)
    assert status in (201, 202), body
    await wait_ready(hub, "rita")
    await stop(hub, "rita")
    status, body = await call(hub, "POST", "/users/rita/server",
                              {"profile": "gpu-a100", "gpus": "4"}, token)
    assert (status, body["message"]) == (400, TOO_MANY), body
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium")
                                          or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "ada")
            await page.goto(f"{hub.url}/hub/admin")
            name = page.get_by_test_id("user-name-div-rita")
            await name.wait_for()
            row = page.locator("tr", has=name)
            if JUPYTERHUB_MAJOR >= 6:  # 5.x has no such column
                assert await row.get_by_test_id("user-row-profile-used").inner_text() == \
                    "cpu-small"
            await page.get_by_test_id("rita-collapse-button").click()
            details = page.get_by_test_id("rita-collapse")
            await details.wait_for()
            text = " ".join((await details.inner_text()).split())
            assert TOO_MANY in text, text
            await row.get_by_role("button", name="Start Server").click()
            server = await wait_ready(hub, "rita")
            assert server["user_options"] == {"profile": "cpu-small"}
            assert "Failed to start" not in await page.inner_text("body")
        finally:
            await browser.close()
    await stop(hub, "rita")
