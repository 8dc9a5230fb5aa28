"""Onboarding approval attacked by an ordinary pending user (erin, LDAP, never approved).

Every door must stay shut: REST spawn, a named server, the spawn page, approving oneself
(API and page), joining the approved group through the groups API, and the launcher's API.
"""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import quote

import aiohttp
import pytest

from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE
from tests.integration.test_onboarding_approval import (  # noqa: F401 - the fixture
    API,
    approval_hub,
    ldap_login,
    session,
    state_group,
)


@pytest.fixture
def onboarding(approval_hub):  # noqa: F811 - the session hub of the integration tests
    return approval_hub


WAITING = "waiting for an administrator's approval"


async def _pending_erin(env) -> dict[str, str]:
    async with session() as s:
        await ldap_login(s, env.hub, "erin", "erin-pw")
    assert state_group(await env.user("erin")) == ["kdash-pending"]
    return await env.token("erin")


async def test_pending_user_cannot_spawn_by_rest_or_named_server(onboarding):
    env = onboarding
    erin = await _pending_erin(env)
    status, body = await env.call("POST", "/hub/api/users/erin/server", headers=erin,
                                  json={"profile": "gpu"})
    assert status == 403 and WAITING in body["message"]
    status, body = await env.call("POST", "/hub/api/users/erin/servers/evil", headers=erin)
    assert status == 403 and WAITING in body["message"]
    assert (await env.user("erin"))["servers"] == {}


async def test_pending_user_cannot_spawn_from_the_spawn_page(onboarding):
    env = onboarding
    await _pending_erin(env)
    async with session() as s:
        await ldap_login(s, env.hub, "erin", "erin-pw")
        for path in ("/hub/spawn", "/hub/spawn/erin", "/hub/spawn/erin/evil"):
            async with s.get(f"{env.hub.url}{path}") as r:  # sent to the waiting page
                assert str(r.url) == f"{env.hub.url}/hub/kdash/approval", path
                assert 'data-state="pending"' in await r.text()
        # the spawn form's POST, with a valid session and XSRF token, is refused too
        xsrf = await page_xsrf(s, env.hub)
        for path in ("/hub/spawn", "/hub/spawn/erin/evil"):
            async with s.post(f"{env.hub.url}{path}", data={"_xsrf": xsrf}) as r:
                html = await r.text()
            assert WAITING in html.replace("&#39;", "'"), path
    assert (await env.user("erin"))["servers"] == {}


async def test_pending_user_cannot_approve_themself(onboarding):
    env = onboarding
    erin = await _pending_erin(env)
    status, body = await env.call("POST", API, headers=erin, json={
        "user": "erin", "decision": "approve", "reason": "me"})
    assert status == 403 and "only hub admins" in body["message"]
    status, body = await env.call("GET", API, headers=erin)
    assert status == 403
    # the admins' page, with a valid session and XSRF token
    async with session() as s:
        await ldap_login(s, env.hub, "erin", "erin-pw")
        async with s.get(f"{env.hub.url}/hub/kdash/approvals") as r:
            assert r.status == 403
        xsrf = await page_xsrf(s, env.hub)
        async with s.post(f"{env.hub.url}/hub/kdash/approvals", data={
                "_xsrf": xsrf, "user": "erin", "decision": "approve"}) as r:
            assert r.status == 403
        # the API through the session cookie
        async with s.post(f"{env.hub.url}{API}", json={"user": "erin", "decision": "approve"},
                          headers={"X-XSRFToken": xsrf}) as r:
            assert r.status == 403
    # join the approved group, or write its records
    status, _ = await env.call("POST", "/hub/api/groups/kdash-approved/users", headers=erin,
                               json={"users": ["erin"]})
    assert status in (400, 403)
    status, _ = await env.call("PUT", "/hub/api/groups/kdash-approved/properties",
                               headers=erin, json={"erin": {"by": "erin"}})
    assert status == 403
    status, body = await env.call("GET", f"{API}/erin")
    assert body["state"] == "pending" and state_group(await env.user("erin")) == [
        "kdash-pending"]


async def test_admin_page_forms_need_xsrf(onboarding):
    env = onboarding
    await _pending_erin(env)
    async with session() as s:
        await ldap_login(s, env.hub, "alice", "alice-pw")
        async with s.post(f"{env.hub.url}/hub/kdash/approvals", data={
                "user": "erin", "decision": "approve"}) as r:
            assert r.status == 403  # no _xsrf: a cross-site form can't approve anyone
    status, body = await env.call("GET", f"{API}/erin")
    assert body["state"] == "pending"


async def page_xsrf(s: aiohttp.ClientSession, hub) -> str:
    """The session's XSRF token, as the hub's pages hand it to their scripts."""
    async with s.get(f"{hub.url}/hub/home") as r:
        return re.search(r'xsrf_token: "([^"]+)"', await r.text()).group(1)


def _hub_api(env, method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(env.hub.api_url + path, data=data, method=method,
                                 headers=env.hub.auth_headers())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


async def test_pending_or_rejected_user_is_refused_by_the_launcher(launcher_env):
    env = launcher_env
    for group in ("kdash-pending", "kdash-rejected"):
        _hub_api(env, "POST", "/groups/" + group, {})
        _hub_api(env, "POST", f"/groups/{group}/users", {"users": ["mallory"]})
        try:
            # a fresh token: the launcher caches what the hub said about a token
            token = _hub_api(env, "POST", f"/users/{quote('mallory')}/tokens",
                             {"scopes": [ACCESS_SCOPE], "note": "onboarding attack"})["token"]
            headers = {"Authorization": f"token {token}"}
            async with aiohttp.ClientSession() as s:
                async with s.get(env.api + "instances", headers=headers) as r:
                    assert r.status == 403
                    assert "not approved" in (await r.json())["message"]
                async with s.post(env.api + "instances", headers=headers,
                                  json={"template": "echo"}) as r:
                    assert r.status == 403
                    assert "not approved" in (await r.json())["message"]
        finally:
            _hub_api(env, "DELETE", f"/groups/{group}/users", {"users": ["mallory"]})
    # an approved (or never-decided) user still gets in
    status, _ = await env.call("GET", "instances", user="mallory")
    assert status == 200
