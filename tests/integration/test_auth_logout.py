"""Logout ends the provider's session (OIDC RP-initiated logout), against a real hub, a real
oidc-provider and slapd: the next click on the provider's button shows its login form
instead of signing straight back in. LDAP logout stays the hub's own; nothing in the logout
request chooses where the browser goes."""

from __future__ import annotations

import html
import re
import time
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp
import pytest

from kdash_hub.authenticator.discovery import Discovery
from tests.fixtures.ldap import add_ldap_user
from tests.fixtures.oidc import FakeUser, follow, make_authenticator, provider_settings

EVIL = "http://127.0.0.1:9/evil"


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def first_page(s: aiohttp.ClientSession, url: str) -> tuple[str, int, str]:
    """Follow redirects without filling any form: (url, status, body) of the first page."""
    for _ in range(20):
        async with s.get(url, allow_redirects=False) as r:
            body = await r.text()
            if r.status in (301, 302, 303, 307):
                url = urljoin(url, r.headers["Location"])
                continue
            return url, r.status, body
    raise AssertionError(f"too many redirects, last {url}")


async def logout_location(s: aiohttp.ClientSession, hub, query: str = "") -> str:
    async with s.get(f"{hub.url}/hub/logout{query}", allow_redirects=False) as r:
        assert r.status == 302, (r.status, await r.text())
        return urljoin(hub.url, r.headers["Location"])


async def signed_in(s: aiohttp.ClientSession, hub) -> bool:
    async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
        return r.status == 200


async def confirm_at_provider(s: aiohttp.ClientSession, url: str) -> str:
    """The provider's "sign out?" page, answered yes; returns where it sends the browser."""
    async with s.get(url, allow_redirects=False) as r:
        body = await r.text()
        assert r.status == 200, (r.status, body[:300])
    action = html.unescape(re.search(r'<form id="op.logoutForm" method="post" action="([^"]+)"',
                                     body).group(1))
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', body).group(1)
    async with s.post(urljoin(url, action), data={"xsrf": xsrf, "logout": "yes"},
                      allow_redirects=False) as r:
        assert r.status in (302, 303), (r.status, await r.text())
        return r.headers["Location"]


async def test_oidc_logout_goes_to_the_provider_with_the_hint_and_ignores_the_query(auth_hub):
    hub = auth_hub.hub
    async with session() as s:
        url, status, _ = await follow(s, f"{hub.url}/hub/oauth_login/idp", login="dave",
                                      password="dave-idp")
        assert status == 200 and url.endswith("/hub/home")
        state = (await auth_hub.user("dave"))["auth_state"]
        assert state["backend"] == "oidc:idp"
        location = await logout_location(
            s, hub, f"?next={EVIL}&post_logout_redirect_uri={EVIL}&id_token_hint=x")
        assert not await signed_in(s, hub), "the hub session outlived logout"
    target = urlparse(location)
    assert f"{target.scheme}://{target.netloc}{target.path}" == (
        f"{auth_hub.provider.issuer}/session/end")
    assert parse_qs(target.query) == {
        "client_id": ["hub"], "post_logout_redirect_uri": [f"{hub.url}/hub/login"],
        "id_token_hint": [state["backends"]["oidc:idp"]["id_token"]]}
    assert "evil" not in location


async def test_after_logout_the_provider_button_asks_for_the_password_again(auth_hub):
    hub = auth_hub.hub
    async with session() as s:
        await follow(s, f"{hub.url}/hub/oauth_login/idp", login="dave", password="dave-idp")
        assert await signed_in(s, hub)
        back = await confirm_at_provider(s, await logout_location(s, hub))
        assert back == f"{hub.url}/hub/login"
        url, status, body = await first_page(s, f"{hub.url}/hub/oauth_login/idp")
        assert "/interaction/" in url and 'name="password"' in body, (url, body[:300])
        assert not await signed_in(s, hub)


async def test_control_without_end_session_the_button_signs_straight_back_in(auth_hub):
    """Provider "ext" has end_session False: hub-only logout, as before this feature. This is
    the behaviour the other tests prove is gone."""
    hub = auth_hub.hub
    async with session() as s:
        await follow(s, f"{hub.url}/hub/oauth_login/ext", login="dave", password="dave-idp")
        assert await signed_in(s, hub)
        assert await logout_location(s, hub) == f"{hub.url}/hub/login"
        assert not await signed_in(s, hub)
        url, status, _ = await first_page(s, f"{hub.url}/hub/oauth_login/ext")
        assert status == 200 and url.endswith("/hub/home")


