"""Named servers (c.JupyterHub.allow_named_servers) with KDashSpawner, on a real JupyterHub
(+ proxy), a local cluster running notebooks as processes, the culler and Chromium.

One user runs several servers at once, each with its own profile (a CPU and a GPU flavor),
all in the user's namespace, each with a pod of its own and ONE home (the user's claim:
a notebook written in one server is there in the other). The chooser of a named server
(/hub/spawn/<user>/<name>) shows and enforces the profiles as the default server's does; a
refusal keeps that server's own last accepted options. The culler stops one named server by
its own profile's rule (or lifetime) and leaves the others running; the lifetime API and the
hub home handle each server. What an ordinary user might try against someone else's named
server, with a server name made to collide, or with a profile they may not have, is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from kdash_hub.naming import user_namespace, user_object_name
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from tests.fixtures.cluster import api_client_for
from tests.fixtures.culler import CULLER_SCOPES
from tests.fixtures.realcp import HUB_NAMESPACE
from tests.fixtures.spawner import hub_config
from tests.fixtures.versions import JUPYTERHUB_MAJOR
from tests.integration.test_chooser_hub import call, login, namespace_objects, token_of
from tests.integration.test_spawner_hub import (
    CHROMIUM_ARGS,
    FREE_GPUS,
    START_TIMEOUT,
    hold_gpus_beyond,
    release_gpus,
)

CULLER_TOKEN = "kdash-named-servers-test-culler-token-0123"
FLAVORS = [
    {"slug": "cpu-small", "display_name": "CPU small", "cpu_limit": 1, "mem_limit": "1G",
     "default": True, "idle_timeout": 7200},
    {"slug": "gpu-a100", "display_name": "GPU A100",
     "gpu": {"resource": "nvidia.com/gpu", "counts": [1, 2, 4]},
     "node_selector": {"nvidia.com/gpu.present": "true"},
     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
     "groups": ["ml"], "idle_timeout": 1800,
     "lifetime": {"min": "1h", "default": "2h", "max": "4h", "choices": ["1h", "2h", "4h"]}},
    {"slug": "admin-only", "display_name": "Admin debug", "groups": ["platform-admins"]},
    # homes of ReadWriteOnce (one node at a time), on the CPU node or the GPU node
    {"slug": "cpu-rwo", "display_name": "CPU (RWO home)", "cpu_limit": 1, "mem_limit": "1G",
     "node_selector": {"kubernetes.io/hostname": "node-1"}, "groups": ["rwo"],
     "storage": {"access_modes": ["ReadWriteOnce"]}},
    {"slug": "gpu-rwo", "display_name": "GPU (RWO home)",
     "gpu": {"resource": "nvidia.com/gpu", "counts": [1]},
     "node_selector": {"nvidia.com/gpu.present": "true"}, "groups": ["rwo"],
     "storage": {"access_modes": ["ReadWriteOnce"]}},
]
EXTRA = f'''
GROUPS.update({{"mia": ["ml"], "noah": [], "eve": [], "rosa": ["ml"], "sami": ["ml"],
               "ursula": ["ml", "rwo"]}})
from kdash_hub.spawner import lifetime_api
lifetime_api.install(c)
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 8
c.KDashSpawner.gpu_display_names = {{"nvidia.com/gpu": "NVIDIA A100"}}
c.KDashSpawner.dynamic_storage = {{"capacity": "1Gi", "access_modes": ["ReadWriteMany"]}}
c.JupyterHub.services.append({{"name": "kdash-culler", "api_token": {CULLER_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "kdash-culler", "scopes": {CULLER_SCOPES!r},
                                "services": ["kdash-culler"]}})
'''
NOT_YOURS = ("The profile GPU A100 is for the group ml, and you are not a member: choose "
             "another profile, or ask an admin to add you.")
TOO_MANY = ("You asked for 4 NVIDIA A100s with GPU A100, but only 2 are free on any one node "
            "right now (2 in all): choose fewer GPUs or try again later.")
NOT_ADMINS = ("The profile Admin debug is for the group platform-admins, and you are not a "
              "member: choose another profile, or ask an admin to add you.")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, _real_tier_session):
    """The hub on a local cluster of two nodes, one with 2 free GPUs (process kubelet), or
    in the real tier on the session's control plane (two nodes too). Homes are claims of a
    ReadWriteMany class unless a flavor says otherwise."""
    workdir = tmp_path_factory.mktemp("kdash-named-hub")
    cluster = None
    extra = EXTRA
    if _real_tier_session is not None:
        kubeconfig = _real_tier_session.identity("hub")
        admin = _real_tier_session.admin_kubeconfig
        extra += f"c.KDashSpawner.hub_namespace = {HUB_NAMESPACE!r}\n"
    else:
        # as the real tier's: node-0 with the GPUs, node-1 without
        cluster = LocalCluster(nodes=2, gpus={"nvidia.com/gpu": FREE_GPUS}, gpu_nodes=1,
                               kubelet="process",
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


async def member(hub, name: str) -> str:
    """A token of `name`, made a hub user in the groups its login would give."""
    token = await token_of(hub, name)
    for group in {"mia": ["ml"], "ursula": ["ml", "rwo"]}.get(name, []):
        if (await call(hub, "GET", f"/groups/{group}"))[0] == 404:
            assert (await call(hub, "POST", f"/groups/{group}"))[0] == 201
        status, body = await call(hub, "POST", f"/groups/{group}/users", {"users": [name]})
        assert status == 200, body
    return token


def server_path(user: str, server: str) -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


async def servers(hub, user: str) -> dict[str, dict]:
    status, model = await call(hub, "GET", f"/users/{user}?include_stopped_servers")
    assert status == 200, model
    return model["servers"]


async def start(hub, user: str, server: str, options: dict, token: str | None = None) -> dict:
    """Start `user`'s `server` ("" = default) and wait until it is ready."""
    status, body = await call(hub, "POST", server_path(user, server), options, token)
    assert status in (201, 202), body
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        model = (await servers(hub, user)).get(server) or {}
        if model.get("ready"):
            return model
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user}/{server} not ready; hub log:\n{hub.log_tail(60)}")


