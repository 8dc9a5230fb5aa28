"""The launcher's web UI in headless Chromium: hub login, list, new form, launch, details."""

import json
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

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
            # the form is made from the template's variables
            assert await form.locator("select[name=var_VERSION] option").count() == 3
            assert await form.locator("input[name=var_POSTGRES_PASSWORD]").get_attribute(
                "type") == "password"
            await page.fill("#name", "Bad Name!")
            await page.evaluate("document.getElementById('name').removeAttribute('pattern')")
            await page.click("#launch")
            assert "name:" in await page.text_content("#error")  # 400 shown in the form
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
