"""Onboarding approval in a real hub + proxy, with real slapd and oidc-provider.

One hub for the module (and tests/security/test_onboarding_attacks.py): require_approval on,
`gpu-users` approved automatically, named servers allowed, the "simple" spawner (an approved
user's start really runs). Users: alice (LDAP, admin), bob (LDAP, gpu-users: auto),
carol (LDAP, pending -> approved), dave (OIDC, pending -> rejected), frank (LDAP, pending,
then removed from the directory), erin (LDAP, pending: the attacker of the security tests),
grace (LDAP, approved in Chromium by test_onboarding_browser.py), hana (LDAP, pending: where
a login lands).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ldap import DEMO_USERS, SlapdServer
from kdash_hub.dev.oidc import OIDCProvider, client
from kdash_hub.dev.ports import free_port
from tests.fixtures.auth_hub import auth_hub_config, idp_callbacks
from tests.fixtures.oidc import follow

API = "/hub/api/kdash/approvals"
EXTRA_USERS = [
    {"uid": "frank", "password": "frank-pw", "uidNumber": 2006, "gidNumber": 2006},
    {"uid": "erin", "password": "erin-pw", "uidNumber": 2005, "gidNumber": 2005},
    {"uid": "grace", "password": "grace-pw", "uidNumber": 2007, "gidNumber": 2007},
    {"uid": "hana", "password": "hana-pw", "uidNumber": 2008, "gidNumber": 2008},
]


@dataclass
class ApprovalHub:
    hub: HubProcess
    slapd: SlapdServer
    provider: OIDCProvider

    @property
    def admin(self) -> dict[str, str]:
        return self.hub.auth_headers()

    async def call(self, method: str, path: str, headers: dict | None = None,
                   json: object = None) -> tuple[int, object]:
        async with aiohttp.ClientSession() as s, s.request(
                method, f"{self.hub.url}{path}", headers=headers or self.admin,
                json=json) as r:
            text = await r.text()
            try:
                import json as j
                return r.status, j.loads(text)
            except ValueError:
                return r.status, text

    async def user(self, name: str) -> dict:
        status, body = await self.call("GET", f"/hub/api/users/{name}")
        assert status == 200, body
        return body

    async def token(self, name: str) -> dict[str, str]:
        """A token of the user's own (what the user could make on the token page)."""
        status, body = await self.call("POST", f"/hub/api/users/{name}/tokens", json={})
        assert status == 201, body
        return {"Authorization": f"token {body['token']}"}


def approval_hub_config(slapd: SlapdServer, provider: OIDCProvider) -> str:
    return auth_hub_config(slapd, provider, require_approval=True,
                           auto_approve_groups={"gpu-users"}) + (
        'c.JupyterHub.spawner_class = "simple"\n'
        "c.JupyterHub.allow_named_servers = True\n"
        "c.Spawner.start_timeout = 120\nc.Spawner.http_timeout = 120\n"
        # CI runs as root, where jupyter-server exits at once without this flag
        + ('c.Spawner.args = ["--allow-root"]\n' if os.geteuid() == 0 else ""))


def start_approval_hub(workdir: Path) -> ApprovalHub:
    slapd = SlapdServer(users=[*(dict(u) for u in DEMO_USERS), *EXTRA_USERS],
                        workdir=workdir / "slapd").start()
    port = free_port()
    provider = OIDCProvider(workdir=workdir / "oidc",
                            clients=[client("hub", idp_callbacks(port))]).start()
    hub = HubProcess(approval_hub_config(slapd, provider), workdir / "hub", port=port)
    hub.start_timeout = 240.0  # the machine is shared: a hub start can take a minute
    try:
        asyncio.run(hub.start())
    except BaseException:
        hub.stop_sync()
        provider.stop()
        slapd.cleanup()
        raise
    return ApprovalHub(hub, slapd, provider)


