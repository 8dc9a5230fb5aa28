"""The notebook server's lifetime in the launcher's pages: a real hub + proxy with
KDashSpawner and the pack's lifetime API (process kubelet on a local cluster), the real
launcher as a hub-managed service (`hubconfig.launcher_service`, whose OAuth client may read
and extend its users' own servers), and headless Chromium.

The launcher's page shows the signed-in user's own running servers' deadlines, time left and
an extend form; the extension goes through the hub, which keeps the bound. A user sees
only their own lifetime, whatever they send; the page carries no inline script.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from tests.fixtures.launcher import LAUNCHER_PATH, SINGLE_TEMPLATE, _launcher_config
from tests.fixtures.spawner import flavor_hub
from tests.integration.test_chooser_hub import call, stop, token_of
from tests.integration.test_one_look import browser_path, launcher_token, login, open_launcher
from tests.integration.test_spawner_hub import CHROMIUM_ARGS, START_TIMEOUT, wait_ready

OWNER, OTHER, NOBODY = "lena", "otto", "nils"
FLAVORS = [
    {"slug": "timed", "display_name": "Timed", "default": True, "cpu_limit": 1,
     "lifetime": {"min": "1h", "default": "2h", "max": "4h", "choices": ["1h", "2h", "4h"]}},
    {"slug": "plain", "display_name": "Plain", "cpu_limit": 1},
]


def _extra(launcher_port: int, launcher_config: Path) -> str:
    return f'''
from kdash_hub.spawner import lifetime_api
from kdash_hub.services.launcher.hubconfig import launcher_roles, launcher_service
lifetime_api.install(c)
c.JupyterHub.services.append(
    launcher_service(port={launcher_port}, config_file={str(launcher_config)!r}))
c.JupyterHub.load_roles.extend(launcher_roles())
c.Authenticator.admin_users = {{"ada"}}
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from kdash_hub.dev.ports import free_port

    workdir = tmp_path_factory.mktemp("kdash-launcher-lifetime")
    templates = workdir / "templates"
    templates.mkdir()
    (templates / "single.yaml").write_text(SINGLE_TEMPLATE)
    launcher_config = workdir / "launcher_config.py"

    async def write_launcher_config(hub) -> None:
        launcher_config.write_text(_launcher_config(
            workdir / "kubeconfig", templates, hub.url, secrets.token_hex(32)))

    with flavor_hub(workdir, FLAVORS, start_timeout=START_TIMEOUT,
                    extra=_extra(free_port(), launcher_config),
                    before_start=write_launcher_config) as hub:
        yield hub


async def start(hub, user: str, lifetime: str, profile: str = "timed") -> None:
    token = await token_of(hub, user)
    status, body = await call(hub, "POST", f"/users/{user}/server",
                              {"profile": profile, "lifetime": lifetime} if lifetime
                              else {"profile": profile}, token)
    assert status in (201, 202), body
    await wait_ready(hub, user)


async def hub_lifetime(hub, user: str) -> dict:
    status, life = await call(hub, "GET", f"/kdash/lifetime/{user}")
    assert status == 200, life
    return life


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.browser
async def test_the_launcher_shows_and_extends_only_the_users_own_lifetime(hub):
    await launcher_token(hub, OWNER)  # the launcher is up
    await start(hub, OWNER, "1h")
    await start(hub, OTHER, "4h")
    mine, theirs = await hub_lifetime(hub, OWNER), await hub_lifetime(hub, OTHER)
    assert mine["deadline"] != theirs["deadline"]
    box = "#server-lifetime-default"
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=browser_path(),
                                              args=CHROMIUM_ARGS)
            try:
                scripts: list[str] = []
                page = await login(browser, hub, OWNER)
                page.on("console", lambda m: scripts.append(m.text)
                        if "Content Security Policy" in m.text else None)
                # whatever the query names, the page shows the signed-in user's own server
                response = await open_launcher(page, hub, f"?user={OTHER}&all=1")
                assert "script-src 'self'" in response.headers["content-security-policy"]
                assert "<script>" not in await page.content()  # nothing inline
                text = " ".join((await page.inner_text(box)).split())
                assert text.startswith("Your server stops at ") and "(in " in text, text
                assert await page.get_attribute(f"{box} time", "datetime") == mine["deadline"]
                assert theirs["deadline"] not in await page.content()
                assert await page.locator(".server-lifetime").count() == 1
                options = await page.eval_on_selector_all(
                    f"{box} select option", "os => os.map(o => o.value)")
                assert options == mine["extend_choices"] == ["15m", "1h", "3h"]

                # extend by 1h through the launcher: the hub's deadline moves by 1h
                await page.select_option("#extend-default", "1h")
                async with page.expect_navigation():
                    await page.click(f"{box} form button[type=submit]")
                assert "now stops at" in await page.inner_text("#message")
                later = await hub_lifetime(hub, OWNER)
                assert parse(later["deadline"]) - parse(mine["deadline"]) == timedelta(hours=1)
                assert await page.get_attribute(f"{box} time", "datetime") == later["deadline"]
                # beyond the bound: the hub's sentence, nothing changed
                await page.eval_on_selector("#extend-default", "s => { s.options[0].value = "
                                                               "'9h'; s.selectedIndex = 0; }")
                async with page.expect_navigation():
                    await page.click(f"{box} form button[type=submit]")
                message = await page.inner_text("#message")
                assert "servers live at most 4h from their start" in message, message
                assert (await hub_lifetime(hub, OWNER))["deadline"] == later["deadline"]
                # the rest of it: then no form, the longest lifetime reached
                await page.select_option("#extend-default", "2h")
                async with page.expect_navigation():
                    await page.click(f"{box} form button[type=submit]")
                text = " ".join((await page.inner_text(box)).split())
                assert "It has reached its longest lifetime." in text, text
                assert await page.locator(f"{box} form").count() == 0
                assert scripts == []
                # the login cookie alone, without the form's _xsrf (another site's form):
                # refused before the hub is asked
                forged = await page.request.post(
                    hub.url + LAUNCHER_PATH + "server-lifetime",
                    form={"server": "", "by": "15m"}, max_redirects=0)
                assert forged.status == 403, forged.status

                # the other user sees theirs; a user without a server sees none
                other = await login(browser, hub, OTHER)
                await open_launcher(other, hub)
                assert await other.get_attribute(f"{box} time", "datetime") == \
                    theirs["deadline"]
                nobody = await login(browser, hub, NOBODY)
                await open_launcher(nobody, hub)
                assert await nobody.locator("#server-lifetimes").count() == 0
            finally:
                await browser.close()
    finally:
        for user in (OWNER, OTHER):
            await stop(hub, user)


async def test_the_extend_route_acts_only_on_the_callers_own_servers(hub):
    """With a hub API token (no cookie, no xsrf involved) the route refuses non-users, and
    a server name can only ever be one of the caller's own: the hub path names the caller."""
    intruder = await launcher_token(hub, "mallory")
    await start(hub, OWNER, "1h")
    try:
        before = await hub_lifetime(hub, OWNER)
        async with aiohttp.ClientSession() as session:
            for server in ("", "..", ".", f"../{OWNER}", OWNER):
                async with session.post(
                        hub.url + LAUNCHER_PATH + "server-lifetime",
                        data={"server": server, "by": "1h"}, allow_redirects=False,
                        headers={"Authorization": f"token {intruder}"}) as resp:
                    assert resp.status in (303, 403), (server, resp.status)
        assert (await hub_lifetime(hub, OWNER))["deadline"] == before["deadline"]
    finally:
        await stop(hub, OWNER)