async def stop(hub, user: str, server: str) -> None:
    status, body = await call(hub, "DELETE", server_path(user, server))
    assert status in (202, 204), body
    for _ in range(300):
        model = (await servers(hub, user)).get(server) or {}
        if not model.get("pending") and not model.get("ready"):
            return
        await asyncio.sleep(0.2)


async def pods_of(hub, user: str) -> dict[str, dict]:
    """{server name: pod} in `user`'s namespace, by KubeSpawner's servername annotation (the
    raw name; its label is a slug, which escapes names like `a--b`)."""
    async with api_client_for(hub.admin_kubeconfig) as client:
        pods = await KubeResources(client).list("Pod", user_namespace(user, "kdash-"))
    return {(p["metadata"].get("annotations") or {}).get("hub.jupyter.org/servername", ""): p
            for p in pods}


async def contents(hub, user: str, server: str, token: str, method: str, path: str,
                   body: dict | None = None) -> tuple[int, dict]:
    """The Jupyter contents API of `user`'s `server`, through the hub's proxy."""
    base = f"{hub.url}/user/{user}/" + (f"{server}/" if server else "")
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{base}api/contents/{path}", json=body,
                                   headers={"Authorization": f"token {token}"}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text.startswith("{") else {"text": text})


async def test_two_servers_with_different_profiles_share_the_home(hub):
    """mia runs her default server on CPU small and “gpu” on GPU A100 at once: two pods in
    kdash-mia with names of their own, each with its flavor's resources, one home claim;
    the notebook written in one is read from the other."""
    token = await member(hub, "mia")
    await start(hub, "mia", "", {"profile": "cpu-small"}, token)
    await start(hub, "mia", "gpu", {"profile": "gpu-a100", "gpus": "1"}, token)
    models = await servers(hub, "mia")
    assert models[""]["user_options"] == {"profile": "cpu-small"}
    assert models["gpu"]["user_options"] == {"profile": "gpu-a100", "gpus": "1"}
    pods = await pods_of(hub, "mia")
    assert {k: p["metadata"]["name"] for k, p in pods.items()} == {
        "": "jupyter-mia", "gpu": "jupyter-mia--gpu"}
    assert {p["metadata"]["namespace"] for p in pods.values()} == {"kdash-mia"}
    limits = {k: p["spec"]["containers"][0]["resources"]["limits"] for k, p in pods.items()}
    assert "nvidia.com/gpu" not in limits[""] and limits["gpu"]["nvidia.com/gpu"] == "1"
    assert pods["gpu"]["spec"]["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    homes = {k: [v for v in p["spec"]["volumes"] if v["name"] == "home"]
             for k, p in pods.items()}
    assert homes[""] == homes["gpu"] == [
        {"name": "home", "persistentVolumeClaim": {"claimName": "claim-mia"}}]
    objects = await namespace_objects(hub, user_namespace("mia", "kdash-"))
    assert objects["PersistentVolumeClaim"] == ["claim-mia"]
    # ReadWriteMany: any node, nothing ties the pods together
    for pod in pods.values():
        assert "kdash-hub.io/home-claim" not in pod["metadata"].get("labels", {})
        assert not (pod["spec"].get("affinity") or {}).get("podAffinity")
    # one home: written through the GPU server, read through the default one
    notebook = {"type": "notebook", "content": {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "written on the GPU"}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    status, body = await contents(hub, "mia", "gpu", token, "PUT", "shared.ipynb", notebook)
    assert status in (200, 201), body
    status, body = await contents(hub, "mia", "", token, "GET", "shared.ipynb")
    assert status == 200, body
    assert body["content"]["cells"][0]["source"] == "written on the GPU"
    # stopping one leaves the other running, and the home
    await stop(hub, "mia", "gpu")
    assert set(await pods_of(hub, "mia")) == {""}
    status, body = await contents(hub, "mia", "", token, "GET", "shared.ipynb")
    assert status == 200, body
    # deleting the named server keeps the home it shared
    status, body = await call(hub, "DELETE", "/users/mia/servers/gpu", {"remove": True})
    assert status in (202, 204), body
    assert "gpu" not in await servers(hub, "mia")
    objects = await namespace_objects(hub, user_namespace("mia", "kdash-"))
    assert objects["PersistentVolumeClaim"] == ["claim-mia"]
    await stop(hub, "mia", "")


async def test_refusals_of_a_named_server_keep_its_own_options(hub):
    """noah (not in ml) asks for the GPU flavor, or the admins' one, on a named server:
    refused with the default server's sentences, nothing made, and that server's stored
    options stay the ones it last ran with; his default server's are not touched."""
    token = await member(hub, "noah")
    status, body = await call(hub, "POST", "/users/noah/servers/x",
                              {"profile": "gpu-a100", "gpus": "1"}, token)
    assert (status, body["message"]) == (403, NOT_YOURS), body
    assert (await servers(hub, "noah"))["x"].get("user_options", {}) == {}
    assert await namespace_objects(hub, user_namespace("noah", "kdash-")) == {}
    await start(hub, "noah", "x", {"profile": "cpu-small"}, token)
    await start(hub, "noah", "", {}, token)  # the default flavor
    await stop(hub, "noah", "x")
    for bad, code, sentence in (({"profile": "gpu-a100", "gpus": "1"}, 403, NOT_YOURS),
                                ({"profile": "admin-only"}, 403, NOT_ADMINS),
                                ({"profile": "nope"}, 400, None)):
        status, body = await call(hub, "POST", "/users/noah/servers/x", bad, token)
        assert status == code and (sentence is None or body["message"] == sentence), body
        models = await servers(hub, "noah")
        assert models["x"]["user_options"] == {"profile": "cpu-small"}, models["x"]
        assert models["x"]["state"]["kdash_last_refusal"] == body["message"]
        assert models[""]["ready"] and "kdash_last_refusal" not in models[""]["state"]
        assert set(await pods_of(hub, "noah")) == {""}
    # an admin's "Start server" of x (no options) starts what x last ran
    status, body = await call(hub, "POST", "/users/noah/servers/x")
    assert status in (201, 202), body
    for _ in range(int(START_TIMEOUT / 0.2)):
        if (await servers(hub, "noah"))["x"].get("ready"):
            break
        await asyncio.sleep(0.2)
    assert (await servers(hub, "noah"))["x"]["user_options"] == {"profile": "cpu-small"}
    await stop(hub, "noah", "x")
    await stop(hub, "noah", "")


@pytest.mark.browser
async def test_the_chooser_of_a_named_server_in_chromium(hub):
    """/hub/spawn/mia/lab2 shows the profiles as the default server's page does (free GPUs
    by their name, what can't be had disabled, idle timeouts), starts the chosen one, and
    a forced refusal is one sentence, keeping lab2's last profile preselected."""
    await member(hub, "mia")
    await member(hub, "noah")
    before = (await servers(hub, "mia")).get("", {}).get("user_options")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "mia")
            await page.goto(f"{hub.url}/hub/spawn/mia/lab2")
            await page.wait_for_selector("#kubespawner-profiles-list")
            text = await page.inner_text("#kubespawner-profiles-list")
            assert "2 NVIDIA A100s free now" in text and "nvidia.com" not in text, text
            assert "Admin debug" not in text
            disabled = await page.eval_on_selector_all(
                'input[name="profile-option-gpu-a100--gpus"]',
                "els => els.filter(i => i.disabled).map(i => i.value)")
            assert disabled == ["4"]
            assert await page.inner_text("#profile-idle-gpu-a100") == "Stopped after 30m idle"
            assert await page.inner_text("#profile-idle-cpu-small") == "Stopped after 2h idle"
            await page.click("#profile-item-cpu-small")
            await page.click("form input[type=submit], form button[type=submit]")
            await page.wait_for_url(f"{hub.url}/user/mia/lab2/**",
                                    timeout=(START_TIMEOUT + 60) * 1000)
            for _ in range(int(START_TIMEOUT / 0.2)):
                if (await servers(hub, "mia"))["lab2"].get("ready"):
                    break
                await asyncio.sleep(0.2)
            await stop(hub, "mia", "lab2")
            await page.goto(f"{hub.url}/hub/spawn/mia/lab2")
            assert await page.is_checked("#profile-item-cpu-small")
            await page.click("#profile-item-gpu-a100")
            await page.eval_on_selector(
                'input[name="profile-option-gpu-a100--gpus"][value="4"]',
                "i => { i.disabled = false; i.checked = true; }")
            await page.click("form input[type=submit], form button[type=submit]")
            error = await page.inner_text(".spawn-error-msg")
            assert error.strip() == f"Error: {TOO_MANY}", error
            assert await page.is_checked("#profile-item-cpu-small")
            assert (await servers(hub, "mia"))["lab2"]["user_options"] == {
                "profile": "cpu-small"}
            await page.close()

            # noah's named server page hides the GPU flavor, saying why; forcing it fails
            page = await login(browser, hub, "noah")
            await page.goto(f"{hub.url}/hub/spawn/noah/y")
            await page.wait_for_selector("#kdash-hidden-profiles")
            notes = await page.inner_text("#kdash-hidden-profiles")
            assert "GPU A100 is for the group ml." in notes, notes
            assert "GPU A100" not in await page.inner_text("#kubespawner-profiles-list")
            await page.eval_on_selector(
                "#profile-item-cpu-small", "i => { i.value = 'gpu-a100'; i.checked = true; }")
            await page.click("form input[type=submit], form button[type=submit]")
            error = await page.inner_text(".spawn-error-msg")
            assert error.strip() == f"Error: {NOT_YOURS}", error
            assert await pods_of(hub, "noah") == {}
        finally:
            await browser.close()
    assert (await servers(hub, "mia")).get("", {}).get("user_options") == before


