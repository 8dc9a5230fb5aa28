"""Interfaces on a real JupyterHub (+ proxy) with KDashSpawner, a local cluster in process mode
and Chromium: the chooser offers a flavor's interfaces, the server opens on the chosen one
(default_url, through the hub's proxy) with jupyter-server-proxy entries for the others; an
interface the flavor doesn't offer is refused at once (400, one sentence, nothing created);
an unknown interface in the configuration stops the hub at start.

With code-server installed (`make demo` caches it, see kdash_hub/dev/codeserver.py), VS Code
is opened for real through the hub's proxy; without it that one test is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiohttp
import pytest
from playwright.async_api import async_playwright
from traitlets import TraitError

from kdash_hub.dev import codeserver
from kdash_hub.naming import user_namespace
from kdash_hub.spawner import interfaces
from kdash_hub.spawner.settings import KDashSettings
from tests.fixtures.spawner import flavor_hub
from tests.integration.test_chooser_hub import (
    call,
    default_server,
    login,
    namespace_objects,
    pod_of,
    stop,
    token_of,
)
from tests.integration.test_spawner_hub import CHROMIUM_ARGS, START_TIMEOUT, wait_ready

CODE_SERVER = codeserver.installed()
VSCODE = ({"name": "vscode", "command": [str(CODE_SERVER), *interfaces.KNOWN["vscode"].command[1:]]}
          if CODE_SERVER else "vscode")
FLAVORS = [
    {"slug": "cpu", "display_name": "CPU", "default": True, "cpu_limit": 1,
     "interfaces": ["lab", VSCODE]},
    {"slug": "r", "display_name": "R", "cpu_limit": 1, "interfaces": ["rstudio", "lab"]},
    {"slug": "plain", "display_name": "Plain", "cpu_limit": 1},
]
# z2jh's default (singleuser.cmd): KubeSpawner passes `args` only with a `cmd`
EXTRA = 'c.KDashSpawner.cmd = ["jupyterhub-singleuser"]\n'
NOT_OFFERED = "“{}” is not one of the Interface choices of {}; choose {}."


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with flavor_hub(tmp_path_factory.mktemp("kdash-interfaces-hub"), FLAVORS,
                    start_timeout=START_TIMEOUT, extra=EXTRA) as hub:
        yield hub


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}


async def get(hub, path: str, token: str, *, redirects: bool = False,
              limit: float = 30) -> tuple[int, str, str]:
    """(status, Location or final URL, body) of a request through the hub's proxy."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{hub.url}{path}", headers={"Authorization": f"token {token}"},
            allow_redirects=redirects, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
        where = str(resp.url) if redirects else resp.headers.get("Location", "")
        return resp.status, where, await resp.text()


def test_unknown_interfaces_are_a_config_error():
    for setting, words in [
        (["lab", "emacs"], ": unknown interface 'emacs'; known interfaces are lab, vscode, "
                           "rstudio"),
        ("vscode", " must be a list like [lab, vscode]"),
        (["vscode", "vscode"], ": vscode is listed twice"),
        ([{"name": "lab", "command": ["jupyter-lab"]}],
         ": lab is served by the notebook server itself and takes no command"),
        ([{"name": "vscode", "command": "code-server"}],
         ": the command of vscode must be a non-empty list of strings"),
        ([{"name": "vscode", "cmd": ["x"]}],
         ": unknown key(s) cmd (an entry is a name or {name, command})"),
    ]:
        with pytest.raises(TraitError) as info:
            KDashSettings(flavors=[{"slug": "cpu", "interfaces": setting}])
        assert str(info.value) == f"KDashSpawner.flavors: flavor cpu: interfaces{words}"
    assert KDashSettings(flavors=FLAVORS).flavors == FLAVORS