async def test_ldap_logout_is_the_hubs_own(auth_hub):
    """Its own account: the session hub is shared, and test_auth_hub deletes carol."""
    hub = auth_hub.hub
    add_ldap_user(auth_hub.slapd, "logan", "logan-pw", 4200)
    async with session() as s:
        async with s.get(f"{hub.url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with s.post(f"{hub.url}/hub/login", allow_redirects=False, data={
                "username": "logan", "password": "logan-pw", "_xsrf": xsrf}) as r:
            assert r.status == 302, await r.text()
        assert await signed_in(s, hub)
        assert await logout_location(s, hub, f"?next={EVIL}") == f"{hub.url}/hub/login"
        assert not await signed_in(s, hub)


async def test_anonymous_logout_with_a_crafted_url_goes_to_the_login_page(auth_hub):
    hub = auth_hub.hub
    async with session() as s:
        location = await logout_location(s, hub, f"?next={EVIL}&post_logout_redirect_uri={EVIL}")
    assert location == f"{hub.url}/hub/login"


async def test_logout_from_another_site_keeps_the_provider_session(auth_hub):
    """A link on another site (the browser says Sec-Fetch-Site: cross-site, a header pages
    can't forge) logs out of the hub as upstream does, but doesn't end the SSO session."""
    hub = auth_hub.hub
    async with session() as s:
        await follow(s, f"{hub.url}/hub/oauth_login/idp", login="dave", password="dave-idp")
        async with s.get(f"{hub.url}/hub/logout", allow_redirects=False,
                         headers={"Sec-Fetch-Site": "cross-site"}) as r:
            assert r.status == 302 and r.headers["Location"] == "/hub/login"
        assert not await signed_in(s, hub)
        async with s.get(f"{hub.url}/hub/logout", allow_redirects=False,
                         headers={"Sec-Fetch-Site": "same-origin"}) as r:
            assert r.headers["Location"] == "/hub/login"  # signed out already: nothing to end
        url, status, _ = await first_page(s, f"{hub.url}/hub/oauth_login/idp")
        assert status == 200 and url.endswith("/hub/home"), "the provider session was ended"


async def test_provider_refuses_a_foreign_post_logout_redirect_uri(auth_hub):
    """A crafted end-session URL (a real hint, a foreign way back) is not followed: only the
    hub's registered login page is a way back."""
    hub = auth_hub.hub
    async with session() as s:
        await follow(s, f"{hub.url}/hub/oauth_login/idp", login="dave", password="dave-idp")
        location = await logout_location(s, hub)
        hint = parse_qs(urlparse(location).query)["id_token_hint"][0]
        crafted = (f"{auth_hub.provider.issuer}/session/end?client_id=hub&id_token_hint={hint}"
                   f"&post_logout_redirect_uri={EVIL}")
        async with s.get(crafted, allow_redirects=False) as r:
            body = await r.text()
            assert r.status == 400 and "Location" not in r.headers, (r.status, body[:300])
            assert "post_logout_redirect_uri not registered" in body


# --- in process: which users get the provider's logout, and with what --------------------

def fresh(doc: dict) -> Discovery:
    async def fetch(url: str) -> dict:
        return doc
    return Discovery(doc["issuer"], fetch, "IdP")


async def test_end_session_url_per_backend_and_setting(oidc_provider):
    guess = "http://127.0.0.1:9/hub/login"
    auth = make_authenticator(providers={
        "idp": provider_settings(oidc_provider),
        "fixed": provider_settings(oidc_provider,
                                   post_logout_redirect_uri="https://hub.example.org/hub/login"),
        "off": provider_settings(oidc_provider, end_session=False),
        "none": provider_settings(oidc_provider)})
    doc = dict(await auth.oidc["idp"].discovery.get())
    doc.pop("end_session_endpoint")
    auth.oidc["none"].discovery = fresh(doc)

    def user(backend: str) -> FakeUser:
        return FakeUser("dave", {"backend": backend, "backends": {backend: {"id_token": "T"}}})

    url = urlparse(await auth.end_session_url(user("oidc:idp"), guess))
    assert url.path == "/session/end" and parse_qs(url.query) == {
        "client_id": ["hub"], "post_logout_redirect_uri": [guess], "id_token_hint": ["T"]}
    fixed = parse_qs(urlparse(await auth.end_session_url(user("oidc:fixed"), guess)).query)
    assert fixed["post_logout_redirect_uri"] == ["https://hub.example.org/hub/login"]
    for plain in ("oidc:off", "oidc:none", "oidc:removed", "ldap"):
        assert await auth.end_session_url(user(plain), guess) == "", plain
    assert await auth.end_session_url(FakeUser("dave", None), guess) == ""
    no_token = FakeUser("dave", {"backend": "oidc:idp", "backends": {}})
    assert "id_token_hint" not in await auth.end_session_url(no_token, guess)


