"""The hub configuration the chart builds from helm-values/ starts a real hub with the pack.

`hub.config`, `hub.services`, `hub.loadRoles` and `hub.extraConfig` (the `custom.kdash`
loader) of values.yaml + examples/ldap-only.yaml become a jupyterhub_config.py the way the
chart's own config does; only what differs between the hub pod and this machine is changed
(the LDAP server and its CA, the launcher's listening address, KUBECONFIG). A real
JupyterHub + proxy then runs against the local cluster (process kubelet) and a real slapd
with StartTLS and certificate checks.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from kdash_hub.dev.hub import HubProcess
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.helm import (
    HELM_VALUES,
    helm_merge,
    hub_config_from_values,
    localize_services,
    pack_values,
)

LDAP_ONLY = HELM_VALUES / "examples" / "ldap-only.yaml"
# the services run by the hub here, as in the hub pod (values.yaml alone expects Deployments)
IN_HUB_POD = HELM_VALUES / "examples" / "services-in-hub-pod.yaml"


def local_values(slapd, kubeconfig) -> dict:
    values = pack_values(IN_HUB_POD, LDAP_ONLY)
    values = helm_merge(values, {"custom": {"kdash": {
        "authenticator": {
            "server_address": "127.0.0.1", "server_port": slapd.port,
            "tls_kwargs": {"ca_certs_file": str(slapd.tls_files.ca_cert)},
            "lookup_dn_search_password": slapd.service_password,
        },
        "spawner": {"hub_namespace": "default"},
    }}})
    localize_services(values, {"KUBECONFIG": str(kubeconfig)})
    return values


async def login(session: aiohttp.ClientSession, url: str, username: str, password: str):
    async with session.get(f"{url}/hub/login") as resp:
        page = await resp.text()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    async with session.post(f"{url}/hub/login?next=", allow_redirects=False, data={
        "username": username, "password": password, "_xsrf": xsrf,
    }) as resp:
        return resp.status, await resp.text()


async def test_values_start_a_hub_with_the_pack(make_local_cluster, slapd_tls, tmp_path):
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    values = local_values(slapd_tls, cluster.kubeconfig_path)
    hub = HubProcess(hub_config_from_values(values), tmp_path / "hub",
                     env={"KUBECONFIG": str(cluster.kubeconfig_path)})
    async with hub, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        headers = hub.auth_headers()
        async with session.get(f"{hub.api_url}/services", headers=headers) as resp:
            services = await resp.json()
        assert {"kdash-launcher", "kdash-culler"} <= set(services)

        # carol's groups (datasci) are not in allowed_groups: refused
        status, _ = await login(session, hub.url, "carol", "carol-pw")
        assert status != 302
        session.cookie_jar.clear()

        # alice (gpu-users) logs in over StartTLS, spawns the values' only flavor
        status, body = await login(session, hub.url, "alice", "alice-pw")
        assert status == 302, body
        async with session.get(f"{hub.url}/hub/spawn") as resp:
            page = await resp.text()
        xsrf = re.search(r'xsrf_token: "([^"]+)"', page).group(1)
        # the chooser shows the values' flavor (not the chart's empty singleuser.profileList)
        assert 'value="cpu-small"' in page, page[-2000:]
        async with session.post(f"{hub.url}/hub/spawn/alice",
                                data={"profile": "cpu-small", "_xsrf": xsrf}) as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 40
        while True:
            async with session.get(f"{hub.url}/user/alice/files/x"):
                pass
            async with session.get(f"{hub.url}/user/alice/api/status") as resp:
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, hub.log_tail()
            await asyncio.sleep(0.5)
        async with session.get(f"{hub.api_url}/users/alice", headers=headers) as resp:
            alice = await resp.json()
        assert set(alice["groups"]) >= {"gpu-users"}
        assert alice["servers"][""]["user_options"]["profile"] == "cpu-small"

        # the launcher answers through the proxy, logged in through the hub
        async with session.get(f"{hub.url}/services/kdash-launcher/") as resp:
            assert resp.status == 200

        # the services got their custom.kdash sections as config files
        log = hub.log_path.read_text()
        for name in ("kdash-launcher", "kdash-culler"):
            config = tmp_path / "hub" / "kdash-config" / f"{name}-config.json"
            assert config.exists() and f"--config={config}" in log
        assert '"known_profiles"' in (tmp_path / "hub" / "kdash-config" /
                                      "kdash-culler-config.json").read_text()


async def test_a_misspelt_setting_stops_the_hub_naming_it(tmp_path):
    values = pack_values(IN_HUB_POD, LDAP_ONLY)
    values = helm_merge(values, {"custom": {"kdash": {"spawner": {"flavours": []}}}})
    localize_services(values, {})
    hub = HubProcess(hub_config_from_values(values), tmp_path / "hub", start_timeout=40)
    with pytest.raises(RuntimeError) as info:
        await hub.start()
    message = str(info.value)
    assert "custom.kdash.spawner.flavours: unknown setting. Did you mean flavors?" in message
