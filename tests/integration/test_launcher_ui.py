"""The launcher's web UI in headless Chromium: hub login, list, new form, launch, details."""

import json
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.fixtures.launcher import PASSWORD

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
async def test_list_new_form_launch_details(launcher_env, echo_server):
    env = launcher_env
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            await page.goto(env.url)  # -> hub login -> OAuth -> back to the launcher
            await page.fill("input[name=username]", "erin")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launcher")
            assert await page.text_content("#whoami") == "erin"
            assert "No services yet" in await page.text_content("#empty")
            # the hub's own stylesheet is used
            assert await page.locator("link[href='/hub/static/css/style.min.css']").count() == 1

            await page.click("#new")
            await page.wait_for_selector("#catalog")
            await page.click("#template-postgresql")
            form = page.locator("#launch-form")
            # the form is made from the template's variables (count() does not wait for it)
            await expect(form.locator("select[name=var_VERSION] option")).to_have_count(3)
            assert await form.locator("input[name=var_POSTGRES_PASSWORD]").get_attribute(
                "type") == "password"
            await page.fill("#name", "Bad Name!")
            await page.evaluate("document.getElementById('name').removeAttribute('pattern')")
            await page.click("#launch")
            await expect(page.locator("#error")).to_contain_text("name:")  # the 400, in the form
            await page.fill("#name", "analytics")
            await page.fill("input[name=var_POSTGRES_DB]", "sales: {drop: yes}")
            await page.select_option("select[name=var_VERSION]", "16")
            await page.fill("#ttl", "3h")
            await page.click("#launch")

            await page.wait_for_selector("#instance-name")
            assert "/instances/erin/analytics" in page.url
            assert "analytics" in await page.text_content("#instance-name")
            summary = await page.text_content("#summary")
            assert "sales: {drop: yes}" in summary and "16" in summary
            for _ in range(50):  # the local cluster makes it ready within a second or two
                if await page.text_content("#status") == "ready":
                    break
                await page.wait_for_timeout(200)
                await page.reload()
            assert await page.text_content("#status") == "ready"
            assert await page.locator("#events tr").count() > 1
            assert await page.text_content("#address") == "analytics.kdash-erin.svc:5432"
            (REPO / "artifacts").mkdir(exist_ok=True)
            await page.screenshot(path=str(REPO / "artifacts" / "launcher-details.png"),
                                  full_page=True)

            await page.click("#stop")
            await page.wait_for_selector("#start")
            assert await page.text_content("#status") == "stopped"
            await page.click("#start")
            await page.wait_for_selector("#stop")

            status, _ = await env.call("POST", "instances", "erin", json_body={
                "template": "echo", "name": "notebook-api", "values": {"PORT": echo_server.port}})
            assert status == 201
            await echo_server.serve_pod(env, "erin", "notebook-api")
            # the browser reaches it through the proxy with its hub login (OAuth cookie)
            await page.goto(env.url + "proxy/erin/notebook-api/hello?from=browser")
            seen = json.loads(await page.text_content("body"))
            assert seen["path"] == "/hello?from=browser"
            assert seen["headers"]["X-Forwarded-User"] == "erin"
            assert "jupyterhub" not in seen["headers"].get("Cookie", "")
            await page.goto(env.url)
            await page.wait_for_selector("#instances")
            names = await page.locator("#instances tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.name)")
            assert names == ["analytics", "notebook-api"]
            artifacts = REPO / "artifacts"
            artifacts.mkdir(exist_ok=True)
            await page.screenshot(path=str(artifacts / "launcher.png"), full_page=True)

            page.on("dialog", lambda dialog: dialog.accept())
            await page.goto(env.url + "instances/erin/analytics")
            await page.click("#delete")
            await page.wait_for_selector("#launcher")
            assert "deleted analytics" in await page.content()
            # another user's instance page is a 404 in the UI too
            await page.goto(env.url + "instances/alice/anything")
            assert "404" in await page.text_content("#error")
        finally:
            await browser.close()
    assert (await env.call("DELETE", "instances/erin/notebook-api", "erin"))[0] == 204


async def _login(browser, env, user: str):
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(env.url)
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("#login_submit")
    await page.wait_for_selector("#launcher")
    return page


@pytest.mark.browser
async def test_connection_password_revealed_to_the_owner_and_extend_cap(launcher_env,
                                                                       launcher_kube):
    import base64

    env = launcher_env
    status, inst = await env.call("POST", "instances", "bob", json_body={
        "template": "postgresql", "name": "ui-db", "ttl": "1h",
        "values": {"POSTGRES_USER": "analyst"}})
    assert status == 201, inst
    secret = await launcher_kube.get("Secret", "ui-db", "kdash-bob")
    password = base64.b64decode(secret["data"]["POSTGRES_PASSWORD"]).decode()
    details = env.url + "instances/bob/ui-db"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await _login(browser, env, "bob")
            assert password not in await page.content()  # the list never has it
            await page.goto(details)
            assert await page.text_content("#conn-host") == "ui-db"
            assert await page.text_content("#conn-port") == "5432"
            assert await page.text_content("#conn-user") == "analyst"
            assert await page.locator("#conn-password").count() == 0
            assert password not in await page.content()  # not in the page by default
            await page.click("#reveal-password")
            await page.wait_for_selector("#conn-password")
            assert await page.text_content("#conn-password") == password
            (REPO / "artifacts").mkdir(exist_ok=True)
            await page.screenshot(path=str(REPO / "artifacts" / "launcher-connection.png"),
                                  full_page=True)
            # the reveal is a POST with the form's _xsrf: without it, nothing
            resp = await page.request.post(details + "/connection", form={"x": "1"})
            assert resp.status == 403 and password not in await resp.text()

            # extend: to the cap, said plainly; then refused at the cap
            status, _ = await env.call("POST", "instances/bob/ui-db/extend", "bob",
                                       json_body={"by": "6d22h"})
            assert status == 200
            await page.goto(details)
            await page.select_option("select[name=by]", "4h")
            await page.click("#extend")
            await page.wait_for_selector(".alert-info")
            text = await page.text_content(".alert-info")
            assert text.startswith("extended to the cap: this instance can live until "), text
            assert text.endswith(", the most allowed") and "extend done" not in text
            await page.click("#extend")
            await page.wait_for_selector(".alert-info")
            text = await page.text_content(".alert-info")
            assert "is already at the cap: it can live until" in text, text

            # another user: the page is a 404, and a forged POST with her own valid
            # _xsrf gets no password
            other = await _login(browser, env, "alice")
            await other.goto(details)
            assert "404" in await other.text_content("#error")
            await other.goto(env.url + "new/echo")
            xsrf = await other.locator("input[name=_xsrf]").first.get_attribute("value")
            for target in (details, env.url + "instances/bob/ui-DB",
                           env.url + "instances/alice/ui-db"):
                resp = await other.request.post(target + "/connection", form={"_xsrf": xsrf})
                assert resp.status == 404, (target, resp.status)
                assert password not in await resp.text()
        finally:
            await browser.close()
    assert (await env.call("DELETE", "instances/bob/ui-db", "bob"))[0] == 204
