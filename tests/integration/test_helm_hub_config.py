"""The chart's own hub, configured by helm-values/, runs the pack: login, spawn, launcher, culler.

The published zero-to-jupyterhub chart 4.4.0 is rendered by a real `helm template` with
helm-values/values.yaml, an overlay from helm-values/examples/ and this site's values (the
LDAP server, its CA as a `hub.extraFiles` entry, the OIDC issuer: what any admin sets). Its
hub Deployment then runs here as its pod would (tests/fixtures/podrun.py): the chart's own
files/hub/jupyterhub_config.py and z2jh.py, reading the rendered ConfigMap and Secret at
/usr/local/etc/jupyterhub/, the pod's environment, the proxy Deployment's
configurable-http-proxy in front, and the pack's services as their helm-values/services/
Deployments (or inside the hub, with examples/services-in-hub-pod.yaml). Notebook servers run
on the local cluster (process kubelet), LDAP is a real slapd with StartTLS and certificate
checks, OIDC a real oidc-provider.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.authenticator import KDashAuthenticator
from kdash_hub.dev.oidc import client as oidc_client
from kdash_hub.localcluster.nodes import NodeSpec
from tests.fixtures.cluster import admin_kubeconfig_of, api_client_for
from tests.fixtures.helm import (
    HELM_VALUES,
    OBSERVER,
    VALUES,
    ChartRelease,
    ClusterAccess,
    secret,
)
from tests.fixtures.oidc import follow
from tests.fixtures.versions import JUPYTERHUB_MAJOR

EXAMPLES = HELM_VALUES / "examples"
REFUSED_SIGN_IN = KDashAuthenticator.custom_403_message.default_value
NAMESPACE = "kdash-hub"


def session() -> aiohttp.ClientSession:
    # a hub that died mid-test must fail the test, not hold it on a request for minutes
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=60))


def services_access() -> dict[str, ClusterAccess]:
    """On a real cluster, the services' own identities (the real tier mints a ServiceAccount
    token for each); the local cluster has one identity for all."""
    return {pod: ClusterAccess(Path(os.environ[env]))
            for pod, env in (("kdash-launcher", "KDASH_TEST_LAUNCHER_KUBECONFIG"),
                             ("kdash-culler", "KDASH_TEST_CULLER_KUBECONFIG"))
            if os.environ.get(env)}


async def ensure_namespace(cluster, name: str) -> None:
    """The release's namespace (the test's own doing, as an admin's)."""
    async with api_client_for(admin_kubeconfig_of(cluster)) as api:
        try:
            await k8s.CoreV1Api(api).create_namespace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiException as e:
            if e.status != 409:
                raise


# --- this site's values: what an admin sets beside helm-values/ ------------------------------

def ldap_site(slapd) -> tuple[dict, list[dict]]:
    """The overlays' LDAP settings pointed at this slapd: its address, its CA (the file
    ldap-only.yaml names, through hub.extraFiles) and the service account's password (the
    Secrets the overlays read it from)."""
    values = {
        "hub": {"extraFiles": {"ldap-ca": {
            "mountPath": "/usr/local/etc/jupyterhub/ldap-ca.pem",
            "stringData": slapd.tls_files.ca_cert.read_text()}}},
        "custom": {"kdash": {"authenticator": {
            "server_address": "127.0.0.1", "server_port": slapd.port,
            "tls_kwargs": {"ca_certs_file": "/usr/local/etc/jupyterhub/ldap-ca.pem"}}}},
    }
    objects = [secret("kdash-ldap", NAMESPACE, {"password": slapd.service_password}),
               secret("kdash-login", NAMESPACE, {"ldap-password": slapd.service_password,
                                                 "campus-secret": "jupyterhub-secret"})]
    return values, objects


def culler_site(group: str, idle: str = "20s") -> dict:
    """Cull `group`'s servers after `idle`, checking every 2 s (the rest as the values say)."""
    return {"custom": {"kdash": {"culler": {
        "cull_every": "2s", "group_rules": {group: {"idle": idle}}}}}}


def oidc_site(provider, provider_id: str) -> dict:
    """An overlay's OIDC provider pointed at this oidc-provider."""
    return {"custom": {"kdash": {"authenticator": {"oidc_providers": {provider_id: {
        "issuer": provider.issuer}}}}}}


