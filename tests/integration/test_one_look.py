"""One look: the launcher's pages wear the hub's navbar and theme, the hub's home lists the
running profile and the user's side services, services have human names. Real hub + proxy
with KDashSpawner (process kubelet on a local cluster), the pack's hub templates, the real
launcher as a hub-managed service, and headless Chromium.

Whether the Admin link shows comes from the hub's answer about the signed-in user only:
nothing the user sends (query, cookies, headers) makes it appear.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE, DISPLAY_NAME
from tests.fixtures.launcher import LAUNCHER_PATH, SINGLE_TEMPLATE, _launcher_config
from tests.fixtures.polling import eventually
from tests.fixtures.spawner import flavor_hub
from tests.integration.test_chooser_hub import call, stop
from tests.integration.test_spawner_hub import CHROMIUM_ARGS, START_TIMEOUT, wait_ready

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
ADMIN, USER = "ada", "uma"
FLAVORS = [
    {"slug": "small", "display_name": "Small notebook (1 core)", "default": True,
     "cpu_limit": 1, "lifetime": {"min": "1h", "default": "2h", "max": "4h",
                                  "choices": ["1h", "2h", "4h"]}},
    {"slug": "other", "display_name": "Other", "cpu_limit": 1},
]


def _extra(launcher_port: int, launcher_config: Path) -> str:
    return f'''
from kdash_hub.spawner import lifetime_api
from kdash_hub.services.launcher.hubconfig import launcher_roles, launcher_service
lifetime_api.install(c)
c.JupyterHub.services.append(
    launcher_service(port={launcher_port}, config_file={str(launcher_config)!r}))
c.JupyterHub.load_roles.extend(launcher_roles())
c.Authenticator.admin_users = {{{ADMIN!r}}}
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from kdash_hub.dev.ports import free_port

    workdir = tmp_path_factory.mktemp("kdash-one-look")
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


async def launcher_api(hub, method: str, path: str, token: str, body=None):
    async with aiohttp.ClientSession() as session, session.request(
            method, hub.url + LAUNCHER_PATH + "api/" + path, json=body,
            headers={"Authorization": f"token {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def launcher_token(hub, name: str) -> str:
    if (await call(hub, "GET", f"/users/{name}"))[0] == 404:
        assert (await call(hub, "POST", f"/users/{name}"))[0] == 201
    status, body = await call(hub, "POST", f"/users/{name}/tokens",
                              {"scopes": [ACCESS_SCOPE], "note": "one-look test"})
    assert status == 201, body
    token = body["token"]

    async def answers() -> bool:  # the launcher is started by the hub: wait for it
        try:
            return (await launcher_api(hub, "GET", "whoami", token))[0] == 200
        except aiohttp.ClientError:
            return False

    await eventually(answers, "the launcher answering", within=60)
    return token


async def login(browser, hub, name: str, **context_options):
    context = await browser.new_context(viewport={"width": 1200, "height": 900},
                                        **context_options)
    page = await context.new_page()
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", "any")
    await page.click("input[type=submit], button[type=submit]")
    # the hub's home, or the running server (the hub sends a user with one there)
    await page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


async def open_launcher(page, hub, path: str = ""):
    response = await page.goto(hub.url + LAUNCHER_PATH + path)
    await page.wait_for_selector("#launcher")
    return response


def browser_path() -> str:
    return shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.browser
async def test_admin_link_only_for_admins_whatever_a_user_sends(hub):
    await launcher_token(hub, USER)  # the launcher is up
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=browser_path(), args=CHROMIUM_ARGS)
        try:
            admin = await login(browser, hub, ADMIN)
            await open_launcher(admin, hub)
            # the hub's navbar: Home, Token, Admin, Services, the user, Logout
            for link, href in (("#nav-home", "/hub/home"), ("#nav-token", "/hub/token"),
                               ("#nav-admin", "/hub/admin"), ("#logout", "/hub/logout")):
                assert await admin.get_attribute(link, "href") == href, link
            assert await admin.text_content("#whoami") == ADMIN
            await admin.click("#nav-services")  # Bootstrap (the hub's) opens the dropdown
            await admin.wait_for_selector("#nav-launcher", state="visible")
            assert await admin.text_content("#nav-launcher") == DISPLAY_NAME
            ARTIFACTS.mkdir(exist_ok=True)
            await admin.screenshot(path=str(ARTIFACTS / "one-look-launcher-admin.png"))
            await admin.click("#nav-admin")
            await admin.wait_for_url(f"{hub.url}/hub/admin**")

            user = await login(browser, hub, USER)
            # what a user controls: the query, cookies, headers, their own records
            await user.context.add_cookies([
                {"name": n, "value": "1", "url": hub.url + LAUNCHER_PATH}
                for n in ("admin", "is_admin", "kdash-admin")])
            await user.set_extra_http_headers({
                "X-Forwarded-User": ADMIN, "Remote-User": ADMIN, "X-Admin": "true"})
            for path in ("", "?admin=1&is_admin=true&user=ada", "kubeconfig?admin=1",
                         "new", "instances/ada/nope?admin=1"):
                await user.goto(hub.url + LAUNCHER_PATH + path)
                await user.wait_for_selector("#navbar")
                assert await user.locator("#nav-admin").count() == 0, path
                assert await user.locator("a[href='/hub/admin']").count() == 0, path
                assert await user.text_content("#whoami") == USER, path
                assert await user.get_attribute("#nav-token", "href") == "/hub/token"
            await user.screenshot(path=str(ARTIFACTS / "one-look-launcher-user.png"))
            # and the hub agrees: its admin page is not theirs
            await user.set_extra_http_headers({})
            response = await user.goto(f"{hub.url}/hub/admin")
            assert response is not None and response.status == 403
        finally:
            await browser.close()


async def theme(page) -> tuple[str, str]:
    return (await page.get_attribute("html", "data-bs-theme") or "",
            await page.evaluate("getComputedStyle(document.body).backgroundColor"))


def is_dark(rgb: str) -> bool:
    values = [int(v) for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
    return sum(values) < 3 * 100


@pytest.mark.browser
async def test_dark_mode_follows_the_system_and_the_hubs_toggle(hub):
    await launcher_token(hub, USER)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=browser_path(), args=CHROMIUM_ARGS)
        try:
            dark = await login(browser, hub, USER, color_scheme="dark")
            await open_launcher(dark, hub)
            attribute, background = await theme(dark)
            assert attribute == "dark" and is_dark(background), (attribute, background)
            await dark.screenshot(path=str(ARTIFACTS / "one-look-launcher-dark.png"))
            await open_launcher(dark, hub, "kubeconfig")
            assert (await theme(dark))[0] == "dark"

            light = await login(browser, hub, USER, color_scheme="light")
            await open_launcher(light, hub)
            attribute, background = await theme(light)
            assert attribute == "light" and not is_dark(background), (attribute, background)
            # the hub's toggle, here; the choice is the hub's too (same stored preference)
            await light.click("#dark-theme-toggle")
            assert (await theme(light))[0] == "dark"
            await light.goto(f"{hub.url}/hub/home")
            await light.wait_for_selector("#dark-theme-toggle")
            assert (await theme(light))[0] == "dark"
            await light.click("#dark-theme-toggle")  # back, from the hub's page
            await open_launcher(light, hub)
            assert (await theme(light))[0] == "light"
        finally:
            await browser.close()


@pytest.mark.browser
async def test_hub_home_lists_the_running_profile_and_side_services(hub):
    token = await launcher_token(hub, USER)
    status, instance = await launcher_api(hub, "POST", "instances", token,
                                          {"template": "single", "name": "notes-db"})
    assert status == 201, instance
    admin_token = await launcher_token(hub, ADMIN)
    status, body = await call(hub, "POST", f"/users/{USER}/server", {"profile": "small"})
    assert status in (201, 202), body
    await wait_ready(hub, USER)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=browser_path(),
                                              args=CHROMIUM_ARGS)
            try:
                page = await login(browser, hub, USER, color_scheme="dark")
                await page.goto(f"{hub.url}/hub/home")
                profile = page.locator("#kdash-profiles .kdash-profile")
                await profile.wait_for()
                assert await profile.get_attribute("data-profile") == "small"
                assert await page.text_content("#kdash-profiles .kdash-profile-name") == \
                    "Small notebook (1 core)"
                assert await page.locator("#kdash-lifetime-default").count() == 1  # still there
                # the side services, in the launcher's frame, with the user's own login
                frame = page.frame_locator("#kdash-side-services")
                row = frame.locator("#instances tr[data-name='notes-db']")
                await row.wait_for()
                assert "Single" in await row.inner_text()
                assert await frame.locator("html").get_attribute("data-bs-theme") == "dark"

                async def sized() -> bool:  # hub-home.js fits the frame to its content
                    box = await page.locator("#kdash-side-services").bounding_box()
                    return box is not None and box["height"] >= 80
                await eventually(sized, "the frame sized to its content", within=15)
                # the Services menu says the human name
                await page.click("#thenavbar .dropdown-toggle")
                item = page.locator("#thenavbar a.dropdown-item[data-service='kdash-launcher']")
                await item.wait_for(state="visible")
                assert (await item.text_content()).strip() == DISPLAY_NAME
                await page.keyboard.press("Escape")
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "one-look-hub-home.png"),
                                      full_page=True)
                # its link opens the instance in the whole window
                await row.locator("a").first.click()
                await page.wait_for_url(f"**{LAUNCHER_PATH}instances/{USER}/notes-db")
                await page.wait_for_selector("#instance-name")

                # an admin's home lists their own services, not everyone's
                admin = await login(browser, hub, ADMIN)
                await admin.goto(f"{hub.url}/hub/home")
                admin_frame = admin.frame_locator("#kdash-side-services")
                await admin_frame.locator("#empty").wait_for()
                assert await admin_frame.locator("tr[data-name='notes-db']").count() == 0
                assert await admin.locator("#kdash-profiles").count() == 0  # no server
            finally:
                await browser.close()
    finally:
        await stop(hub, USER)
        await launcher_api(hub, "DELETE", f"instances/{USER}/notes-db", token)
    assert admin_token  # the admin's launcher token: the launcher knew them


async def test_the_frame_page_is_the_callers_own_whatever_they_ask_and_keeps_the_csp(hub):
    token = await launcher_token(hub, USER)
    admin_token = await launcher_token(hub, ADMIN)
    status, body = await launcher_api(hub, "POST", "instances", admin_token,
                                      {"template": "single", "name": "ada-db"})
    assert status == 201, body
    frame = hub.url + LAUNCHER_PATH + "embed/home"
    try:
        async with aiohttp.ClientSession() as session:
            # what a user could ask for: everyone's, someone else's
            for query in ("", "?all=1", "?owner=ada&user=ada&all=1"):
                async with session.get(frame + query,
                                       headers={"Authorization": f"token {token}"}) as resp:
                    assert resp.status == 200, query
                    csp = resp.headers["Content-Security-Policy"]
                    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp
                    text = await resp.text()
                assert "ada-db" not in text, query
                assert "<script>" not in text  # nothing inline: the script is a file
            async with session.get(frame + "?all=1",
                                   headers={"Authorization": f"token {admin_token}"}) as resp:
                assert "ada-db" in await resp.text()  # the admin's own, shown to them
            async with session.get(frame, allow_redirects=False) as resp:
                assert resp.status == 302  # no login: the hub's OAuth, as every page
    finally:
        await launcher_api(hub, "DELETE", f"instances/{ADMIN}/ada-db", admin_token)
