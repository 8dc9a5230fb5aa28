"""Attacks on the kubeconfig page and endpoint by an ordinary user (emulator): another
user's kubeconfig by any parameter, path or header; a Renew without (or with someone
else's) xsrf token; a pending or rejected user (onboarding approval) at every door."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import aiohttp
import pytest

from kdash_hub.kube import KubeResources
from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE
from kdash_hub.services.launcher.kubeconfig import TOKEN_SECRET
from tests.fixtures.launcher import LauncherEnv, _hub_api
from tests.integration import test_launcher_kubeconfig_page as page
from tests.integration.test_launcher_kubeconfig_page import claims, give_account, token_of
from tests.security.test_launcher_headers import browser_login

kc_env, kube = page.kc_env, page.kube  # the page tests' launcher (download on)

pytestmark = pytest.mark.usefixtures("kc_env")


async def fetch(env: LauncherEnv, method: str, path: str, user: str | None,
                **kwargs) -> tuple[int, str]:
    headers = {**(env.headers(user) if user else {}), **kwargs.pop("headers", {})}
    async with aiohttp.ClientSession() as s, s.request(
            method, env.url + path, headers=headers, allow_redirects=False, **kwargs) as r:
        return r.status, await r.text()


async def test_no_parameter_path_or_header_gives_another_users_kubeconfig(
        kc_env: LauncherEnv, kube: KubeResources):
    env = kc_env
    await give_account(kube, "victor")
    await give_account(kube, "mallory")
    status, text = await fetch(env, "GET", "kubeconfig/download", "victor")
    assert status == 200
    victims = token_of(text)
    forged = {"X-Forwarded-User": "victor", "X-Remote-User": "victor",
              "X-Kdash-User": "victor", "X-Forwarded-Prefix": "/user/victor/"}
    attempts = [
        ("GET", "kubeconfig/download?user=victor"), ("GET", "kubeconfig/download?owner=victor"),
        ("GET", "kubeconfig/download?namespace=kdash-victor"),
        ("GET", "kubeconfig/victor"), ("GET", "kubeconfig/download/victor"),
        ("GET", "kubeconfig/victor/download"), ("GET", "kubeconfig?user=victor"),
        ("GET", "api/kubeconfig?user=victor"), ("GET", "api/kubeconfig/victor"),
        ("GET", "api/kubeconfig?namespace=kdash-victor"),
        ("GET", f"kubeconfig/download/..%2F{quote('victor')}"),
        ("POST", "kubeconfig/renew?user=victor"),
    ]
    for method, path in attempts:
        for headers in ({}, forged):
            status, text = await fetch(env, method, path, "mallory", headers=headers)
            assert victims not in text, path
            assert "kdash-victor" not in text, (path, text[:300])
            if status == 200 and text.startswith("apiVersion"):  # her own, only
                assert claims(token_of(text))["sub"] == (
                    "system:serviceaccount:kdash-mallory:kdash-user"), path
            elif status == 200:  # her own page
                assert '<code id="namespace">kdash-mallory</code>' in text, path
            else:
                assert status in (303, 404, 405), (path, status, text[:200])
    # victor's current token is still his, untouched
    status, text = await fetch(env, "GET", "kubeconfig/download", "victor")
    assert token_of(text) == victims
    # a Secret of that name in her namespace that isn't hers by its labels is never served
    mine = await kube.get("Secret", TOKEN_SECRET, "kdash-mallory")
    planted = "planted.eyJzdWIiOiJ4In0.x"
    await kube.patch("Secret", TOKEN_SECRET, "kdash-mallory", {
        "metadata": {"labels": {"kdash-hub.io/owner": "victor"},
                     "annotations": {"kdash-hub.io/owner-username": "victor"}},
        "data": {"token": base64.b64encode(planted.encode()).decode()}})
    status, text = await fetch(env, "GET", "kubeconfig/download", "mallory")
    assert status == 200 and planted not in text
    assert claims(token_of(text))["sub"].endswith(":kdash-mallory:kdash-user")
    assert mine is not None


async def page_xsrf(session: aiohttp.ClientSession, env: LauncherEnv) -> str:
    async with session.get(env.url + "kubeconfig") as r:
        assert r.status == 200
        return re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)


async def test_renew_needs_the_pages_xsrf_token(kc_env: LauncherEnv, kube: KubeResources):
    env = kc_env
    await give_account(kube, "bob")
    await give_account(kube, "alice")
    bob, _ = await browser_login(env, "bob")
    alice, _ = await browser_login(env, "alice")
    try:
        xsrf = await page_xsrf(bob, env)
        alices = await page_xsrf(alice, env)
        before = await kube.get("Secret", TOKEN_SECRET, "kdash-bob")
        for data in ({}, {"_xsrf": "forged"}, {"_xsrf": alices}, {"_xsrf": xsrf[:-2]}):
            async with bob.post(env.url + "kubeconfig/renew", data=data,
                                allow_redirects=False) as r:
                assert r.status == 403, (data, r.status)
                assert "authentication required" in await r.text()
        # a cross-site form would send the cookies but not the token: nothing was made
        assert await kube.get("Secret", TOKEN_SECRET, "kdash-bob") == before
        async with bob.post(env.url + "kubeconfig/renew", data={"_xsrf": xsrf},
                            allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            assert r.headers["Location"].startswith(
                "/services/kdash-launcher/kubeconfig?message=")
        secret = await kube.get("Secret", TOKEN_SECRET, "kdash-bob")
        assert secret is not None and secret != before
        # GET never renews
        async with bob.get(env.url + "kubeconfig/renew", allow_redirects=False) as r:
            assert r.status == 405
    finally:
        await bob.close()
        await alice.close()


@pytest.mark.parametrize(("user", "group"), [("dave", "kdash-pending"),
                                             ("frank@lab.org", "kdash-rejected")])
async def test_a_pending_or_rejected_user_gets_no_kubeconfig(
        kc_env: LauncherEnv, kube: KubeResources, user: str, group: str):
    env = kc_env
    namespace = (await give_account(kube, user))["metadata"]["namespace"]
    _hub_api(env, "POST", f"/groups/{group}", {"users": [user]})
    # a token made after the decision (the launcher caches a token's user for a minute)
    token = _hub_api(env, "POST", f"/users/{quote(user)}/tokens",
                     {"scopes": [ACCESS_SCOPE]})["token"]
    headers = {"Authorization": f"token {token}"}
    for method, path in (("GET", "kubeconfig"), ("GET", "kubeconfig/download"),
                         ("POST", "kubeconfig/renew"), ("GET", "api/kubeconfig")):
        async with aiohttp.ClientSession() as s, s.request(
                method, env.url + path, headers=headers, allow_redirects=False) as r:
            text = await r.text()
            assert r.status == 403, (path, r.status, text[:200])
            assert "not approved" in text, path
            assert "apiVersion" not in text
    assert await kube.get("Secret", TOKEN_SECRET, namespace) is None