def culler(hub, clock: ManualClock, **settings):
    """The culler with the rules the chart's config makes from the flavors (z2jh.py):
    each flavor's idle_timeout is its profile's rule."""
    settings = {"profile_rules": {"cpu-small": {"idle": 7200}, "gpu-a100": {"idle": 1800}},
                **settings}
    app = CullerApp(hub_api_url=hub.api_url, api_token=CULLER_TOKEN, retries=1,
                    backoff_base=0.01, opt_out_group="", default_rule={"idle": "never"},
                    known_profiles=["cpu-small", "gpu-a100", "admin-only"], **settings)
    return app.make_culler(clock=clock)


async def cull_once(hub, clock: ManualClock, **settings):
    """One culler cycle (its report); the culler's hub session closed after it."""
    c = culler(hub, clock, **settings)
    try:
        return await c.run_once()
    finally:
        await c.hub.close()


async def activity(hub, user: str, when: dict[str, datetime]) -> None:
    """Post activity for `user`'s servers, as their notebooks do."""
    body = {"servers": {name: {"last_activity": t.isoformat().replace("+00:00", "Z")}
                        for name, t in when.items()}}
    status, reply = await call(hub, "POST", f"/users/{user}/activity", body)
    assert status == 200, reply


async def test_the_culler_stops_one_named_server_by_its_own_rules(hub):
    """rosa's default server (CPU small, 2h idle) and “gpu” (GPU A100, 30m idle, a 2h
    lifetime): 40 minutes idle stops “gpu” only; then a named “gpu2”, active but past its
    lifetime, is stopped for that, and the default server, as idle, is kept."""
    token = await token_of(hub, "rosa")
    status, body = await call(hub, "POST", "/groups/ml/users", {"users": ["rosa"]})
    assert status == 200, body
    await start(hub, "rosa", "", {"profile": "cpu-small"}, token)
    await start(hub, "rosa", "gpu", {"profile": "gpu-a100", "gpus": "1"}, token)
    now = datetime.now(UTC)
    await activity(hub, "rosa", {"": now, "gpu": now})
    report = await cull_once(hub, ManualClock(now + timedelta(minutes=40)))
    mine = {d.server: d for d in report.decisions if d.user == "rosa"}
    assert (mine["gpu"].action, mine["gpu"].reason, mine["gpu"].profile) == (
        "cull", "idle", "gpu-a100")
    assert (mine[""].action, mine[""].reason, mine[""].profile) == (
        "keep", "within-limits", "cpu-small")
    for _ in range(300):
        models = await servers(hub, "rosa")
        if not models["gpu"].get("ready") and not models["gpu"].get("pending"):
            break
        await asyncio.sleep(0.2)
    assert models[""]["ready"] and "gpu" in models  # stopped, not removed
    assert set(await pods_of(hub, "rosa")) == {""}

    # lifetimes are per server: gpu2 has one, the default server none
    await start(hub, "rosa", "gpu2", {"profile": "gpu-a100", "gpus": "1", "lifetime": "1h"},
                token)
    status, life = await call(hub, "GET", "/kdash/lifetime/rosa/gpu2", token=token)
    assert status == 200 and life["lifetime_seconds"] == 3600, life
    status, reply = await call(hub, "GET", "/kdash/lifetime/rosa", token=token)
    assert status == 409, reply
    status, life = await call(hub, "POST", "/kdash/lifetime/rosa/gpu2", {"extend_by": "1h"},
                              token)
    assert status == 200 and life["lifetime_seconds"] == 7200, life
    deadline = datetime.fromisoformat(life["deadline"].replace("Z", "+00:00"))
    past = deadline + timedelta(seconds=1)
    await activity(hub, "rosa", {"gpu2": datetime.now(UTC)})
    clock = ManualClock(past)
    report = await cull_once(hub, clock, server_lifetimes=True,
                             profile_rules={"gpu-a100": {"idle": "never"},
                                            "cpu-small": {"idle": "never"}})
    mine = {d.server: d for d in report.decisions if d.user == "rosa"}
    assert (mine["gpu2"].action, mine["gpu2"].reason) == ("cull", "lifetime")
    assert mine["gpu2"].extra["deadline"] == deadline.isoformat()
    assert mine[""].action == "keep" and "deadline" not in mine[""].extra
    for _ in range(300):
        if set(await pods_of(hub, "rosa")) == {""}:
            break
        await asyncio.sleep(0.2)
    assert set(await pods_of(hub, "rosa")) == {""}
    await stop(hub, "rosa", "")


