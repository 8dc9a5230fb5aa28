"""Finding 6, end to end: an identity provider cannot take over directory accounts.

Real slapd, real oidc-provider (panva), real JupyterHub + configurable-http-proxy with
KDashAuthenticator, driven over HTTP as a browser would. The attacker holds an account at a
provider the admin trusts ("idp": names and groups used as they are) and can choose its
`preferred_username`. 0.1 put such an identity into the directory user's hub account —
admin rights included — at its first sign-in, and never checked LDAP sign-ins against the
binding. Every attack below must be refused with a message saying how to sign in and how
to link; the legitimate ways (the user's own link, the admin's rule) must keep working.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from yarl import URL

from kdash_hub.dev.oidc import DEMO_USERS
from tests.fixtures.auth_hub import AuthHub, start_auth_hub, stop_auth_hub
from tests.fixtures.ldap import add_ldap_user
from tests.fixtures.oidc import follow

REFUSED = "belongs to an account that signs in with"
IDP_COOKIES = ("_session", "_interaction", "_grant")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    auth = start_auth_hub(tmp_path_factory.mktemp("login-takeover"))
    slapd = auth.slapd
    # victims: directory users in the admin group, one per scenario (order matters)
    for n, uid in enumerate(("vic", "val", "vera", "ext-eve", "lena")):
        add_ldap_user(slapd, uid, f"{uid}-pw", 4001 + n, groups=("admins",))
    users = {k: dict(v) for k, v in DEMO_USERS.items()}

    def idp_user(sub: str, preferred: str) -> None:
        users[sub] = {"password": f"{sub}-idp", "claims": {
            "preferred_username": preferred, "email": f"{sub}@evil.example",
            "groups": []}}

    # attackers: provider accounts whose owner chose the victim's name (and variants)
    for victim in ("vic", "val"):
        for i, name in enumerate((victim, victim.upper(), f"  {victim} ",
                                  "".join(chr(ord(c) + 0xFEE0) for c in victim))):
            idp_user(f"mallory-{victim}-{i}", name)  # NFKC folds the fullwidth form
    idp_user("mallory-eve", "eve")  # untrusted "ext": ext-eve, a directory name
    idp_user("zoe", "zoe")  # makes a provider account; the directory gets "zoe" later
    idp_user("lena", "lena")  # the directory user lena's own provider account
    idp_user("mallory-lena", "lena")
    auth.provider.set_users(users)
    try:
        yield auth
    finally:
        stop_auth_hub(auth)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def forget_idp(s: aiohttp.ClientSession) -> None:
    """Drop the provider's own session, so the next flow shows its login form again."""
    s.cookie_jar.clear(lambda c: c.key.startswith(IDP_COOKIES))


async def form_login(s, hub: AuthHub, username: str, password: str) -> int:
    async with s.get(f"{hub.hub.url}/hub/login") as r:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
    async with s.post(f"{hub.hub.url}/hub/login", allow_redirects=False, data={
            "username": username, "password": password, "_xsrf": xsrf}) as r:
        return r.status


async def oidc_login(s, hub: AuthHub, login: str, provider: str = "idp"):
    forget_idp(s)
    return await follow(s, f"{hub.hub.url}/hub/oauth_login/{provider}", login=login,
                        password=f"{login}-idp")


async def hub_user(hub: AuthHub, name: str) -> dict | None:
    async with aiohttp.ClientSession() as s, s.get(
            f"{hub.hub.api_url}/users/{name}", headers=hub.hub.auth_headers()) as r:
        if r.status == 404:
            return None
        assert r.status == 200, await r.text()
        return await r.json()


async def link_page(s, hub: AuthHub) -> tuple[int, str, str]:
    async with s.get(f"{hub.hub.url}/hub/link-accounts", allow_redirects=False) as r:
        html = await r.text()
    m = re.search(r'name="_xsrf" value="([^"]+)"', html)
    return r.status, html, m.group(1) if m else ""


async def start_link(s, hub: AuthHub, login: str, provider: str = "idp",
                     stop_at_callback: bool = False):
    """POST the link button (with the page's XSRF token), then sign in at the provider."""
    _, _, xsrf = await link_page(s, hub)
    forget_idp(s)
    callback = f"{hub.hub.url}/hub/oauth_callback/{provider}"
    return await follow(s, f"{hub.hub.url}/hub/link-accounts/oidc/{provider}",
                        method="POST", data={"_xsrf": xsrf}, login=login,
                        password=f"{login}-idp",
                        stop_prefix=callback if stop_at_callback else "")