@pytest.mark.parametrize("issuer,endpoint,ok", [
    ("https://idp.example.org", "https://idp.example.org/logout", True),
    ("https://idp.example.org", "http://idp.example.org/logout", False),
    ("https://idp.example.org", "javascript:alert(1)", False),
    ("https://idp.example.org", "//evil.example/x", False),
    ("http://127.0.0.1:8", "http://127.0.0.1:8/session/end", True),
    ("http://127.0.0.1:8", 42, False),
])
async def test_discovery_end_session_endpoint_must_be_a_web_url(issuer, endpoint, ok):
    d = fresh({"issuer": issuer, "authorization_endpoint": "a", "token_endpoint": "t",
               "jwks_uri": "j", "end_session_endpoint": endpoint})
    assert await d.end_session_endpoint() == (endpoint if ok else "")


@pytest.mark.parametrize("key,value,message", [
    ("end_session", "yes", "must be True or False"),
    ("post_logout_redirect_uri", "/hub/login", "absolute http(s) URL"),
    ("post_logout_redirect_uri", "javascript:alert(1)", "absolute http(s) URL"),
])
def test_logout_settings_are_checked(key, value, message):
    from kdash_hub.authenticator.providers import parse_providers

    with pytest.raises(ValueError, match=re.escape(message)):
        parse_providers({"idp": {"issuer": "https://idp.example.org", "client_id": "hub",
                                 key: value}})


async def test_provider_down_at_logout_still_logs_out_of_the_hub(oidc_provider):
    auth = make_authenticator(providers={"idp": provider_settings(oidc_provider)})
    backend = auth.oidc["idp"]
    backend.discovery.issuer = "http://127.0.0.1:9"  # nothing listens there
    started = time.monotonic()
    user = FakeUser("dave", {"backend": "oidc:idp", "backends": {}})
    assert await auth.end_session_url(user, "http://127.0.0.1:9/hub/login") == ""
    assert time.monotonic() - started < 15


# --- in Chromium: the whole round trip as a person clicks it ------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.mark.browser
async def test_logout_then_provider_button_shows_the_login_form_in_chromium(auth_hub):
    from playwright.async_api import async_playwright

    hub = auth_hub.hub
    issuer = auth_hub.provider.issuer
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            foreign: list[str] = []
            page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(
                ("http://127.0.0.1", "data:", "about:")) else None)
            await page.goto(f"{hub.url}/hub/login")
            await page.click("#oidc-idp")
            await page.fill("input[name=login]", "dave")
            await page.fill("input[name=password]", "dave-idp")
            await page.click("#submit")
            await page.wait_for_url(f"{hub.url}/hub/home")

            await page.goto(f"{hub.url}/hub/logout?next={EVIL}")
            await page.wait_for_url(f"{issuer}/session/end**")
            await page.click("#logout-yes")  # the provider's own "sign out?" question
            await page.wait_for_url(f"{hub.url}/hub/login")

            await page.click("#oidc-idp")
            await page.wait_for_selector("input[name=password]")  # asked again, not signed in
            assert page.url.startswith(f"{issuer}/interaction/")
            await page.fill("input[name=login]", "dave")
            await page.fill("input[name=password]", "dave-idp")
            await page.click("#submit")
            await page.wait_for_url(f"{hub.url}/hub/home")  # and signing in again works
            assert "dave" in await page.inner_text("body")
            assert foreign == []
        finally:
            await browser.close()


@pytest.mark.browser
async def test_logout_link_on_another_site_keeps_the_sso_session_in_chromium(auth_hub):
    """127.0.0.1 and localhost are different sites: a logout link on a localhost page."""
    from playwright.async_api import async_playwright

    hub = auth_hub.hub
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{hub.url}/hub/oauth_login/idp")
            await page.fill("input[name=login]", "dave")
            await page.fill("input[name=password]", "dave-idp")
            await page.click("#submit")
            await page.wait_for_url(f"{hub.url}/hub/home")
            await page.goto(hub.url.replace("127.0.0.1", "localhost") + "/hub/login")
            await page.set_content(f'<a id="bait" href="{hub.url}/hub/logout">prize</a>')
            await page.click("#bait")
            await page.wait_for_url(f"{hub.url}/hub/login")  # not the provider's sign-out
            await page.click("#oidc-idp")
            await page.wait_for_url(f"{hub.url}/hub/home")  # SSO session still there
        finally:
            await browser.close()