@pytest.mark.browser
async def test_the_hub_home_lists_each_server_with_its_profile(hub):
    """The hub home of a user with two running servers: each with its profile, the GPU one
    with its lifetime and an Extend that extends that server only."""
    token = await token_of(hub, "sami")
    status, body = await call(hub, "POST", "/groups/ml/users", {"users": ["sami"]})
    assert status == 200, body
    await start(hub, "sami", "", {"profile": "cpu-small"}, token)
    await start(hub, "sami", "default", {"profile": "gpu-a100", "gpus": "1",
                                         "lifetime": "1h"}, token)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 1000})
            await page.goto(f"{hub.url}/hub/login?next=/hub/home")
            await page.fill("input[name=username]", "sami")
            await page.fill("input[name=password]", "any")
            await page.click("input[type=submit], button[type=submit]")
            await page.wait_for_url(f"{hub.url}/hub/home")
            await page.wait_for_selector("#kdash-profiles")
            lines = await page.eval_on_selector_all(
                "#kdash-profiles .kdash-profile",
                "ps => ps.map(p => [p.dataset.server, p.dataset.profile, "
                "p.textContent.replace(/\\s+/g, ' ').trim()])")
            assert sorted(lines) == [
                ["", "cpu-small", "Your server runs CPU small."],
                ["default", "gpu-a100", "Your server “default” runs GPU A100."]], lines
            # only the server named “default” has a lifetime; its box has ids of its own
            boxes = await page.eval_on_selector_all(
                "#kdash-lifetimes .kdash-lifetime", "bs => bs.map(b => [b.id, b.dataset.server])")
            assert boxes == [["kdash-lifetime-server-default", "default"]], boxes
            await page.select_option("#kdash-extend-server-default", "1h")
            async with page.expect_navigation():
                await page.click("#kdash-lifetime-server-default button[type=submit]")
            status, life = await call(hub, "GET", "/kdash/lifetime/sami/default", token=token)
            assert life["lifetime_seconds"] == 7200, life
            # the hub's own list of named servers has it too
            await page.wait_for_selector("#kdash-lifetime-server-default")
            assert await page.locator("[data-server-name='default']").count() >= 1
        finally:
            await browser.close()
    await stop(hub, "sami", "default")
    await stop(hub, "sami", "")