@pytest.fixture(scope="session")
def approval_hub(tmp_path_factory) -> Iterator[ApprovalHub]:
    env = start_approval_hub(tmp_path_factory.mktemp("approval-hub"))
    try:
        yield env
    finally:
        env.hub.stop_sync()
        env.provider.stop()
        env.slapd.cleanup()


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def ldap_login(s: aiohttp.ClientSession, hub: HubProcess, name: str,
                     password: str) -> str:
    async with s.get(f"{hub.url}/hub/login") as r:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
    async with s.post(f"{hub.url}/hub/login", allow_redirects=False,
                      data={"username": name, "password": password, "_xsrf": xsrf}) as r:
        assert r.status == 302, (r.status, await r.text())
    return xsrf


def state_group(user: dict) -> list[str]:
    return [g for g in user["groups"] if g.startswith("kdash-")]


async def test_new_ldap_user_waits_and_gets_no_server(approval_hub):
    env = approval_hub
    async with session() as s:
        await ldap_login(s, env.hub, "carol", "carol-pw")
        async with s.get(f"{env.hub.url}/hub/kdash/approval") as r:
            assert r.status == 200
            html = await r.text()
        assert "Waiting for approval" in html and 'data-state="pending"' in html
    user = await env.user("carol")
    assert state_group(user) == ["kdash-pending"] and "datasci" in user["groups"]
    status, body = await env.call("POST", "/hub/api/users/carol/server",
                                  headers=await env.token("carol"))
    assert status == 403, body
    assert "waiting for an administrator's approval" in body["message"]
    assert (await env.user("carol"))["servers"] == {}


async def test_admin_and_auto_group_are_approved_automatically(approval_hub):
    env = approval_hub
    async with session() as s:
        await ldap_login(s, env.hub, "bob", "bob-pw")
    async with session() as s:
        await ldap_login(s, env.hub, "alice", "alice-pw")
    status, body = await env.call("GET", f"{API}/bob")
    assert status == 200 and body["state"] == "approved"
    assert body["record"]["by"] == "auto" and "gpu-users" in body["record"]["reason"]
    status, body = await env.call("GET", f"{API}/alice")
    assert body["state"] == "approved" and body["record"]["reason"] == "hub admin"


async def test_oidc_user_waits_then_is_rejected_with_a_reason(approval_hub):
    env = approval_hub
    async with session() as s:
        await follow(s, f"{env.hub.url}/hub/oauth_login/idp", login="dave",
                     password="dave-idp")
    assert state_group(await env.user("dave")) == ["kdash-pending"]
    status, body = await env.call("POST", API, json={"user": "dave", "decision": "reject"})
    assert status == 400 and "needs a reason" in body["message"]
    assert state_group(await env.user("dave")) == ["kdash-pending"]
    status, body = await env.call("POST", API, json={
        "user": "dave", "decision": "reject", "reason": "not a member of the lab"})
    assert status == 201 and body["state"] == "rejected" and body["changed"] is True
    assert body["record"]["reason"] == "not a member of the lab"
    assert body["record"]["by"] == "admin-service" or body["record"]["by"]
    status, body = await env.call("POST", "/hub/api/users/dave/server",
                                  headers=await env.token("dave"))
    assert status == 403 and "not a member of the lab" in body["message"]
    # signing in again keeps the decision (the login replaces the user's groups)
    async with session() as s:
        await follow(s, f"{env.hub.url}/hub/oauth_login/idp", login="dave",
                     password="dave-idp")
    assert state_group(await env.user("dave")) == ["kdash-rejected"]


