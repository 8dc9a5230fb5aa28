"""Finding 8, end to end: a user named like another user's escaped or shortened name.

A real JupyterHub + configurable-http-proxy with KDashSpawner, on the local cluster in
process mode (each notebook pod is a real jupyterhub-singleuser). In 0.1 the user `a.b` had
the namespace `kdash-a-b-<hash>`, and a user who picked the name `a-b-<hash>` got the same
one: the spawner's owner check then refused whoever came second, for good. Here each pair
spawns in both orders; both users must get servers, in distinct namespaces owned by each,
and the first must still start again after the second has started.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import aiohttp
import pytest

from kdash_hub import labels as L
from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from kdash_hub.naming import readable_label, user_namespace
from tests.fixtures.cluster import api_client_for
from tests.fixtures.spawner import hub_config


def old_escaped(name: str) -> str:
    """What 0.1 made of `name` (without the prefix): the attacker's chosen username."""
    return readable_label("kdash-" + name).removeprefix("kdash-")


def new_escaped(name: str) -> str:
    """What `name` becomes now (without the prefix)."""
    return user_namespace(name).removeprefix("kdash-")


# per kind of pair, one victim for each order (every pair meets for the first time); the
# attacker's username is the victim's escaped/shortened form, under 0.1's rule or the new one
VICTIMS = {
    "0.1-escaped": ("a.b", "a.c"),
    "escaped": ("c.d", "c.e"),
    "0.1-shortened": ("l" * 70, "n" * 70),
    "shortened": ("m" * 70, "o" * 70),
}
ORDERS = ("attacker-first", "victim-first")


def pair(kind: str, order: str) -> tuple[str, str]:
    victim = VICTIMS[kind][ORDERS.index(order)]
    return victim, old_escaped(victim) if kind.startswith("0.1") else new_escaped(victim)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("names-hub")
    cluster = LocalCluster(kubelet="process", kubeconfig_path=workdir / "kubeconfig",
                           workdir=workdir / "nodes")
    cluster.start_in_thread()
    # generous timeouts: eight notebook processes start at once on a shared machine
    hub = HubProcess(hub_config(start_timeout=240), workdir / "hub",
                     env={"KUBECONFIG": str(workdir / "kubeconfig")})
    try:
        asyncio.run(hub.start())
        yield hub, workdir / "kubeconfig"
    finally:
        hub.stop_sync()
        cluster.stop_thread()


async def api(hub: HubProcess, method: str, path: str, body=None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.request(
            method, f"{hub.api_url}{path}", json=body, headers=hub.auth_headers()) as r:
        return r.status, await r.text()


async def spawn(hub: HubProcess, name: str, limit: float = 300) -> dict:
    """Start `name`'s default server through the REST API and wait until it is ready."""
    path = f"/users/{quote(name, safe='')}"
    status, text = await api(hub, "POST", f"{path}/server", {"profile": "cpu-small"})
    assert status in (201, 202), (name, status, text, hub.log_tail(40))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        _, text = await api(hub, "GET", path)
        server = (json.loads(text).get("servers") or {}).get("")
        if server and server.get("ready"):
            return server
        if not server:  # the spawn failed: the hub dropped the pending server
            raise AssertionError(f"{name}'s spawn failed:\n{hub.log_tail(40)}")
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name}'s server not ready:\n{hub.log_tail(40)}")


async def stop(hub: HubProcess, name: str) -> None:
    path = f"/users/{quote(name, safe='')}"
    status, text = await api(hub, "DELETE", f"{path}/server")
    assert status in (202, 204), text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, text = await api(hub, "GET", path)
        if not (json.loads(text).get("servers") or {}):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name}'s server did not stop")


async def test_both_users_of_every_pair_spawn_in_namespaces_of_their_own(hub):
    """All pairs at once, in three phases (each phase's spawns run concurrently): the first
    of every pair, then the second, then the 0.1 pairs' firsts again."""
    hub_process, kubeconfig = hub
    pairs = {(kind, order): pair(kind, order) for kind in VICTIMS for order in ORDERS}
    firsts, seconds = [], []
    for (kind, order), (victim, attacker) in pairs.items():
        assert attacker != victim
        if kind.startswith("0.1"):  # the pair that collided in 0.1
            assert readable_label("kdash-" + attacker) == readable_label("kdash-" + victim)
        first, second = (attacker, victim) if order == "attacker-first" else (victim, attacker)
        firsts.append(first)
        seconds.append(second)
    for name in firsts + seconds:
        status, text = await api(hub_process, "POST", f"/users/{quote(name, safe='')}")
        assert status == 201, (name, text)

    async def phase(names: list[str]) -> None:
        await asyncio.gather(*(spawn(hub_process, n) for n in names))
        await asyncio.gather(*(stop(hub_process, n) for n in names))

    await phase(firsts)
    await phase(seconds)  # 0.1: "Namespace ... belongs to another user" (409)
    again = [f for (kind, _), f in zip(pairs, firsts, strict=True) if kind.startswith("0.1")]
    await phase(again)  # the firsts are not locked out either
    async with api_client_for(kubeconfig) as client:
        kube = KubeResources(client)
        for name in firsts + seconds:
            namespace = user_namespace(name)
            ns = await kube.get("Namespace", namespace)
            assert ns is not None and L.is_owned_by(ns, name), (name, namespace)
    namespaces = {user_namespace(n) for n in firsts + seconds}
    assert len(namespaces) == len(firsts + seconds) == 16