async def test_an_ordinary_user_cannot_touch_another_users_named_server(hub):
    """eve, with her own token, against mia's named server “work”: start, stop, read,
    extend, reach it, rename or delete it: all refused, and it runs on, untouched."""
    mia = await member(hub, "mia")
    eve = await token_of(hub, "eve")
    await start(hub, "mia", "work", {"profile": "gpu-a100", "gpus": "1", "lifetime": "1h"},
                mia)
    pod = (await pods_of(hub, "mia"))["work"]
    for method, path, body in (
            ("POST", "/users/mia/servers/evil", {"profile": "cpu-small"}),
            ("POST", "/users/mia/servers/work", {"profile": "cpu-small"}),
            ("DELETE", "/users/mia/servers/work", None),
            ("DELETE", "/users/mia/servers/work", {"remove": True}),
            ("PATCH", "/users/mia/servers/work", {"name": "mine"}),
            ("GET", "/users/mia", None),
            ("GET", "/users/mia/servers/work/progress", None),
            ("GET", "/kdash/lifetime/mia/work", None),
            ("POST", "/kdash/lifetime/mia/work", {"extend_by": "1h"})):
        status, reply = await call(hub, method, path, body, eve)
        # renaming is JupyterHub 6's: 5.5 has no PATCH there at all (405)
        refused = (403, 404) if method != "PATCH" or JUPYTERHUB_MAJOR >= 6 else (405,)
        assert status in refused, (method, path, status, reply)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{hub.url}/user/mia/work/api/contents/",
                               headers={"Authorization": f"token {eve}"},
                               allow_redirects=False) as resp:
            assert resp.status in (302, 403, 404), resp.status
            assert "content" not in await resp.text()
    models = await servers(hub, "mia")
    assert models["work"]["ready"] and "evil" not in models
    assert (await pods_of(hub, "mia"))["work"]["metadata"]["uid"] == pod["metadata"]["uid"]
    status, life = await call(hub, "GET", "/kdash/lifetime/mia/work", token=mia)
    assert life["lifetime_seconds"] == 3600, life
    assert await namespace_objects(hub, user_namespace("eve", "kdash-")) == {}
    await stop(hub, "mia", "work")