async def test_approval_is_recorded_idempotent_and_lets_the_user_start(approval_hub):
    env = approval_hub
    async with session() as s:
        await ldap_login(s, env.hub, "carol", "carol-pw")
    status, body = await env.call("POST", f"{API}/carol", json={
        "decision": "approve", "reason": "PhD student of the lab"})
    assert status == 201 and body["changed"] is True and body["state"] == "approved"
    record = body["record"]
    assert record["reason"] == "PhD student of the lab" and record["at"]
    assert record["previous"]["state"] == "pending"
    status, again = await env.call("POST", f"{API}/carol", json={"decision": "approve"})
    assert status == 200 and again["changed"] is False
    assert "already approved" in again["message"] and again["record"] == record
    # re-login and refresh keep the state group
    async with session() as s:
        await ldap_login(s, env.hub, "carol", "carol-pw")
        await asyncio.sleep(1.2)  # auth_refresh_age=1 in the auth hub config
        async with s.get(f"{env.hub.url}/hub/home") as r:
            assert r.status == 200
    assert state_group(await env.user("carol")) == ["kdash-approved"]
    headers = await env.token("carol")
    status, body = await env.call("POST", "/hub/api/users/carol/server", headers=headers)
    assert status in (201, 202), body  # past pre_spawn_start: the spawner really runs
    assert "" in (await env.user("carol"))["servers"]
    status, _ = await env.call("DELETE", "/hub/api/users/carol/server", headers=headers)
    assert status in (202, 204, 400)  # 400: it already gave up starting (slow machine)


async def test_bad_decisions_change_nothing(approval_hub):
    env = approval_hub
    async with session() as s:
        await ldap_login(s, env.hub, "alice", "alice-pw")
    before = await env.call("GET", API)
    status, body = await env.call("POST", API, json={
        "user": "alice", "decision": "reject", "reason": "test"})
    assert status == 409 and "is a hub admin" in body["message"]
    status, body = await env.call("POST", API, json={"user": "nobody", "decision": "approve"})
    assert status == 404 and "no hub user 'nobody'" in body["message"]
    status, body = await env.call("POST", API, json={"user": "alice", "decision": "maybe"})
    assert status == 400
    status, body = await env.call("POST", API, json={
        "user": "carol", "decision": "reject", "reason": "x" * 501})
    assert status == 400 and "longer than 500" in body["message"]
    assert await env.call("GET", API) == before


async def test_user_who_left_the_directory_is_not_approved(approval_hub):
    env = approval_hub
    async with session() as s:
        await ldap_login(s, env.hub, "frank", "frank-pw")
    env.slapd.delete_user("frank")
    status, body = await env.call("POST", API, json={"user": "frank", "decision": "approve"})
    assert status == 409 and "no longer in the user directory" in body["message"]
    status, body = await env.call("GET", f"{API}/frank")
    assert body["state"] == "pending"
    # rejecting someone who left is fine
    status, body = await env.call("POST", API, json={
        "user": "frank", "decision": "reject", "reason": "left the lab"})
    assert status == 201 and body["state"] == "rejected"


async def test_decisions_survive_a_hub_restart(approval_hub):
    env = approval_hub
    status, before = await env.call("GET", API)
    assert status == 200 and {u["name"] for u in before["users"]} >= {"carol", "dave"}
    await env.hub.stop()
    await env.hub.start()
    status, after = await env.call("GET", API)
    assert status == 200 and after == before


async def test_a_pending_users_login_lands_on_the_waiting_page(approval_hub):
    env = approval_hub
    async with session() as s:
        async with s.get(f"{env.hub.url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with s.post(f"{env.hub.url}/hub/login", data={
                "username": "hana", "password": "hana-pw", "_xsrf": xsrf}) as r:
            assert r.status == 200
            assert str(r.url) == f"{env.hub.url}/hub/kdash/approval"
            html = await r.text()
        assert "Waiting for approval" in html and 'data-state="pending"' in html
        # approved, the same session's home is the hub's home page again
        status, _ = await env.call("POST", API, json={"user": "hana", "decision": "approve"})
        assert status == 201
        async with s.get(f"{env.hub.url}/hub/home") as r:
            assert r.status == 200 and str(r.url) == f"{env.hub.url}/hub/home"