# -- the takeover, before and after the victim's first sign-in -------------------------------

@pytest.mark.parametrize("variant", range(4))
async def test_provider_name_of_a_directory_user_who_never_signed_in_is_refused(hub,
                                                                               variant):
    """Attack: be first. The name is the directory's even before its user signs in."""
    async with session() as s:
        url, status, body = await oidc_login(s, hub, f"mallory-vic-{variant}")
    assert status == 403, (url, body[:300])
    assert f"The username &#39;vic&#39; {REFUSED} username and password" in body
    assert "account-linking page" in body
    assert await hub_user(hub, "vic") is None  # no account was made for the attacker


@pytest.mark.parametrize("variant", range(4))
async def test_provider_name_of_a_signed_in_directory_user_is_refused(hub, variant):
    """Attack: after the victim's first sign-in (0.1 bound the provider identity here)."""
    async with session() as s:
        assert await form_login(s, hub, "val", "val-pw") == 302
    before = await hub_user(hub, "val")
    assert before["admin"] is True
    async with session() as s:
        url, status, body = await oidc_login(s, hub, f"mallory-val-{variant}")
        assert status == 403 and REFUSED in body, (url, body[:300])
        async with s.get(f"{hub.hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 302  # the attacker holds no hub session
    after = await hub_user(hub, "val")
    assert after["admin"] is True and after["groups"] == before["groups"]
    assert after["auth_state"]["identities"] == {"ldap": "val"}


async def test_untrusted_provider_name_equal_to_a_directory_name_is_refused(hub):
    """`ext` users are `ext-<name>`; `ext-eve` is a directory account."""
    async with session() as s:
        url, status, body = await oidc_login(s, hub, "mallory-eve", provider="ext")
    assert status == 403 and f"&#39;ext-eve&#39; {REFUSED}" in body, (url, body[:300])
    assert await hub_user(hub, "ext-eve") is None


async def test_ldap_sign_in_to_an_account_a_provider_made_is_refused(hub):
    """The reverse: the directory gains `zoe` after the provider's zoe made her account."""
    async with session() as s:
        url, status, _ = await oidc_login(s, hub, "zoe")
        assert status == 200 and "/login" not in url
    add_ldap_user(hub.slapd, "zoe", "zoe-pw", 4100, groups=("admins",))
    async with session() as s:
        status = await form_login(s, hub, "zoe", "zoe-pw")
        async with s.get(f"{hub.hub.url}/hub/login") as r:
            assert r.status == 200
    assert status == 403
    state = (await hub_user(hub, "zoe"))["auth_state"]
    assert state["identities"] == {"oidc:idp": "zoe"}  # the directory login bound nothing
    assert (await hub_user(hub, "zoe"))["admin"] is False
    async with session() as s:
        async with s.get(f"{hub.hub.url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with s.post(f"{hub.hub.url}/hub/login", data={
                "username": "zoe", "password": "zoe-pw", "_xsrf": xsrf}) as r:
            body = await r.text()
    assert "The username &#39;zoe&#39; belongs to an account that signs in with Test IdP" \
        in body


# -- linking: only the signed-in user, only their own session --------------------------------

async def test_linking_cannot_be_started_by_a_link_or_a_forged_form(hub):
    async with session() as s:
        assert await form_login(s, hub, "vera", "vera-pw") == 302
        async with s.get(f"{hub.hub.url}/hub/link-accounts/oidc/idp",
                         allow_redirects=False) as r:
            assert r.status == 405  # a GET (an <img>, a link) starts nothing
        async with s.post(f"{hub.hub.url}/hub/link-accounts/oidc/idp",
                          allow_redirects=False) as r:
            assert r.status == 403  # no XSRF token
        async with s.post(f"{hub.hub.url}/hub/link-accounts/ldap", allow_redirects=False,
                          data={"username": "lena", "password": "lena-pw"}) as r:
            assert r.status == 403
    async with session() as anonymous:
        async with anonymous.get(f"{hub.hub.url}/hub/link-accounts",
                                 allow_redirects=False) as r:
            assert r.status == 302 and "/hub/login" in r.headers["Location"]
    assert (await hub_user(hub, "vera"))["auth_state"]["identities"] == {"ldap": "vera"}


