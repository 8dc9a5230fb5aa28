"""KDashAuthenticator inside a real JupyterHub + proxy, with real slapd and oidc-provider."""

from __future__ import annotations

import asyncio
import html
import re
import time
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
import pytest

from tests.fixtures.auth_hub import AuthHub, start_auth_hub, stop_auth_hub
from tests.fixtures.oidc import follow


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_page(s: aiohttp.ClientSession, hub) -> tuple[str, str]:
    async with s.get(f"{hub.url}/hub/login") as r:
        assert r.status == 200
        html = await r.text()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', html).group(1)
    return html, xsrf


async def form_login(s, hub, username, password, xsrf=None) -> tuple[int, str, str]:
    if xsrf is None:
        _, xsrf = await login_page(s, hub)
    data = {"username": username, "password": password}
    if xsrf:
        data["_xsrf"] = xsrf
    async with s.post(f"{hub.url}/hub/login", data=data, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def oidc_login(s, hub, login="alice", password="alice-idp", provider="idp"):
    return await follow(s, f"{hub.url}/hub/oauth_login/{provider}", login=login,
                        password=password)


async def test_login_page_has_form_xsrf_and_buttons(auth_hub):
    async with session() as s:
        html, xsrf = await login_page(s, auth_hub.hub)
    assert xsrf and 'id="ldap-login-form"' in html and 'name="password"' in html
    assert 'href="/hub/oauth_login/idp?next="' in html and "Sign in with Test IdP" in html
    assert "Sign in with Offline IdP" in html
    assert 'id="jupyterhub-logo"' in html and 'id="login-main"' in html  # hub page.html


async def test_ldap_form_login_sets_groups_admin_and_auth_state(auth_hub):
    async with session() as s:
        status, location, _ = await form_login(s, auth_hub.hub, "Alice", "alice-pw")
    assert status == 302 and "/hub/" in location
    user = await auth_hub.user("alice")
    assert user["admin"] is True
    assert sorted(user["groups"]) == ["admins", "gpu-users"]
    state = user["auth_state"]
    assert (state["backend"], state["uid"], state["gid"]) == ("ldap", 2001, 2001)
    assert state["profiles"] == ["gpu"] and state["quota"] == {"nvidia.com/gpu": 1}


async def test_form_without_xsrf_is_refused(auth_hub):
    async with session() as s:
        await login_page(s, auth_hub.hub)
        status, _, _ = await form_login(s, auth_hub.hub, "alice", "alice-pw", xsrf="")
    assert status == 403


@pytest.mark.parametrize("username, password, message", [
    ("*)(uid=*", "x", "may only contain"),
    ("alice,ou=x", "alice-pw", "may only contain"),
    ("b" * 200, "x", "at most 64 characters"),
    ("bob", "", "Enter your password"),
    ("bob", "p" * 4000, "password is too long"),
    ("bob", "wrong", "Invalid username or password"),
])
async def test_bad_input_gets_a_clear_refusal(auth_hub, username, password, message):
    async with session() as s:
        status, _, html = await form_login(s, auth_hub.hub, username, password)
    assert status == 403
    assert message in html and 'id="ldap-login-form"' in html  # the form, with the reason


async def test_oidc_login_maps_to_the_ldap_user_under_the_rule_and_merges_auth_state(
        auth_hub):
    async with session() as s:
        await form_login(s, auth_hub.hub, "alice", "alice-pw")
    async with session() as s:  # "idp" has no rule: alice's account is not its to reach
        url, status, body = await oidc_login(s, auth_hub.hub)
        assert status == 403 and "belongs to an account that signs in with" in body
    async with session() as s:  # "sso": the admin's rule says preferred_username == uid
        url, status, _ = await oidc_login(s, auth_hub.hub, provider="sso")
        assert status == 200 and "/hub/" in url and "/login" not in url
    state = (await auth_hub.user("alice"))["auth_state"]
    assert state["backend"] == "oidc:sso"
    assert state["identities"] == {"ldap": "alice", "oidc:sso": "alice"}
    assert state["links"] == {"ldap": "created", "oidc:sso": "rule"}
    assert state["uid"] == 2001  # from the directory account
    assert state["backends"]["oidc:sso"]["refresh_token"]


async def test_wrong_oauth_state_is_refused(auth_hub):
    hub = auth_hub.hub
    callback = f"{hub.url}/hub/oauth_callback/idp"
    async with session() as s:
        url, _, _ = await follow(s, f"{hub.url}/hub/oauth_login/idp", stop_prefix=callback,
                                 login="dave", password="dave-idp")
        query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        query["state"] = "eyJzdGF0ZV9pZCI6ICJmb3JnZWQifQ=="  # {"state_id": "forged"}
        async with s.get(f"{callback}?{urlencode(query)}", allow_redirects=False) as r:
            assert r.status == 400
            assert "OAuth state mismatch" in await r.text()


async def test_replayed_code_is_refused(auth_hub):
    hub = auth_hub.hub
    callback = f"{hub.url}/hub/oauth_callback/idp"
    async with session() as s:
        first, _, _ = await follow(s, f"{hub.url}/hub/oauth_login/idp", stop_prefix=callback,
                                   login="dave", password="dave-idp")
        async with s.get(first, allow_redirects=False) as r:
            assert r.status == 302  # logged in once
        second, _, _ = await follow(s, f"{hub.url}/hub/oauth_login/idp", stop_prefix=callback,
                                    login="dave", password="dave-idp")
        q1, q2 = parse_qs(urlparse(first).query), parse_qs(urlparse(second).query)
        replay = urlencode({"code": q1["code"][0], "state": q2["state"][0]})
        async with s.get(f"{callback}?{replay}", allow_redirects=False) as r:
            assert r.status == 403
            assert "already used code" in await r.text()


async def test_provider_down_only_breaks_its_button(auth_hub):
    async with session() as s:
        t0 = time.monotonic()
        async with s.get(f"{auth_hub.hub.url}/hub/oauth_login/down") as r:
            assert r.status == 503
            assert "Sign-in with Offline IdP is unavailable" in await r.text()
        assert time.monotonic() - t0 < 6
        status, _, _ = await form_login(s, auth_hub.hub, "bob", "bob-pw")
        assert status == 302


async def test_directory_down_says_so_and_oidc_still_works(auth_hub):
    async with session() as s:  # dave's account exists (bound to the provider) first
        url, status, _ = await oidc_login(s, auth_hub.hub, "dave", "dave-idp")
        assert status == 200 and "/login" not in url
    auth_hub.slapd.stop()
    try:
        async with session() as s:
            t0 = time.monotonic()
            status, _, html = await form_login(s, auth_hub.hub, "bob", "bob-pw")
            assert status == 503 and time.monotonic() - t0 < 5
            assert "directory is unavailable" in html and 'id="ldap-login-form"' in html
        async with session() as s:
            url, status, _ = await oidc_login(s, auth_hub.hub, "dave", "dave-idp")
            assert status == 200 and "/login" not in url
    finally:
        auth_hub.slapd.start()


async def test_refresh_applies_removed_group_and_removed_account(auth_hub):
    hub, slapd = auth_hub.hub, auth_hub.slapd
    async with session() as s:
        status, _, _ = await form_login(s, hub, "carol", "carol-pw")
        assert status == 302
        assert (await auth_hub.user("carol"))["groups"] == ["datasci"]
        slapd.remove_from_group("carol", "datasci")
        await asyncio.sleep(1.2)  # auth_refresh_age = 1
        async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 200
        assert (await auth_hub.user("carol"))["groups"] == []
        slapd.delete_user("carol")
        await asyncio.sleep(1.2)
        async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 302 and "/hub/login" in r.headers["Location"]


async def test_oidc_refresh_through_the_hub_follows_the_provider(auth_hub):
    hub, provider = auth_hub.hub, auth_hub.provider
    users = dict(provider.users)
    users["frank"] = {"password": "frank-idp", "claims": {
        "preferred_username": "frank", "email": "frank@example.org", "groups": ["admins"]}}
    provider.set_users(users)
    async with session() as s:
        url, status, _ = await oidc_login(s, hub, "frank", "frank-idp")
        assert status == 200 and "/login" not in url
        user = await auth_hub.user("frank")
        assert user["groups"] == ["admins"] and user["admin"] is True
        users["frank"]["claims"]["groups"] = ["datasci"]
        provider.set_users(users)
        await asyncio.sleep(1.2)  # auth_refresh_age = 1: the next request refreshes
        async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 200
        user = await auth_hub.user("frank")
        assert user["groups"] == ["datasci"] and user["admin"] is False
        del users["frank"]
        provider.set_users(users)
        await asyncio.sleep(1.2)
        async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 302 and "/hub/login" in r.headers["Location"]


# --- a hub that lets only some groups in ----------------------------------------------------

REFUSAL = "Only GPU users may use this hub; ask gpu-admins@example.org for access."


@pytest.fixture(scope="module")
def group_hub(tmp_path_factory) -> AuthHub:
    """Only gpu-users may sign in, with the admin's own refusal sentence."""
    auth = start_auth_hub(tmp_path_factory.mktemp("group-hub"), allow_all=False,
                          allowed_groups={"gpu-users"}, custom_403_message=REFUSAL)
    try:
        yield auth
    finally:
        stop_auth_hub(auth)


async def hub_names(hub, what: str) -> set[str]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{hub.api_url}/{what}", headers=hub.auth_headers()) as r:
        assert r.status == 200, await r.text()
        return {item["name"] for item in await r.json()}


@pytest.mark.parametrize("provider, username, group", [
    ("idp", "dave", "datasci"),            # trusted: names and groups as they are
    ("ext", "ext-dave", "ext-datasci"),    # untrusted: prefixed
])
async def test_a_refused_oidc_login_is_a_403_saying_why_and_makes_nothing(
        group_hub, provider, username, group):
    """dave's provider sign-in works, but his group may not use the hub: the callback
    answers 403 with the admin's sentence (not a 500), and no hub user or group is made."""
    hub = group_hub.hub
    async with session() as s:
        url, status, body = await oidc_login(s, hub, "dave", "dave-idp", provider=provider)
        assert f"/hub/oauth_callback/{provider}" in url
        assert status == 403, body[-2000:]
        assert REFUSAL in html.unescape(body)
        async with s.get(f"{hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 302 and "/hub/login" in r.headers["Location"]  # not signed in
    assert username not in await hub_names(hub, "users")
    assert group not in await hub_names(hub, "groups")
    # an allowed user of the same provider signs in (the refusal is dave's groups only)
    async with session() as s:
        url, status, _ = await oidc_login(s, hub, "alice", "alice-idp", provider="sso")
        assert status == 200 and "/hub/" in url and "/login" not in url


async def test_a_refused_ldap_login_keeps_the_form_and_makes_nothing(group_hub):
    """The directory form refuses a not-allowed account as JupyterHub does: the form
    again, 403, the usual sentence, and no user or group."""
    hub = group_hub.hub
    async with session() as s:
        status, _, body = await form_login(s, hub, "carol", "carol-pw")
    assert status == 403
    assert "Invalid username or password" in body and 'id="ldap-login-form"' in body
    assert REFUSAL not in html.unescape(body)
    assert "carol" not in await hub_names(hub, "users")
    assert "datasci" not in await hub_names(hub, "groups")
