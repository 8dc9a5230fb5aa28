"""The login page in headless Chromium: form + provider buttons, and a full OIDC login."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.mark.browser
async def test_login_page_and_oidc_button_in_chromium(auth_hub):
    from playwright.async_api import async_playwright

    hub = auth_hub.hub
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 760})
            await page.goto(f"{hub.url}/hub/login")
            assert await page.is_visible("#username_input")
            assert await page.is_visible("#password_input")
            assert await page.inner_text("#oidc-idp") == "Sign in with Test IdP"
            assert await page.inner_text("#oidc-down") == "Sign in with Offline IdP"
            artifacts = REPO / "artifacts"
            artifacts.mkdir(exist_ok=True)
            await page.screenshot(path=str(artifacts / "login.png"), full_page=True)

            await page.click("#oidc-idp")
            await page.wait_for_selector("input[name=login]")  # the provider's own form
            await page.fill("input[name=login]", "dave")
            await page.fill("input[name=password]", "dave-idp")
            await page.click("#submit")
            await page.wait_for_url(f"{hub.url}/hub/home")
            assert "dave" in await page.inner_text("body")
        finally:
            await browser.close()
    user = await auth_hub.user("dave")
    assert user["auth_state"]["backend"] == "oidc:idp"
    assert user["groups"] == ["datasci"]
