"""Deleting or rejecting a user ends what their Kubernetes tokens can do (emulator).

A real hub + proxy with KDashSpawner on a local cluster in process mode, and the pack's
onboarding approval (ApprovalMixin) on an in-config authenticator. Deleting the hub user
through the hub API (JupyterHub calls Spawner.delete_forever) or rejecting them through the
approvals API deletes their `kdash-user` ServiceAccount, the one their kubeconfig tokens are
bound to; the namespace and its claims stay; the next approved start makes the account
again. The kubectl proof (a 401 after the delete) is in tests/realtier/.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from kdash_hub.spawner import bundle
from tests.fixtures.cluster import api_client_for
from tests.fixtures.realcp import real_tier_enabled
from tests.fixtures.spawner import hub_config

pytestmark = pytest.mark.skipif(real_tier_enabled(), reason="the emulator's tier")

APPROVAL = '''
from kdash_hub.authenticator.approval import ApprovalMixin


class ApprovingAuthenticator(ApprovalMixin, InConfigAuthenticator):
    def get_handlers(self, app):
        return [*self.approval_handlers(), *super().get_handlers(app)]


c.JupyterHub.authenticator_class = ApprovingAuthenticator
c.ApprovingAuthenticator.require_approval = True
c.Authenticator.admin_users = {"ada"}
c.JupyterHub.default_url = "/hub/home"
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Path]]:
    workdir = tmp_path_factory.mktemp("onboarding-revoke")
    cluster = LocalCluster(kubelet="process", kubeconfig_path=workdir / "kubeconfig",
                           workdir=workdir / "nodes").start_in_thread()
    hub = HubProcess(hub_config(extra=APPROVAL), workdir / "hub",
                     env={"KUBECONFIG": str(workdir / "kubeconfig")})
    try:
        asyncio.run(hub.start())
        yield hub, workdir / "kubeconfig"
    finally:
        hub.stop_sync()
        cluster.stop_thread()


@pytest.fixture
async def kube(hub) -> AsyncIterator[KubeResources]:
    async with api_client_for(hub[1]) as client:
        yield KubeResources(client)


async def api(hub: HubProcess, method: str, path: str, body: object = None,
              headers: dict | None = None) -> tuple[int, object]:
    async with aiohttp.ClientSession() as s, s.request(
            method, hub.url + path, json=body, headers=headers or hub.auth_headers(),
            allow_redirects=False) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def login(hub: HubProcess, name: str) -> tuple[aiohttp.ClientSession, str]:
    """A browser-like sign-in; returns the session and where the login sent it."""
    import re

    s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with s.get(f"{hub.url}/hub/login") as r:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
    async with s.post(f"{hub.url}/hub/login", data={"username": name, "password": "x",
                                                    "_xsrf": xsrf},
                      allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return s, r.headers["Location"]


async def spawn_ready(hub: HubProcess, name: str, limit: float = 90.0) -> None:
    status, body = await api(hub, "POST", f"/hub/api/users/{name}/server",
                             {"profile": "cpu-small"})
    assert status in (201, 202), body
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, model = await api(hub, "GET", f"/hub/api/users/{name}")
        if ((model.get("servers") or {}).get("") or {}).get("ready"):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name}'s server not ready:\n{hub.log_tail(60)}")


async def stop(hub: HubProcess, name: str) -> None:
    status, body = await api(hub, "DELETE", f"/hub/api/users/{name}/server")
    assert status in (202, 204), body
    for _ in range(300):
        _, model = await api(hub, "GET", f"/hub/api/users/{name}")
        if not model.get("servers"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}'s server did not stop")


async def approve(hub: HubProcess, name: str, decision: str = "approve",
                  reason: str = "ok") -> dict:
    status, body = await api(hub, "POST", "/hub/api/kdash/approvals",
                             {"user": name, "decision": decision, "reason": reason})
    assert status in (200, 201), body
    return body


async def test_deleting_the_hub_user_deletes_the_account_and_keeps_the_data(hub, kube):
    hub, _ = hub
    session, _ = await login(hub, "tess")
    await session.close()
    await approve(hub, "tess")
    await spawn_ready(hub, "tess")
    ns = "kdash-tess"
    account = await kube.get("ServiceAccount", "kdash-user", ns)
    assert account is not None
    claims_before = sorted(c["metadata"]["name"] for c in await kube.list(
        "PersistentVolumeClaim", ns))
    await stop(hub, "tess")

    status, body = await api(hub, "DELETE", "/hub/api/users/tess")
    assert status == 204, body
    assert await kube.get("ServiceAccount", "kdash-user", ns) is None
    namespace = await kube.get("Namespace", ns)
    assert namespace is not None  # user data stays
    assert sorted(c["metadata"]["name"] for c in await kube.list(
        "PersistentVolumeClaim", ns)) == claims_before
    assert bundle.BUNDLE_HASH_ANNOTATION not in (
        namespace["metadata"].get("annotations") or {})
    assert await kube.get("RoleBinding", "kdash-hub-namespace", ns) is not None
    assert "Deleted ServiceAccount kdash-tess/kdash-user of tess" in hub.log_tail(400)

    # the same name signs in again, is approved, starts: the account is made anew
    session, _ = await login(hub, "tess")
    await session.close()
    await approve(hub, "tess")
    await spawn_ready(hub, "tess")
    again = await kube.get("ServiceAccount", "kdash-user", ns)
    assert again is not None and again["metadata"]["uid"] != account["metadata"]["uid"]
    await stop(hub, "tess")


async def test_a_rejection_deletes_the_account_and_a_later_approval_brings_it_back(
        hub, kube):
    hub, _ = hub
    session, _ = await login(hub, "ruth")
    await session.close()
    await approve(hub, "ruth")
    await spawn_ready(hub, "ruth")
    await stop(hub, "ruth")
    assert await kube.get("ServiceAccount", "kdash-user", "kdash-ruth") is not None

    body = await approve(hub, "ruth", "reject", "left the lab")
    assert body["state"] == "rejected"
    assert "their Kubernetes tokens no longer work" in body["message"]
    assert await kube.get("ServiceAccount", "kdash-user", "kdash-ruth") is None
    assert await kube.get("Namespace", "kdash-ruth") is not None
    # a second rejection changes nothing and says so
    status, again = await api(hub, "POST", "/hub/api/kdash/approvals",
                              {"user": "ruth", "decision": "reject", "reason": "again"})
    assert status == 200 and again["changed"] is False
    status, refused = await api(hub, "POST", "/hub/api/users/ruth/server",
                                {"profile": "cpu-small"})
    assert status == 403, refused
    assert await kube.get("ServiceAccount", "kdash-user", "kdash-ruth") is None

    await approve(hub, "ruth")
    await spawn_ready(hub, "ruth")
    assert await kube.get("ServiceAccount", "kdash-user", "kdash-ruth") is not None
    await stop(hub, "ruth")


async def test_a_pending_user_lands_on_the_waiting_page_not_home(hub):
    hub, _ = hub
    session, location = await login(hub, "pia")
    try:
        assert location == "/hub/home"  # the hub's own choice (default_url) ...
        async with session.get(hub.url + location, allow_redirects=False) as r:
            assert r.status == 302  # ... sends her on to the waiting page
            assert r.headers["Location"] == "/hub/kdash/approval"
        async with session.get(hub.url + "/hub/home") as r:
            assert str(r.url).endswith("/hub/kdash/approval")
            assert 'data-state="pending"' in await r.text()
        for path in ("/hub/spawn", "/hub/spawn/pia", "/hub/spawn/pia/named"):
            async with session.get(hub.url + path, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/hub/kdash/approval"
        assert not (await api(hub, "GET", "/hub/api/users/pia"))[1]["servers"]
        # approved: home is home again
        await approve(hub, "pia")
        async with session.get(hub.url + "/hub/home", allow_redirects=False) as r:
            assert r.status == 200
            assert "kdash/approval" not in str(r.url)
    finally:
        await session.close()
