"""NetworkPolicies are enforced on pods in network namespaces (netpolicy.py), with real TCP
and UDP traffic between real pod processes of two users' namespaces on the local cluster.

The policy under test is the pack's own (spawner/bundle.py's `network_policy`). Attacks kept
as tests: a user's pod labelled like the hub, a user's allow-all policy in their own
namespace, and a pod sending with another pod's source address."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import netpolicy, podnetwork
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from kdash_hub.spawner.bundle import BundleSpec, network_policy
from tests.fixtures.cluster import api_client_for, requires_emulator
from tests.fixtures.polling import eventually

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root"),
    pytest.mark.skipif(netpolicy.nft_binary() is None,
                       reason="nft is missing (Debian package nftables)"),
]

HUB_NS, A_NS, B_NS = "np-hub", "np-user-a", "np-user-b"
NOTEBOOK, HUB_API, UDP_PORT = 8888, 8081, 8889
HUB_LABELS = {"hub.jupyter.org/network-access-singleuser": "true", "component": "hub"}

# a pod's "notebook": answers "pong" on each TCP port given, prints UDP datagrams it gets
SERVER = """
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"pong\\n"); c.close()
for port in sys.argv[1:]:
    threading.Thread(target=tcp, args=(int(port),), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", UDP_PORT))
print("READY", flush=True)
while True:
    data, addr = u.recvfrom(2048)
    print("UDP", data.decode(), addr[0], flush=True)
""".replace("UDP_PORT", str(UDP_PORT))

CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print("OK" if c.recv(16).startswith(b"pong") else "NO")
except OSError as e:
    print("NO", type(e).__name__)
"""

SEND_UDP = """
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[4] != "-":
    u.bind((sys.argv[4], 0))
for _ in range(5):
    u.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


def pod(name: str, namespace: str, ports: tuple[int, ...] = (NOTEBOOK,),
        labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never",
                     "securityContext": {"runAsUser": 2001},
                     "containers": [{
                         "name": "main", "image": "python",
                         "command": ["python", "-c", SERVER, *map(str, ports)],
                         "ports": [{"name": "notebook", "containerPort": NOTEBOOK}]}]}}


async def run(argv: list[str], limit: float = 30) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), limit)
    return out.decode()


def bundle_policy(username: str, namespace: str) -> dict:
    """The pack's own NetworkPolicy of a user namespace, as the spawner writes it."""
    return network_policy(BundleSpec(username=username, namespace=namespace,
                                     hub_namespace=HUB_NS, quota={}, limit_range={},
                                     hub_api_port=HUB_API))


async def test_the_packs_policy_keeps_users_apart_on_real_connections(make_local_cluster):
    cluster = await make_local_cluster(kubelet="process", pod_network="netns")
    requires_emulator(cluster)
    agent = cluster.kubelet.netpolicy
    assert agent is not None and agent.enforcing
    network = cluster.kubelet.network
    ips: dict[str, str] = {}

    async def connect(source: str | None, target: str, port: int = NOTEBOOK,
                      wait: float = 2.0) -> bool:
        """A TCP connection from pod `source`'s network namespace (None: the host)."""
        prefix = [] if source is None else ["ip", "netns", "exec",
                                            network.namespace(ips[source])]
        out = await run([*prefix, "python3", "-c", CONNECT, ips[target], str(port),
                         str(wait)])
        return out.startswith("OK")

    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        for ns in (HUB_NS, A_NS, B_NS):
            await kube.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": ns}})
        pods = {"hub": pod("hub", HUB_NS, (NOTEBOOK, HUB_API), HUB_LABELS),
                "a1": pod("a1", A_NS), "b1": pod("b1", B_NS), "b2": pod("b2", B_NS),
                # user A's pod dressed up as the hub
                "fake-hub": pod("fake-hub", A_NS, labels=HUB_LABELS)}
        for body in pods.values():
            await kube.create(body)
        for name, body in pods.items():
            ns = body["metadata"]["namespace"]

            async def ready(name: str = name, ns: str = ns) -> bool:
                obj = await kube.get("Pod", name, ns)
                log = cluster.kubelet.read_log(ns, name) or ""
                if obj and obj["status"].get("podIP") and "READY" in log:
                    ips[name] = obj["status"]["podIP"]
                    return True
                return False
            await eventually(ready, f"pod {name} serving")

        # no policy yet: everybody reaches everybody
        await eventually(lambda: connect("a1", "b1"), "a1 -> b1 before any policy")
        assert await connect("b1", "a1")

        for username, ns in (("a", A_NS), ("b", B_NS)):
            await kube.create(bundle_policy(username, ns))

        async def a1_blocked() -> bool:
            return not await connect("a1", "b1", wait=1.0)
        await eventually(a1_blocked, "the bundle policy keeps a1 out of b1")

        assert await connect("b2", "b1"), "B's own pods reach B's notebook"
        assert await connect(None, "b1"), "the host (hub, proxy, probes) reaches pods"
        assert await connect("hub", "b1"), "the hub's pods reach notebooks"
        assert not await connect("fake-hub", "b1"), "a user pod labelled as the hub"
        assert not await connect("b1", "a1")
        # egress: the hub API port of the hub's pods, nothing else of them
        assert await connect("b1", "hub", HUB_API)
        assert not await connect("b1", "hub", NOTEBOOK)

        # user A opens their own namespace to everybody: their pods, not B's, open up
        assert not await connect("a1", "hub", NOTEBOOK), "A's egress, before"
        await kube.create({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "allow-all", "namespace": A_NS},
                           "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}],
                                    "policyTypes": ["Ingress", "Egress"]}})
        await eventually(lambda: connect("a1", "hub", NOTEBOOK), "A's allow-all egress")
        assert not await connect("b2", "a1"), "B's egress still forbids other users' pods"
        assert not await connect("a1", "b1"), "B's ingress still keeps A out"
        assert not await connect("fake-hub", "b1")

        # IPv6 link-local between pods would pass by every IPv4 rule: dropped at the veth
        # (b1 listens on IPv4 only: reaching its stack at all would be a refusal)
        b1_ns = network.namespace(ips["b1"])
        addrs = json.loads(await run(["ip", "-n", b1_ns, "-6", "-j", "addr", "show", "eth0"]))
        link_local = next(a["local"] for a in addrs[0]["addr_info"]
                          if a["local"].startswith("fe80"))
        out = await run(["ip", "netns", "exec", network.namespace(ips["a1"]), "python3", "-c",
                         CONNECT, f"{link_local}%eth0", str(NOTEBOOK), "2"])
        assert out.startswith("NO") and "Refused" not in out, out

        # a pod sending with another pod's address: dropped at its veth
        a1_ns = network.namespace(ips["a1"])
        await run(["ip", "-n", a1_ns, "addr", "add", f"{ips['b2']}/32", "dev", "eth0"])
        await run(["ip", "netns", "exec", a1_ns, "python3", "-c", SEND_UDP, ips["b1"],
                   str(UDP_PORT), "spoofed", ips["b2"]])
        b2_ns = network.namespace(ips["b2"])
        await run(["ip", "netns", "exec", b2_ns, "python3", "-c", SEND_UDP, ips["b1"],
                   str(UDP_PORT), "legit", "-"])

        async def legit_arrived() -> bool:
            return "UDP legit" in (cluster.kubelet.read_log(B_NS, "b1") or "")
        await eventually(legit_arrived, "b2's datagram reaches b1")
        assert "spoofed" not in (cluster.kubelet.read_log(B_NS, "b1") or "")

        # the policy goes: A reaches B again, within seconds
        await kube.delete("NetworkPolicy", "kdash-user-pods", B_NS)
        await eventually(lambda: connect("a1", "b1", wait=1.0), "a1 -> b1 once B's "
                         "policy is deleted", within=15.0)

    block = network.block
    await cluster.stop()
    tables = await run(["nft", "list", "tables"])
    assert netpolicy.table_name(block) not in tables.split(), tables
    assert podnetwork.namespaces(block) == []


def test_a_killed_kubelets_tables_are_swept():
    """A kubelet killed -9 leaves its tables; the next one sweeps them with its bridge."""
    block = next(r for r in range(254, 1, -1) if r not in podnetwork._blocks_in_use())
    dead = subprocess.Popen(["true"])
    dead.wait()
    podnetwork.STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    (podnetwork.STATE_DIR / str(block)).write_text(str(dead.pid))
    name = netpolicy.table_name(block)
    script = netpolicy.render(block, f"kdash-br{block}", netpolicy.Rules(), [],
                              [f"kdv{block}x"])
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
    assert name in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                  text=True).stdout
    assert block in podnetwork.sweep_dead()
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert name not in tables.split(), tables
