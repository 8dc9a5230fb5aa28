"""Finding 2 (high): stored XSS against admins.

The details page put the instance name inside an inline `onsubmit="return confirm(...)"`,
and the name came from a record annotation the user controls: an admin who opened the page
and clicked Delete ran the user's script on the hub's origin (where it can mint tokens).

Replayed in Chromium with every piece of user-written text an admin's pages show: the old
annotation, variable values, an Event the user wrote, a tampered record's claimed owner, a
message in the URL. No script of theirs may run (a `window.__pwned` marker and any dialog
but the Delete confirmation), and every launcher page carries a strict CSP.
"""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from tests.fixtures.launcher import PASSWORD
from tests.fixtures.security import ADMIN, ATTACKER, ATTACKER_NS

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# each sets the marker in a different context: inline JS string, HTML, attribute, URL
PAYLOADS = [
    "'); window.__pwned = 'js-string'; ('",
    "<script>window.__pwned = 'script'</script>",
    "\" autofocus onfocus=\"window.__pwned = 'attribute'\" x=\"",
    "<img src=x onerror=\"window.__pwned = 'img'\">",
    "javascript:window.__pwned = 'url'",
]


@pytest.mark.browser
async def test_no_script_of_a_user_runs_in_an_admins_browser(attack):
    env = attack.env
    payload = " ".join(PAYLOADS)
    await attack.launch(ATTACKER, "web", MESSAGE=payload)
    # the annotation the old page read the name from, set as the finding did it
    await attack.edit_record(ATTACKER_NS, "web", annotations={
        "kdash-hub.io/instance-name": f"web{PAYLOADS[0]}"})
    await attack.create({"apiVersion": "v1", "kind": "Event",  # users may write Events
                         "metadata": {"name": "xss", "namespace": ATTACKER_NS},
                         "involvedObject": {"kind": "Deployment", "namespace": ATTACKER_NS,
                                            "name": "web"},
                         "reason": "Pulled", "message": payload, "type": "Normal"})
    await attack.plant_record(ATTACKER_NS, "lure", {
        "kdash-hub.io/owner-username": PAYLOADS[3],
        "kdash-hub.io/instance-record": payload, "kdash-hub.io/instance-record-signature": "x"})

    dialogs: list[str] = []
    accept = False

    async def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.on("dialog", on_dialog)
            await page.goto(env.url)
            await page.fill("input[name=username]", ADMIN)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launcher")

            async def visit(path: str) -> None:
                response = await page.goto(env.url + path)
                assert response is not None and response.status in (200, 404, 409), path
                csp = response.headers["content-security-policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert "default-src 'self'" in csp and "object-src 'none'" in csp
                assert "base-uri 'none'" in csp and "frame-ancestors 'self'" in csp
                await page.wait_for_timeout(200)  # give anything injected its chance
                assert await page.evaluate("typeof window.__pwned") == "undefined", path

            await visit("?all=1")
            assert await page.locator("#invalid-records").count() == 1  # the lure, as data
            assert PAYLOADS[3] in await page.text_content("#invalid-records")
            await visit(f"?all=1&message={PAYLOADS[1]}")
            await visit(f"instances/{ATTACKER}/web?message={PAYLOADS[3]}")
            summary = await page.text_content("#summary")
            assert payload in summary  # shown as the text it is
            assert payload in await page.text_content("#events")
            assert PAYLOADS[0] not in await page.text_content("#instance-name")
            await visit(f"instances/{ATTACKER}/lure")  # the tampered record: 409 page
            assert "changed outside the launcher" in await page.text_content("#error")

            # Delete: the confirmation shows the name as data; dismissed, nothing happens
            await visit(f"instances/{ATTACKER}/web")
            await page.click("#delete")
            await page.wait_for_timeout(300)
            assert dialogs == ["Delete web and its data?"]
            assert await attack.kube.get("Deployment", "web", ATTACKER_NS) is not None
            accept = True
            await page.click("#delete")
            await page.wait_for_selector("#launcher")
            assert "deleted web" in await page.content()
            assert await page.evaluate("typeof window.__pwned") == "undefined"
        finally:
            await browser.close()
    assert dialogs[-1] == "Delete web and its data?" and set(dialogs) == {dialogs[-1]}
    assert await attack.kube.get("Secret", "kdash-instance-web", ATTACKER_NS) is None


@pytest.mark.parametrize("path", ["", "?all=1", "new", "new/echo", "instances/mallory/nope",
                                  "api/instances", "api/templates", "api/nope",
                                  "static/launcher.js"])
async def test_every_launcher_answer_has_the_security_headers(attack, path):
    status, _, headers = await attack.page(ATTACKER, path)
    assert status in (200, 404), (path, status)
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert headers["X-Content-Type-Options"] == "nosniff"