async def test_vscode_opens_the_server_on_it_with_the_others_in_the_launcher(hub):
    token = await token_of(hub, "vera")
    options = {"profile": "cpu", "interface": "vscode"}
    status, body = await call(hub, "POST", "/users/vera/server", options, token)
    assert status in (201, 202), body
    server = await wait_ready(hub, "vera")
    assert server["user_options"] == options
    pod = await pod_of(hub, "vera")
    assert env_of(pod)["JUPYTERHUB_DEFAULT_URL"] == "/vscode/"
    container = pod["spec"]["containers"][0]
    servers = interfaces.from_args([*container.get("command", []), *container.get("args", [])])
    assert servers == interfaces.proxy_servers(interfaces.of(FLAVORS[0]))
    assert list(servers) == ["vscode"] and servers["vscode"]["command"][1:5] == [
        "--auth", "none", "--bind-addr", "127.0.0.1:{port}"]
    # the server's root sends the user to VS Code, through the hub's proxy
    status, where, _ = await get(hub, "/user/vera/", token)
    assert (status, where.rstrip("?")) == (302, "/user/vera/vscode/"), (status, where)
    # jupyter-server-proxy in the server has the entry JupyterLab's launcher shows
    status, _, text = await get(hub, "/user/vera/server-proxy/servers-info", token)
    assert status == 200, text
    info = {s["name"]: s for s in json.loads(text)["server_processes"]}
    assert set(info) == {"vscode"}
    assert info["vscode"]["launcher_entry"]["enabled"] is True
    assert info["vscode"]["launcher_entry"]["title"] == "VS Code"
    # VS Code's path is the server's: nobody else gets through, logged in or not
    async with aiohttp.ClientSession() as session, session.get(
            f"{hub.url}/user/vera/vscode/", allow_redirects=False) as resp:
        assert resp.status == 302 and "/hub/" in resp.headers["Location"], resp.status
    status, _, _ = await get(hub, "/user/vera/vscode/", await token_of(hub, "mallory"))
    assert status == 403, status
    # and JupyterLab stays where it is
    status, _, _ = await get(hub, "/user/vera/lab", token)
    assert status in (200, 404)  # 404: this environment has no JupyterLab (the z2jh venv)
    await stop(hub, "vera")
    # the default interface is the flavor's first one
    status, body = await call(hub, "POST", "/users/vera/server", {"profile": "cpu"}, token)
    assert status in (201, 202), body
    await wait_ready(hub, "vera")
    assert env_of(await pod_of(hub, "vera"))["JUPYTERHUB_DEFAULT_URL"] == "/lab"
    await stop(hub, "vera")


async def test_a_flavor_without_interfaces_does_not_inherit_the_last_ones(hub):
    """KubeSpawner keeps the spawner object between starts: VS Code's default_url and proxy
    argument must not stay for the next start of a flavor without interfaces."""
    token = await token_of(hub, "paul")
    for options in ({"profile": "cpu", "interface": "vscode"}, {"profile": "plain"}):
        status, body = await call(hub, "POST", "/users/paul/server", options, token)
        assert status in (201, 202), body
        await wait_ready(hub, "paul")
        pod = await pod_of(hub, "paul")
        await stop(hub, "paul")
    container = pod["spec"]["containers"][0]
    assert "JUPYTERHUB_DEFAULT_URL" not in env_of(pod)
    assert interfaces.from_args([*container.get("command", []),
                                 *container.get("args", [])]) is None


async def test_rstudio_flavor_is_configured_up_to_the_proxy_entry(hub):
    """rserver is not installable here: the server opens on /rstudio/ and jupyter-server-proxy
    has the entry; RStudio itself needs an image that carries it (rocker)."""
    token = await token_of(hub, "rita")
    status, body = await call(hub, "POST", "/users/rita/server", {"profile": "r"}, token)
    assert status in (201, 202), body
    server = await wait_ready(hub, "rita")
    pod = await pod_of(hub, "rita")
    assert env_of(pod)["JUPYTERHUB_DEFAULT_URL"] == "/rstudio/"
    assert server["url"] == "/user/rita/"
    status, _, text = await get(hub, "/user/rita/server-proxy/servers-info", token)
    assert status == 200, text
    names = [s["name"] for s in json.loads(text)["server_processes"]]
    assert names == ["rstudio"]
    await stop(hub, "rita")


