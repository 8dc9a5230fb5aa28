"""Onboarding approval pages in headless Chromium: a new user's "waiting for approval"
page, and an admin approving them with a reason on the admins' page (the hub's look)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_auth_browser import CHROMIUM_ARGS
from tests.integration.test_onboarding_approval import approval_hub  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


async def _login(browser, hub, name: str, password: str, lands: str = "home"):
    page = await browser.new_page()
    await page.goto(f"{hub.url}/hub/login")
    await page.fill("#username_input", name)
    await page.fill("#password_input", password)
    await page.click("#login_submit")
    await page.wait_for_url(f"{hub.url}/hub/{lands}")
    return page


@pytest.mark.browser
async def test_waiting_page_and_admin_approval_in_chromium(approval_hub):  # noqa: F811
    from playwright.async_api import async_playwright

    hub = approval_hub.hub
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            user_ctx = await browser.new_context(viewport={"width": 1100, "height": 760})
            # a pending user's login lands on the waiting page, not on home
            grace = await _login(user_ctx, hub, "grace", "grace-pw", lands="kdash/approval")
            assert await grace.inner_text("h1") == "Waiting for approval"
            await grace.goto(f"{hub.url}/hub/home")
            assert grace.url == f"{hub.url}/hub/kdash/approval"
            assert await grace.is_visible("#jupyterhub-logo")  # the hub's page.html
            await grace.screenshot(path=str(artifacts / "onboarding-waiting.png"))
            response = await grace.goto(f"{hub.url}/hub/kdash/approvals")
            assert response.status == 403

            admin_ctx = await browser.new_context(viewport={"width": 1100, "height": 760})
            admin = await _login(admin_ctx, hub, "alice", "alice-pw")
            await admin.goto(f"{hub.url}/hub/kdash/approvals")
            row = admin.locator("#row-grace")
            assert await row.get_attribute("data-state") == "pending"
            await row.locator("input[name=reason]").fill("joined the lab today")
            await row.locator("button[value=approve]").click()
            await admin.wait_for_selector("#approval-notice")
            assert await admin.inner_text("#approval-notice") == "grace is now approved"
            row = admin.locator("#row-grace")
            assert await row.get_attribute("data-state") == "approved"
            assert "alice" in await row.locator(".record").inner_text()
            assert "joined the lab today" in await row.locator(".record").inner_text()
            await admin.screenshot(path=str(artifacts / "onboarding-approvals.png"),
                                   full_page=True)

            await grace.goto(f"{hub.url}/hub/kdash/approval")
            assert await grace.inner_text("h1") == "Your account is approved"
            await grace.goto(f"{hub.url}/hub/home")  # home is hers now
            assert grace.url == f"{hub.url}/hub/home"
        finally:
            await browser.close()
    status, body = await approval_hub.call("GET", "/hub/api/kdash/approvals/grace")
    assert body["record"]["by"] == "alice" and body["record"]["reason"] == (
        "joined the lab today")