def oidc_provider_for(factory, release: ChartRelease, *provider_ids: str):
    """An oidc-provider with the overlays' client ("jupyterhub"), redirecting to the
    release's callbacks."""
    callbacks = [f"{release.url}/hub/oauth_callback/{pid}" for pid in provider_ids]
    return factory(clients=[oidc_client("jupyterhub", callbacks, secret="jupyterhub-secret")])


def merge(*parts: dict) -> dict:
    from tests.fixtures.helm import helm_merge

    out: dict = {}
    for part in parts:
        out = helm_merge(out, part)
    return out


# --- the browser's side -------------------------------------------------------------------------

async def form_login(s: aiohttp.ClientSession, url: str, username: str,
                     password: str) -> tuple[int, str]:
    async with s.get(f"{url}/hub/login") as resp:
        page = await resp.text()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    async with s.post(f"{url}/hub/login?next=", allow_redirects=False, data={
        "username": username, "password": password, "_xsrf": xsrf,
    }) as resp:
        return resp.status, await resp.text()


async def spawn(s: aiohttp.ClientSession, release: ChartRelease, user: str,
                options: dict[str, str]) -> dict:
    """Spawn from the profile page; wait until the server answers through the proxy."""
    async with s.get(f"{release.url}/hub/spawn") as resp:
        page = await resp.text()
        assert resp.status == 200, page[-2000:]
    xsrf = re.search(r'xsrf_token: "([^"]+)"', page).group(1)
    for value in options.values():
        assert f'value="{value}"' in page, page[-3000:]
    async with s.post(f"{release.url}/hub/spawn/{user}",
                      data={**options, "_xsrf": xsrf}) as resp:
        assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 180
    while True:
        # a page first: the server logs the browser in through the hub (OAuth)
        async with s.get(f"{release.url}/user/{user}/files/x"):
            pass
        async with s.get(f"{release.url}/user/{user}/api/status") as resp:
            if resp.status == 200 and "json" in resp.headers.get("Content-Type", ""):
                break
            last = f"{resp.status} {resp.url}\n{(await resp.text())[-1500:]}"
        if time.monotonic() > deadline or not release.pods["hub"].running():
            pytest.fail(f"{last}\n{release.log_tails()}\n{await server_logs(release)}")
        await asyncio.sleep(0.5)
    return await hub_user(release, user)


def admin(release: ChartRelease) -> Path:
    """The kubeconfig the test itself reads the cluster with (the admin's on a real one)."""
    return release.observer_kubeconfig or release.access.kubeconfig


async def server_logs(release: ChartRelease) -> str:
    """The notebook servers' logs (for a failure's message)."""
    out = []
    async with api_client_for(admin(release)) as api:
        core = k8s.CoreV1Api(api)
        pods = await core.list_pod_for_all_namespaces(
            label_selector="component=singleuser-server")
        for pod in pods.items:
            log = await core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace)
            out.append(f"--- pod {pod.metadata.namespace}/{pod.metadata.name}\n{log[-3000:]}")
    return "\n".join(out)