async def test_server_names_made_to_collide_get_pods_of_their_own(hub):
    """eve's servers with names KubeSpawner-style slugs bring close: a name with '.', its
    escaped form, a case variant, one with '--' (JupyterHub 6 refuses such names itself,
    5.5 takes them), and (JupyterHub 6) a server renamed away from a name a new server then
    takes: all run at once, each in a pod of its own (kdash_hub.naming's injective names)."""
    eve = await token_of(hub, "eve")
    names = ["a-b", "ab"]
    crafted = ["a.b", "A.b", "a--b",
               user_object_name("jupyter", "eve", "a.b").removeprefix("jupyter-eve-")]
    if JUPYTERHUB_MAJOR >= 6:
        for name in crafted:
            status, body = await call(hub, "POST", f"/users/eve/servers/{name}", {}, eve)
            assert status == 400 and "Invalid server_name" in body["message"], body
        await start(hub, "eve", "old", {}, eve)
        await stop(hub, "eve", "old")
        status, body = await call(hub, "PATCH", "/users/eve/servers/old", {"name": "renamed"},
                                  eve)
        assert status == 200, body
        names += ["old", "renamed"]  # "renamed" would start in the pod named after "old"
    else:
        names += crafted
    for name in names:
        await start(hub, "eve", name, {}, eve)
    pods = await pods_of(hub, "eve")
    assert set(pods) == set(names)
    pod_names = [p["metadata"]["name"] for p in pods.values()]
    assert len(set(pod_names)) == len(names), pod_names
    for name in names:
        assert pods[name]["metadata"]["name"] == user_object_name("jupyter", "eve", name)
    for name in names:
        await stop(hub, "eve", name)