async def test_a_provider_identity_of_another_name_cannot_be_linked(hub):
    async with session() as s:
        assert await form_login(s, hub, "vera", "vera-pw") == 302
        url, status, body = await start_link(s, hub, "mallory-vic-0")  # maps to "vic"
    assert status == 403 and "belongs to the hub user &#39;vic&#39;, not &#39;vera&#39;" \
        in body, (url, body[:300])
    assert (await hub_user(hub, "vera"))["auth_state"]["identities"] == {"ldap": "vera"}


async def test_an_attackers_callback_replayed_in_the_victims_session_links_nothing(hub):
    """Login CSRF into the link flow: the attacker's code, the victim's browser."""
    callback = f"{hub.hub.url}/hub/oauth_callback/idp"
    async with session() as attacker:
        forged, _, _ = await follow(attacker, f"{hub.hub.url}/hub/oauth_login/idp",
                                    login="mallory-lena", password="mallory-lena-idp",
                                    stop_prefix=callback)
    async with session() as victim:
        assert await form_login(victim, hub, "lena", "lena-pw") == 302
        async with victim.get(forged, allow_redirects=False) as r:
            assert r.status == 400  # no state cookie of this flow in the victim's browser
        # the victim is in the middle of her own link: still her state, not the attacker's
        mine, _, _ = await start_link(victim, hub, "lena", stop_at_callback=True)
        forged_q, mine_q = parse_qs(urlparse(forged).query), parse_qs(urlparse(mine).query)
        assert forged_q["state"] != mine_q["state"]
        async with victim.get(forged, allow_redirects=False) as r:
            assert r.status == 400 and "OAuth state mismatch" in await r.text()
    state = (await hub_user(hub, "lena"))["auth_state"]
    assert state["identities"] == {"ldap": "lena"}


async def test_a_link_finished_in_another_users_session_is_refused(hub):
    """The flow was started for lena; by the callback the browser is signed in as bob."""
    callback = f"{hub.hub.url}/hub/oauth_callback/idp"
    async with session() as s:
        assert await form_login(s, hub, "lena", "lena-pw") == 302
        url, _, _ = await start_link(s, hub, "lena", stop_at_callback=True)
        assert url.startswith(callback)
        async with session() as other:  # this browser now holds bob's hub session
            assert await form_login(other, hub, "bob", "bob-pw") == 302
            for cookie in other.cookie_jar:
                if cookie.key.startswith("jupyterhub-"):
                    s.cookie_jar.update_cookies({cookie.key: cookie}, URL(hub.hub.url))
        async with s.get(url, allow_redirects=False) as r:
            assert r.status == 403
            assert "started by another session" in await r.text()
    assert (await hub_user(hub, "lena"))["auth_state"]["identities"] == {"ldap": "lena"}
    assert "oidc:idp" not in (await hub_user(hub, "bob"))["auth_state"]["identities"]


async def test_the_owner_links_her_provider_account_and_then_signs_in_with_it(hub):
    async with session() as s:
        assert await form_login(s, hub, "lena", "lena-pw") == 302
        url, status, body = await start_link(s, hub, "lena")
        assert status == 200 and "linked=idp" in url, (url, body[:300])
        assert "you can now sign in with Test IdP" in body
    state = (await hub_user(hub, "lena"))["auth_state"]
    assert state["identities"] == {"ldap": "lena", "oidc:idp": "lena"}
    assert state["links"] == {"ldap": "created", "oidc:idp": "user"}
    async with session() as s:
        url, status, _ = await oidc_login(s, hub, "lena")
        assert status == 200 and "/login" not in url
    user = await hub_user(hub, "lena")
    assert user["admin"] is True and user["auth_state"]["uid"] == 4005  # her directory uid
    # the attacker with the same preferred_username (another `sub`) is still refused
    async with session() as s:
        url, status, body = await oidc_login(s, hub, "mallory-lena")
    assert status == 403 and "belongs to a different account at Test IdP" in body


async def test_the_admins_rule_still_maps_provider_users_to_directory_users(hub):
    """`sso` is configured with ldap_link_claim = preferred_username: the 0.1 feature,
    now only where the admin said so."""
    async with session() as s:
        url, status, _ = await oidc_login(s, hub, "alice", provider="sso")
        assert status == 200 and "/login" not in url
    state = (await hub_user(hub, "alice"))["auth_state"]
    assert state["identities"] == {"ldap": "alice", "oidc:sso": "alice"}
    assert state["uid"] == 2001