async def hub_user(release: ChartRelease, name: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{release.api_url}/users/{name}", headers=release.auth_headers()) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def hub_user_exists(release: ChartRelease, name: str) -> bool:
    async with aiohttp.ClientSession() as s, s.get(
            f"{release.api_url}/users/{name}", headers=release.auth_headers()) as resp:
        assert resp.status in (200, 404), await resp.text()
        return resp.status == 200


async def wait_until_culled(release: ChartRelease, name: str) -> None:
    deadline = time.monotonic() + 90
    while (await hub_user(release, name))["servers"]:
        assert time.monotonic() < deadline, release.log_tails()
        await asyncio.sleep(1)


async def launcher_page(s: aiohttp.ClientSession, release: ChartRelease) -> str:
    """The launcher's page through the proxy, logged in through the hub (OAuth); the
    launcher may still be starting (the hub routes it once it answers: 404 from the hub
    until then, 503 from the proxy while it restarts)."""
    deadline = time.monotonic() + 180
    while True:
        async with s.get(f"{release.url}/services/kdash-launcher/") as resp:
            body = await resp.text()
            if resp.status not in (404, 503) or time.monotonic() > deadline:
                assert resp.status == 200, body[-2000:] + release.log_tails()
                return body
        await asyncio.sleep(1)


async def spawn_and_wait_ready(s: aiohttp.ClientSession, release: ChartRelease, user: str,
                               options: dict[str, str]) -> None:
    """Spawn and wait until the hub says the server is ready (without using it)."""
    async with s.get(f"{release.url}/hub/spawn") as resp:
        page = await resp.text()
    xsrf = re.search(r'xsrf_token: "([^"]+)"', page).group(1)
    async with s.post(f"{release.url}/hub/spawn/{user}", data={**options, "_xsrf": xsrf}):
        pass
    deadline = time.monotonic() + 180
    while not ((await hub_user(release, user))["servers"].get("") or {}).get("ready"):
        if time.monotonic() > deadline:
            pytest.fail(release.log_tails())
        await asyncio.sleep(0.5)


def culled_by_the_culler(release: ChartRelease, user: str) -> bool:
    """The hub's log shows the culler's service token stopping `user`'s server."""
    log = release.pods["hub"].log_path.read_text(errors="replace")
    return bool(re.search(rf"DELETE /hub/api/users/{user}/server \(kdash-culler@", log))


async def user_quota(release: ChartRelease, user: str) -> dict[str, str]:
    from kdash_hub.naming import user_namespace

    async with api_client_for(admin(release)) as api:
        quota = await k8s.CoreV1Api(api).read_namespaced_resource_quota(
            "kdash-quota", user_namespace(user, "kdash-"))
    return dict(quota.spec.hard)


async def user_pod(release: ChartRelease, user: str) -> k8s.V1Pod:
    from kdash_hub.naming import user_namespace

    async with api_client_for(admin(release)) as api:
        return await k8s.CoreV1Api(api).read_namespaced_pod(
            f"jupyter-{user}", user_namespace(user, "kdash-"))


async def user_egress(release: ChartRelease, user: str) -> list[dict]:
    """The egress rules of every NetworkPolicy in the user's namespace."""
    from kdash_hub.naming import user_namespace

    async with api_client_for(admin(release)) as api:
        policies = await k8s.NetworkingV1Api(api).list_namespaced_network_policy(
            user_namespace(user, "kdash-"))
        return [api.sanitize_for_serialization(rule) for p in policies.items
                for rule in (p.spec.egress or [])]


def assert_metadata_blocked(egress: list[dict]) -> None:
    """No egress rule lets a pod reach 169.254.169.254 (an ipBlock must except it)."""
    assert egress, "no egress rules: egress is denied entirely or no policy selects the pods"
    for rule in egress:
        if not rule.get("to"):  # to anywhere: only on ports the metadata service doesn't use
            ports = {p.get("port") for p in rule.get("ports") or []}
            assert ports and not ports & {80, 443, "http", "https"}, rule
            continue
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            if block and block["cidr"] in ("0.0.0.0/0", "169.254.0.0/16"):
                assert "169.254.169.254/32" in (block.get("except") or []), rule


async def stop_server(release: ChartRelease, user: str) -> None:
    async with aiohttp.ClientSession() as s, s.delete(
            f"{release.api_url}/users/{user}/server", headers=release.auth_headers()) as resp:
        assert resp.status in (202, 204), await resp.text()
    deadline = time.monotonic() + 120
    while (await hub_user(release, user))["servers"]:
        assert time.monotonic() < deadline, release.log_tails()
        await asyncio.sleep(0.5)


async def listed_services(release: ChartRelease) -> set[str]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{release.api_url}/services", headers=release.auth_headers()) as resp:
        assert resp.status == 200, await resp.text()
        return set(await resp.json())


# --- the tests ----------------------------------------------------------------------------------

async def test_values_alone_stop_the_hub_asking_for_a_login(make_local_cluster, tmp_path):
    """values.yaml without a login overlay: the chart's hub stops at once, saying what to set
    (values.yaml says to add examples/ldap-only, oidc-only or ldap-and-oidc)."""
    cluster = await make_local_cluster()
    release = ChartRelease([VALUES], {}, tmp_path / "release",
                           ClusterAccess(cluster.kubeconfig_path), NAMESPACE, start_timeout=120)
    with pytest.raises(RuntimeError) as info:
        await release.start()
    message = str(info.value)
    assert "Loading extra config: kdash.py" in message  # the chart's config ran ours
    assert "LDAPBackend.server_address is not set (or set KDashAuthenticator.enable_ldap = " \
        "False to use only OIDC)" in message


async def test_ldap_gpu_profiles_and_group_quotas(make_local_cluster, slapd_tls, tmp_path):
    """values.yaml + ldap-only + gpu-profiles + group-quotas: LDAP over StartTLS, a GPU
    flavor on a GPU node, the group quota in the user's namespace, the launcher, the culler."""
    # a CPU node, and the A100 node gpu-profiles.yaml names (its local disk holds the
    # A100 flavor's homes), tainted as GPU nodes usually are
    gpu_node = NodeSpec(name="gpu-a100-1", extended={"nvidia.com/gpu": 4}, labels={
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    cluster = await make_local_cluster(kubelet="process",
                                       node_specs=[NodeSpec(name="node-0"), gpu_node])
    await ensure_namespace(cluster, NAMESPACE)
    site, objects = ldap_site(slapd_tls)
    release = ChartRelease(
        [VALUES, EXAMPLES / "ldap-only.yaml", EXAMPLES / "gpu-profiles.yaml",
         EXAMPLES / "group-quotas.yaml"], merge(site, culler_site("datasci")),
        tmp_path / "release", ClusterAccess(cluster.kubeconfig_path), NAMESPACE, objects,
        pod_access=services_access(), observer_kubeconfig=admin_kubeconfig_of(cluster))
    async with release:
        assert {"kdash-launcher", "kdash-culler", OBSERVER} <= await listed_services(release)

        async with session() as s:
            # carol (datasci only) is not in the overlay's allowed_groups
            status, _ = await form_login(s, release.url, "carol", "carol-pw")
            assert status == 403
            # alice (gpu-users) logs in over StartTLS (the CA from hub.extraFiles, the bind
            # password from a Secret through hub.extraEnv)
            status, body = await form_login(s, release.url, "alice", "alice-pw")
            assert status == 302, body[-2000:]
            alice = await spawn(s, release, "alice", {"profile": "cpu-small"})
            assert "gpu-users" in alice["groups"]
            assert alice["servers"][""]["user_options"]["profile"] == "cpu-small"
            # values.yaml drops the chart's privileged iptables container: the user
            # namespace's NetworkPolicy is then what keeps a notebook off the cloud
            # metadata address (an ordinary user's first try at the node's credentials)
            pod = await user_pod(release, "alice")
            assert not pod.spec.init_containers
            assert not any((c.security_context and c.security_context.privileged)
                           for c in pod.spec.containers)
            assert_metadata_blocked(await user_egress(release, "alice"))
            # group-quotas: gpu-users' grant on top of the base quota
            quota = await user_quota(release, "alice")
            assert quota["requests.nvidia.com/gpu"] == "2" and quota["pods"] == "10"
            # the launcher's Deployment, through the proxy, logged in through the hub
            page = await launcher_page(s, release)
            assert "Your services" in page and "kdash-hub</title>" in page

            async with session() as s2:
                # bob (gpu-users, datasci): the culler's datasci rule stops his idle server
                status, body = await form_login(s2, release.url, "bob", "bob-pw")
                assert status == 302, body[-2000:]
                await spawn_and_wait_ready(s2, release, "bob", {"profile": "cpu-small"})
                await wait_until_culled(release, "bob")
                assert culled_by_the_culler(release, "bob")
            # alice's server, under her flavor's 8 h rule, still runs
            assert (await hub_user(release, "alice"))["servers"]

            # gpu-profiles: an A100 with one GPU, on the A100 node, its home on that node
            await stop_server(release, "alice")
            alice = await spawn(s, release, "alice",
                                {"profile": "gpu-a100", "profile-option-gpu-a100--gpus": "1"})
            assert alice["servers"][""]["user_options"]["profile"] == "gpu-a100"
            pod = await user_pod(release, "alice")
            assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
            assert pod.spec.node_selector["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
            assert pod.spec.node_name == "gpu-a100-1"


async def test_oidc_overlay(make_local_cluster, oidc_provider_factory, tmp_path):
    """values.yaml + oidc-only: the button, the code flow through the hub's curl client
    (as the chart configures tornado), a spawn and the launcher."""
    cluster = await make_local_cluster(kubelet="process")
    await ensure_namespace(cluster, NAMESPACE)
    objects = [secret("kdash-oidc-keycloak", NAMESPACE, {"client-secret": "jupyterhub-secret"})]
    release = ChartRelease([VALUES, EXAMPLES / "oidc-only.yaml"], {}, tmp_path / "release",
                           ClusterAccess(cluster.kubeconfig_path), NAMESPACE, objects,
                           pod_access=services_access(),
                           observer_kubeconfig=admin_kubeconfig_of(cluster))
    provider = oidc_provider_for(oidc_provider_factory, release, "keycloak")
    release.local_values = oidc_site(provider, "keycloak")
    async with release:
        async with session() as s:
            async with s.get(f"{release.url}/hub/login") as resp:
                assert "Example SSO" in await resp.text()
            # dave's groups (datasci) are not allowed: a 403 saying so, no user made
            _, status, body = await follow(s, f"{release.url}/hub/oauth_login/keycloak",
                                           login="dave", password="dave-idp")
            assert status == 403, body[-2000:]
            assert REFUSED_SIGN_IN in html.unescape(body)
            assert not await hub_user_exists(release, "dave")
        async with session() as s:
            url, status, body = await follow(s, f"{release.url}/hub/oauth_login/keycloak",
                                             login="alice", password="alice-idp")
            assert status == 200 and "/hub/" in url, body[-2000:]
            alice = await spawn(s, release, "alice", {"profile": "cpu-small"})
            assert "gpu-users" in alice["groups"]
            assert "Your services" in await launcher_page(s, release)


@pytest.mark.xfail(
    JUPYTERHUB_MAJOR < 6, strict=False,
    reason="JupyterHub 5.5 gives a managed service 10 tries of 1 s to answer, then exits; the "
           "launcher imports take 5 s on an idle 2-core machine (2.4 s of it jsonschema's "
           "rfc3987 grammar, pulled in by the test venv), so on a loaded one the chart's hub "
           "can exit (JupyterHub 6 waits Service.timeout, 30 s)")
async def test_ldap_and_oidc_with_the_services_in_the_hub_pod(
        make_local_cluster, slapd_tls, oidc_provider_factory, tmp_path):
    """values.yaml + ldap-and-oidc + services-in-hub-pod: both logins on one page (a
    provider's secret from a mounted Secret file), the launcher run by the hub itself."""
    cluster = await make_local_cluster(kubelet="process")
    await ensure_namespace(cluster, NAMESPACE)
    site, objects = ldap_site(slapd_tls)
    objects.append(secret("kdash-dex", NAMESPACE, {"client-secret": "jupyterhub-secret"}))
    release = ChartRelease(
        [VALUES, EXAMPLES / "ldap-and-oidc.yaml", EXAMPLES / "services-in-hub-pod.yaml"], {},
        tmp_path / "release", ClusterAccess(cluster.kubeconfig_path), NAMESPACE, objects,
        pod_access=services_access(), observer_kubeconfig=admin_kubeconfig_of(cluster))
    provider = oidc_provider_for(oidc_provider_factory, release, "campus", "github-guests")
    release.local_values = merge(site, oidc_site(provider, "campus"),
                                 oidc_site(provider, "github-guests"))
    async with release:
        assert "kdash-launcher" not in release.pods  # no Deployment: the hub runs it
        async with session() as s:
            async with s.get(f"{release.url}/hub/login") as resp:
                page = await resp.text()
            assert "Campus SSO" in page and "Guests (GitHub via Dex)" in page
            assert 'name="password"' in page
            status, body = await form_login(s, release.url, "bob", "bob-pw")
            assert status == 302, body[-2000:]
            await spawn(s, release, "bob", {"profile": "cpu-small"})
            assert "Your services" in await launcher_page(s, release)
        async with session() as s:
            url, status, body = await follow(s, f"{release.url}/hub/oauth_login/campus",
                                             login="alice", password="alice-idp")
            assert status == 200 and "/hub/" in url, body[-2000:]


async def test_a_misspelt_setting_stops_the_chart_hub_naming_it(make_local_cluster, tmp_path):
    cluster = await make_local_cluster()
    release = ChartRelease(
        [VALUES, EXAMPLES / "services-in-hub-pod.yaml"],
        {"custom": {"kdash": {"spawner": {"flavours": []}}}}, tmp_path / "release",
        ClusterAccess(cluster.kubeconfig_path), NAMESPACE, start_timeout=120)
    with pytest.raises(RuntimeError) as info:
        await release.start()
    assert "custom.kdash.spawner.flavours: unknown setting. Did you mean flavors?" in str(
        info.value)
