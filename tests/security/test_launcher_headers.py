"""Finding 4 (medium): the proxy forwarded the launcher's login cookie
(`service-kdash-launcher`: signed, not encrypted, a hub token with the launcher's scope) to
side services; the strip list had the wrong name.

The names here are the ones the running hub and launcher really set: a browser-like client
logs in through the hub and the launcher's OAuth, and every cookie name set on the way is
collected. Then everything a browser or a program could send goes to the proxy, and the
instance (an echo server standing in for its pod) must see none of the hub's or the
launcher's credentials, only the request headers of the allow-list.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import urljoin

import aiohttp

from tests.fixtures.launcher import PASSWORD
from tests.fixtures.security import ATTACKER


async def browser_login(env, user: str) -> tuple[aiohttp.ClientSession, set[str]]:
    """A session logged in to the hub and the launcher the way a browser is, and the
    names of every cookie set on the way (redirects followed by hand to see them)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    names: set[str] = set()
    url, method, data = env.url, "GET", None
    for _ in range(20):
        async with session.request(method, url, data=data, allow_redirects=False) as resp:
            for header in resp.headers.getall("Set-Cookie", []):
                names.update(SimpleCookie(header).keys())
            body = await resp.text()
            if resp.status in (301, 302, 303, 307):
                url, method, data = urljoin(str(resp.url), resp.headers["Location"]), "GET", None
                continue
            if 'name="password"' in body:  # the hub's login form
                xsrf = re.search(r'name="_xsrf" value="([^"]+)"', body).group(1)
                url, method = str(resp.url), "POST"
                data = {"username": user, "password": PASSWORD, "_xsrf": xsrf}
                continue
            assert resp.status == 200 and 'id="launcher"' in body, (resp.status, body[:300])
            return session, names
    raise AssertionError("the login didn't finish")


async def test_no_hub_or_launcher_cookie_reaches_an_instance(attack, echo_server):
    env = attack.env
    await attack.launch(ATTACKER, "web", PORT=echo_server.port)
    await echo_server.serve_pod(env, ATTACKER, "web")
    session, names = await browser_login(env, ATTACKER)
    try:
        # the names the running code uses (the hub's, the launcher's, its OAuth state)
        assert {"jupyterhub-session-id", "jupyterhub-hub-login", "service-kdash-launcher",
                "service-kdash-launcher-oauth-state", "_xsrf"} <= names, names
        base = f"{env.url}proxy/{ATTACKER}/web/"
        # 1. what a browser sends by itself (the cookies whose path matches)
        async with session.get(base + "browser", headers={"Accept": "application/json"}) as r:
            assert r.status == 200
            seen = await r.json()
        assert "Cookie" not in seen["headers"], seen["headers"]
        # 2. every such name, in every form JupyterHub writes it, sent by hand
        credentials = {*names, "jupyterhub-user-victor", "jupyterhub-user-mallory-oauth-state",
                       "jupyterhub-services", "service-kdash-launcher-oauth-state-AbCdEfGh"}
        credentials |= {f"__Host-{n}" for n in credentials}
        cookie = "; ".join(f"{n}=secret-{i}" for i, n in enumerate(sorted(credentials)))
        cookie += "; app=1; jupyterhubish=2; service-kdash-launcher-prefs=3"
        async with session.get(base + "by-hand", headers={"Cookie": cookie}) as r:
            assert r.status == 200
            seen = await r.json()
        sent = SimpleCookie(seen["headers"]["Cookie"])
        assert set(sent) == {"app", "jupyterhubish", "service-kdash-launcher-prefs"}
        assert "secret-" not in str(seen)
        # 3. over a WebSocket too
        ws_url = base.replace("http://", "ws://") + "socket"
        async with session.ws_connect(ws_url, headers={"Cookie": cookie}) as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
        [handshake] = [r for r in echo_server.requests if r["method"] == "WEBSOCKET"]
        assert set(SimpleCookie(handshake["headers"].get("Cookie", ""))) == {
            "app", "jupyterhubish", "service-kdash-launcher-prefs"}
        assert "secret-" not in str(handshake)
    finally:
        await session.close()


async def test_only_allowed_headers_reach_an_instance_never_a_hub_token(attack, echo_server):
    env = attack.env
    await attack.launch(ATTACKER, "web", PORT=echo_server.port)
    await echo_server.serve_pod(env, ATTACKER, "web")
    token = env.tokens[ATTACKER]
    base = f"{env.url}proxy/{ATTACKER}/web/"
    async with aiohttp.ClientSession() as s:
        for auth in (f"token {token}", f"Bearer {token}"):
            async with s.get(base + "h", headers={
                    "Authorization": auth, "X-Forwarded-User": "root",
                    "X-Forwarded-For": "10.0.0.1", "X-Forwarded-Prefix": "/hub/",
                    "X-Hub-Token": token, "X-Evil": "1", "Proxy-Authorization": auth,
                    "Accept-Language": "de", "If-None-Match": '"abc"',
                    "X-Requested-With": "XMLHttpRequest"}) as r:
                assert r.status == 200
                seen = (await r.json())["headers"]
            assert token not in str(seen)
            lowered = {k.lower(): v for k, v in seen.items()}
            for dropped in ("authorization", "x-hub-token", "x-evil", "proxy-authorization"):
                assert dropped not in lowered, dropped
            assert lowered["x-forwarded-user"] == ATTACKER  # never what the client claims
            assert lowered["x-forwarded-for"] != "10.0.0.1"
            assert lowered["x-forwarded-prefix"] == f"/services/kdash-launcher/proxy/{ATTACKER}/web"
            assert lowered["accept-language"] == "de" and lowered["if-none-match"] == '"abc"'
            assert lowered["x-requested-with"] == "XMLHttpRequest"


async def test_an_instance_cant_set_the_hubs_or_the_launchers_cookies(attack, echo_server):
    env = attack.env
    await attack.launch(ATTACKER, "web", PORT=echo_server.port)
    await echo_server.serve_pod(env, ATTACKER, "web")
    query = ("service-kdash-launcher=forged&jupyterhub-session-id=forged"
             "&__Host-jupyterhub-hub-login=forged&_xsrf=forged"
             "&service-kdash-launcher-oauth-state=forged&app-pref=kept")
    async with aiohttp.ClientSession() as s, s.get(
            f"{env.url}proxy/{ATTACKER}/web/set-cookie?{query}",
            headers=env.headers(ATTACKER)) as r:
        assert r.status == 200
        set_cookies = r.headers.getall("Set-Cookie", [])
    assert [SimpleCookie(c).keys() for c in set_cookies] == [{"app-pref": None}.keys()]
    assert f"Path=/services/kdash-launcher/proxy/{ATTACKER}/web" in set_cookies[0]
    assert "forged" not in " ".join(set_cookies)