RWO_REFUSAL = ("Your home (claim-ursula) can be mounted on one node at a time (ReadWriteOnce) "
               "and your default server has it on node node-1, where GPU (RWO home) can't run "
               "(its node selector does not match that node): stop that server first, or ask "
               "an admin for home storage that allows ReadWriteMany.")


async def test_a_readwriteonce_home_keeps_a_users_servers_on_one_node(hub):
    """ursula's home is ReadWriteOnce: her servers carry the claim's pod affinity and share
    the node holding it; a GPU server that can't run there is refused at once, in one
    sentence, with nothing made; once the node is free of her home, it starts."""
    token = await member(hub, "ursula")
    await start(hub, "ursula", "", {"profile": "cpu-rwo"}, token)
    status, body = await call(hub, "POST", "/users/ursula/servers/gpu",
                              {"profile": "gpu-rwo", "gpus": "1"}, token)
    assert (status, body["message"]) == (409, RWO_REFUSAL), body
    assert (await servers(hub, "ursula"))["gpu"].get("user_options", {}) == {}
    assert set(await pods_of(hub, "ursula")) == {""}
    await start(hub, "ursula", "cpu2", {"profile": "cpu-rwo"}, token)
    pods = await pods_of(hub, "ursula")
    for pod in pods.values():
        assert pod["spec"]["nodeName"] == "node-1"
        assert pod["metadata"]["labels"]["kdash-hub.io/home-claim"] == "claim-ursula"
        [term] = pod["spec"]["affinity"]["podAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {"labelSelector": {"matchLabels": {
            "kdash-hub.io/home-claim": "claim-ursula"}}, "topologyKey": "kubernetes.io/hostname"}
    objects = await namespace_objects(hub, user_namespace("ursula", "kdash-"))
    assert objects["PersistentVolumeClaim"] == ["claim-ursula"]
    await stop(hub, "ursula", "")
    await stop(hub, "ursula", "cpu2")
    await start(hub, "ursula", "gpu", {"profile": "gpu-rwo", "gpus": "1"}, token)
    assert (await pods_of(hub, "ursula"))["gpu"]["spec"]["nodeName"] == "node-0"
    await stop(hub, "ursula", "gpu")
