"""NetworkPolicies enforced on the real control plane: the nodes' agent (netpolicy.py) reads
policies, pods and namespaces with the kubelet's own node identity (RBAC:
`kdash:netpolicy-agent`, controlplane.py) and the pack's bundle policy keeps one user's pod
out of another's notebook on real connections, as on the emulator
(tests/integration/test_localcluster_netpolicy.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from kdash_hub.localcluster import netpolicy
from kdash_hub.localcluster.apiclient import KubeHTTP
from kdash_hub.localcluster.real.controlplane import RealControlPlane
from tests.fixtures.realcp import real_tier_enabled
from tests.integration.test_localcluster_netpolicy import (
    A_NS,
    B_NS,
    CONNECT,
    HUB_LABELS,
    HUB_NS,
    NOTEBOOK,
    bundle_policy,
    eventually,
    pod,
    run,
)

pytestmark = [
    pytest.mark.skipif(not real_tier_enabled(), reason="real tier only (KDASH_REAL_TIER=1)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
    pytest.mark.skipif(netpolicy.nft_binary() is None,
                       reason="nft is missing (Debian package nftables)"),
]


@pytest.fixture
async def plane(tmp_path) -> AsyncIterator[RealControlPlane]:
    control_plane = RealControlPlane(nodes=1, kubelet="process", workdir=tmp_path / "cp")
    await control_plane.start()
    try:
        yield control_plane
    finally:
        await control_plane.stop()


async def test_the_packs_policy_is_enforced_with_the_nodes_identity(plane: RealControlPlane):
    api = KubeHTTP(plane.url, None, ssl_context=plane.ssl_context("admin"))
    kubelet = plane.kubelet
    assert kubelet is not None
    agent, network = kubelet.netpolicy, kubelet.network
    assert agent is not None and agent.enforcing
    ips: dict[str, str] = {}

    async def connect(source: str | None, target: str, wait: float = 2.0) -> bool:
        prefix = [] if source is None else ["ip", "netns", "exec",
                                            network.namespace(ips[source])]
        out = await run([*prefix, "python3", "-c", CONNECT, ips[target], str(NOTEBOOK),
                         str(wait)])
        return out.startswith("OK")

    try:
        for ns in (HUB_NS, A_NS, B_NS):
            await api.request("POST", "/api/v1/namespaces", body={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        pods = {"hub": pod("hub", HUB_NS, labels=HUB_LABELS), "a1": pod("a1", A_NS),
                "b1": pod("b1", B_NS), "b2": pod("b2", B_NS),
                "fake-hub": pod("fake-hub", A_NS, labels=HUB_LABELS)}
        for body in pods.values():
            ns = body["metadata"]["namespace"]
            await api.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
        for name, body in pods.items():
            ns = body["metadata"]["namespace"]

            async def ready(name: str = name, ns: str = ns) -> bool:
                obj = await api.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
                if obj["status"].get("podIP") and "READY" in (kubelet.read_log(ns, name)
                                                              or ""):
                    ips[name] = obj["status"]["podIP"]
                    return True
                return False
            await eventually(ready, f"pod {name} serving", within=90.0)

        await eventually(lambda: connect("a1", "b1"), "a1 -> b1 before any policy")
        for username, ns in (("a", A_NS), ("b", B_NS)):
            await api.request(
                "POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                body=bundle_policy(username, ns))

        async def a1_blocked() -> bool:
            return not await connect("a1", "b1", wait=1.0)
        await eventually(a1_blocked, "the bundle policy keeps a1 out of b1")
        # the node's identity could read what it needed (no 403 on the way)
        assert len(agent.objects["policies"]) == 2, agent.last_error
        assert await connect("b2", "b1")
        assert await connect(None, "b1")
        assert await connect("hub", "b1")
        assert not await connect("fake-hub", "b1")

        for ns in (A_NS, B_NS):  # A's own policy keeps its egress to pods closed too
            await api.request(
                "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/"
                "kdash-user-pods")
        await eventually(lambda: connect("a1", "b1", wait=1.0), "a1 -> b1 once the "
                         "policies are deleted", within=15.0)
    finally:
        await api.close()
