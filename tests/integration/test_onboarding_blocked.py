"""A user who is no longer allowed (out of `allowed_groups`) or whose directory account is
gone loses their Kubernetes ServiceAccount at the next refresh, with their login (emulator).

A real hub + proxy with KDashAuthenticator (real slapd, allowed_groups={"datasci"},
auth_refresh_age=1) and KDashSpawner on a local cluster; the users' namespace bundles are
made by the spawner's own provisioning code, as a first start would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ldap import SlapdServer
from kdash_hub.dev.oidc import OIDCProvider, client
from kdash_hub.dev.ports import free_port
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from tests.fixtures.auth_hub import AuthHub, auth_hub_config, idp_callbacks, stop_auth_hub
from tests.fixtures.cluster import api_client_for
from tests.fixtures.realcp import bundle_spec, provision_as_hub, real_tier_enabled
from tests.integration.test_onboarding_approval import ldap_login, session

pytestmark = pytest.mark.skipif(real_tier_enabled(), reason="the emulator's tier")


@dataclass
class Env:
    auth: AuthHub
    kubeconfig: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("onboarding-blocked")
    cluster = LocalCluster(kubeconfig_path=workdir / "kubeconfig").start_in_thread()
    slapd = SlapdServer(workdir=workdir / "slapd").start()
    port = free_port()
    provider = OIDCProvider(workdir=workdir / "oidc",
                            clients=[client("hub", idp_callbacks(port))]).start()
    config = auth_hub_config(slapd, provider, auth_refresh_age=1, allow_all=False,
                             allowed_groups={"datasci"})
    hub = HubProcess(config + 'c.JupyterHub.spawner_class = "kdash"\n', workdir / "hub",
                     port=port, env={"KUBECONFIG": str(workdir / "kubeconfig")})
    auth = AuthHub(hub, slapd, provider)
    try:
        asyncio.run(hub.start())
        yield Env(auth, workdir / "kubeconfig")
    finally:
        stop_auth_hub(auth)
        cluster.stop_thread()


@pytest.fixture
async def kube(env: Env) -> AsyncIterator[KubeResources]:
    async with api_client_for(env.kubeconfig) as client:
        yield KubeResources(client)


async def refreshed_out(env: Env, s) -> None:
    """Requests past auth_refresh_age until the hub logs the session out."""
    for _ in range(20):
        await asyncio.sleep(1.2)
        async with s.get(f"{env.auth.hub.url}/hub/home", allow_redirects=False) as r:
            if r.status == 302 and "/login" in r.headers["Location"]:
                return
    raise AssertionError("the session was not logged out:\n" + env.auth.hub.log_tail(40))


@pytest.mark.parametrize(("user", "how"), [("carol", "group"), ("bob", "gone")])
async def test_a_blocked_or_vanished_user_loses_their_service_account(
        env: Env, kube: KubeResources, user: str, how: str):
    await provision_as_hub(env.kubeconfig, bundle_spec(user))
    ns = bundle_spec(user).namespace
    assert await kube.get("ServiceAccount", "kdash-user", ns) is not None
    async with session() as s:
        await ldap_login(s, env.auth.hub, user, f"{user}-pw")
        async with s.get(f"{env.auth.hub.url}/hub/home", allow_redirects=False) as r:
            assert r.status == 200
        assert await kube.get("ServiceAccount", "kdash-user", ns) is not None  # still allowed
        if how == "group":
            env.auth.slapd.remove_from_group(user, "datasci")
        else:
            env.auth.slapd.delete_user(user)
        await refreshed_out(env, s)
    assert await kube.get("ServiceAccount", "kdash-user", ns) is None
    assert await kube.get("Namespace", ns) is not None  # data stays
    assert f"Deleted ServiceAccount {ns}/kdash-user of {user}" in env.auth.hub.log_tail(400)