async def test_an_interface_the_flavor_does_not_offer_is_refused_and_nothing_is_created(hub):
    token = await token_of(hub, "ivo")
    for options, sentence in [
        ({"profile": "cpu", "interface": "rstudio"},
         NOT_OFFERED.format("rstudio", "CPU", "JupyterLab or VS Code")),
        ({"profile": "r", "interface": "vscode"},
         NOT_OFFERED.format("vscode", "R", "RStudio or JupyterLab")),
        ({"profile": "cpu", "interface": "/../../hub/admin"},
         NOT_OFFERED.format("/../../hub/admin", "CPU", "JupyterLab or VS Code")),
        ({"profile": "cpu", "interface": "VSCODE"},
         NOT_OFFERED.format("VSCODE", "CPU", "JupyterLab or VS Code")),
        # a flavor with no interfaces: not ignored, as KubeSpawner would an unknown option
        ({"profile": "plain", "interface": "vscode"},
         "Plain offers no choice of interface; start it without one."),
    ]:
        status, body = await call(hub, "POST", "/users/ivo/server", options, token)
        assert (status, body.get("message")) == (400, sentence), (options, body)
        assert await namespace_objects(hub, user_namespace("ivo", "kdash-")) == {}, options
    assert (await default_server(hub, "ivo")).get("user_options", {}) == {}


@pytest.mark.browser
async def test_the_chooser_offers_the_flavors_interfaces_and_opens_the_chosen_one(hub):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium")
                                          or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "wim")
            await page.goto(f"{hub.url}/hub/spawn")
            field = "#profile-option-cpu--interface"
            await page.wait_for_selector(field)
            labels = await page.eval_on_selector_all(
                f"{field} label", "els => els.map(e => e.textContent.trim())")
            assert labels == ["JupyterLab", "VS Code"]
            assert await page.is_checked(f"{field}--1")  # the flavor's first: JupyterLab
            r_labels = await page.eval_on_selector_all(
                "#profile-option-r--interface label", "els => els.map(e => e.textContent.trim())")
            assert r_labels == ["RStudio", "JupyterLab"]
            assert await page.query_selector("#profile-option-plain--interface") is None
            await page.click('label[for="profile-option-cpu--interface--2"]')  # VS Code
            await page.click("form input[type=submit], form button[type=submit]")
            await page.wait_for_url(f"{hub.url}/user/wim/vscode/**",
                                    timeout=(START_TIMEOUT + 60) * 1000)
            server = await wait_ready(hub, "wim")
            assert server["user_options"]["interface"] == "vscode"
            await stop(hub, "wim")
            # the next form preselects VS Code
            await page.goto(f"{hub.url}/hub/spawn")
            await page.wait_for_selector(field)
            assert await page.is_checked(f"{field}--2")
        finally:
            await browser.close()


@pytest.mark.skipif(CODE_SERVER is None, reason=(
    "code-server is not installed on this machine (`make demo` caches it under "
    f"{codeserver.cache_dir()}; CI does not install it: a large npm install). Only this "
    "end-to-end run of VS Code is skipped; its configuration is tested above."))
async def test_vscode_runs_for_real_through_the_hubs_proxy(hub):
    token = await token_of(hub, "cody")
    status, body = await call(hub, "POST", "/users/cody/server",
                              {"profile": "cpu", "interface": "vscode"}, token)
    assert status in (201, 202), body
    await wait_ready(hub, "cody")
    # jupyter-server-proxy starts code-server on the first request (it may take a while on a
    # loaded machine: the entry's timeout)
    deadline = time.monotonic() + 180
    while True:
        status, where, text = await get(hub, "/user/cody/", token, redirects=True, limit=120)
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert status == 200, (status, text[:500])
    assert where.startswith(f"{hub.url}/user/cody/vscode/"), where
    assert "vscode-workbench" in text or "code-server" in text, text[:500]
    # without the hub login the proxy does not let anyone through
    async with aiohttp.ClientSession() as session, session.get(
            f"{hub.url}/user/cody/vscode/", allow_redirects=False) as resp:
        assert resp.status in (302, 401, 403), resp.status
        assert "/hub/" in resp.headers.get("Location", "/hub/")
    await stop(hub, "cody")
