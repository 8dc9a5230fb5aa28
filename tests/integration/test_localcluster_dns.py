"""Cluster DNS for process pods (clusterdns.py): a pod reaches a Service of its namespace by
its short name and its FQDN, as on a real cluster, through its own resolv.conf.

Real pod processes in network namespaces resolve with the C library (getaddrinfo) and
connect. The Service is the kind the launcher makes (a selector over the instance's pods).
Checked: unknown names are NXDOMAIN, names outside cluster.local get no answer (nothing is
forwarded), a pod of another namespace resolves the name but the pack's NetworkPolicy
still keeps it out. Attacks kept as tests: a query whose labels would walk the API path
(`..`), a query for another namespace's Secret-like path, a forged response sent to the
responder. Runs on the emulator and, with KDASH_REAL_TIER=1, on a real control plane
(the kubelet reads Services with its node identity only)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kdash_hub.localcluster import LocalCluster, clusterdns, netpolicy
from kdash_hub.localcluster.apiclient import ApiError, KubeHTTP
from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from kdash_hub.spawner.bundle import BundleSpec, network_policy
from tests.fixtures.polling import eventually
from tests.fixtures.realcp import real_tier_enabled

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces need root"),
    pytest.mark.skipif(netpolicy.nft_binary() is None,
                       reason="nft is missing (Debian package nftables)"),
]

A_NS, B_NS, HUB_NS = "dns-a", "dns-b", "dns-hub"
PORT = 8888

# a side service: answers "pong" on PORT
SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", PORT)); s.listen(16)
print("READY", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"pong\\n"); c.close()
""".replace("PORT", str(PORT))

# a notebook's code: resolve each name with the C library, connect to it
CLIENT = """
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        infos = socket.getaddrinfo(name, PORT, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as e:
        out[name] = {"error": e.errno}
        continue
    try:
        c = socket.create_connection((name, PORT), timeout=2)
        ok = c.recv(16).startswith(b"pong")
    except OSError:
        ok = False
    out[name] = {"addrs": sorted({i[4][0] for i in infos}), "connect": ok}
print("RESULT " + json.dumps(out), flush=True)
""".replace("PORT", str(PORT))

NAMES = ["web", f"web.{A_NS}", f"web.{A_NS}.svc.cluster.local", "nope", "example.com",
         f"kubernetes.default.svc.cluster.local.{A_NS}"]


@dataclass
class Plane:
    api: KubeHTTP
    kubelet: Any
    real: bool


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    """Emulator (fast tier) or the real control plane (KDASH_REAL_TIER=1), one node, process
    kubelet, pods in network namespaces."""
    if real_tier_enabled():
        from kdash_hub.localcluster.real.controlplane import RealControlPlane

        cluster: Any = RealControlPlane(nodes=1, kubelet="process", workdir=tmp_path / "cp")
    else:
        cluster = LocalCluster(kubelet="process", pod_network="netns",
                               kubeconfig_path=tmp_path / "kubeconfig",
                               workdir=tmp_path / "cluster")
    await cluster.start()
    api = client_for(cluster.kubeconfig_path)
    try:
        yield Plane(api, cluster.kubelet, real=real_tier_enabled())
    finally:
        await api.close()
        await cluster.stop()


def pod(name: str, namespace: str, argv: list[str], labels: dict | None = None,
        uid: int = 2001) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never", "securityContext": {"runAsUser": uid},
                     "containers": [{"name": "main", "image": "python",
                                     "command": argv,
                                     "ports": [{"name": "web", "containerPort": PORT}]}]}}


def service(name: str, namespace: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector, "ports": [{"port": PORT, "targetPort": PORT}]}}


async def create(api: KubeHTTP, path: str, body: dict) -> None:
    """POST, retried while a fresh namespace's default ServiceAccount isn't there yet."""
    async def done() -> bool:
        try:
            await api.request("POST", path, body=body)
        except ApiError as e:
            if e.status == 409:
                return True
            if e.status == 403 and "serviceaccount" in str(e).lower():
                return False
            raise
        return True
    await eventually(done, f"create {path}")


async def run_client(plane: Plane, name: str, namespace: str, names: list[str],
                     uid: int = 2001) -> dict:
    """A pod that resolves and connects to `names`; its findings."""
    await create(plane.api, f"/api/v1/namespaces/{namespace}/pods",
                 pod(name, namespace, ["python3", "-c", CLIENT, *names], uid=uid))
    found: dict = {}

    async def finished() -> bool:
        log = plane.kubelet.read_log(namespace, name) or ""
        for line in log.splitlines():
            if "RESULT " in line:
                found.update(json.loads(line.split("RESULT ", 1)[1]))
                return True
        return False
    await eventually(finished, f"pod {namespace}/{name} done", within=60)
    return found


def query(name: str | list[bytes], qtype: int = clusterdns.A, ident: int = 0x1234) -> bytes:
    """A query for `name` (or for these raw labels, dots and slashes included)."""
    parts = name if isinstance(name, list) else name.encode().split(b".")
    labels = b"".join(bytes([len(x)]) + x for x in parts if x)
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(
        "!HH", qtype, 1)


async def ask(server: str, message: bytes, tcp: bool = False) -> tuple[int, list[str], int]:
    """(rcode, A addresses, flags) of one query sent to `server`:53 (off the event loop,
    which serves the emulator's cluster DNS)."""
    return await asyncio.to_thread(ask_now, server, message, tcp)


def ask_now(server: str, message: bytes, tcp: bool = False) -> tuple[int, list[str], int]:
    if tcp:
        with socket.create_connection((server, 53), timeout=3) as s:
            s.sendall(struct.pack("!H", len(message)) + message)
            length = struct.unpack("!H", s.recv(2))[0]
            data = b""
            while len(data) < length:
                data += s.recv(length - len(data))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(message, (server, 53))
            data = s.recv(4096)
    ident, flags, _, ancount = struct.unpack("!HHHH", data[:8])
    assert ident == struct.unpack("!H", message[:2])[0]
    offset = 12
    while data[offset]:
        offset += data[offset] + 1
    offset += 5
    addresses = []
    for _ in range(ancount):
        rtype, _, _, length = struct.unpack("!HHIH", data[offset + 2:offset + 12])
        if rtype == clusterdns.A:
            addresses.append(socket.inet_ntoa(data[offset + 12:offset + 12 + length]))
        offset += 12 + length
    return flags & 0xF, sorted(addresses), flags


async def test_pods_reach_a_service_by_name_and_policies_still_apply(plane: Plane):
    api, kubelet = plane.api, plane.kubelet
    assert kubelet.dns is not None, "the kubelet runs no cluster DNS"
    for ns in (A_NS, B_NS, HUB_NS):
        await create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns}})
    # user A's namespace has the pack's own NetworkPolicy (B's pods are kept out)
    policy = network_policy(BundleSpec(username="a", namespace=A_NS, hub_namespace=HUB_NS,
                                       quota={}, limit_range={}))
    await create(api, f"/apis/networking.k8s.io/v1/namespaces/{A_NS}/networkpolicies", policy)
    await create(api, f"/api/v1/namespaces/{A_NS}/services",
                 service("web", A_NS, {"app": "web"}))
    await create(api, f"/api/v1/namespaces/{A_NS}/pods",
                 pod("web-0", A_NS, ["python3", "-c", SERVER], {"app": "web"}))
    web_ip = ""

    async def serving() -> bool:
        nonlocal web_ip
        obj = await api.request("GET", f"/api/v1/namespaces/{A_NS}/pods/web-0")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in obj["status"].get("conditions") or [])
        web_ip = obj["status"].get("podIP") or ""
        return ready and "READY" in (kubelet.read_log(A_NS, "web-0") or "")
    await eventually(serving, "the web pod serving", within=60)
    assert web_ip.startswith("10.244.")

    # a pod of the same namespace: short name, namespace-qualified and FQDN all work
    mine = await run_client(plane, "client", A_NS, NAMES)
    for name in NAMES[:3]:
        assert mine[name] == {"addrs": [web_ip], "connect": True}, (name, mine)
    assert mine["nope"] == {"error": socket.EAI_NONAME}, mine
    assert mine["example.com"] == {"error": socket.EAI_NONAME}, mine  # nothing forwarded
    assert mine[NAMES[5]] == {"error": socket.EAI_NONAME}, mine
    # a root pod (no masked directories) gets the pod's resolv.conf too
    as_root = await run_client(plane, "root-client", A_NS, ["web"], uid=0)
    assert as_root["web"] == {"addrs": [web_ip], "connect": True}, as_root

    # another user's pod resolves the name (DNS is not isolation) but can't connect
    theirs = await run_client(plane, "intruder", B_NS, [f"web.{A_NS}", "web"])
    assert theirs[f"web.{A_NS}"] == {"addrs": [web_ip], "connect": False}, theirs
    assert theirs["web"] == {"error": socket.EAI_NONAME}, theirs  # B has no "web"

    # the responder itself, asked from the node
    server = kubelet.network.node_address(web_ip)
    assert kubelet.dns.addresses == [server]
    fqdn = f"web.{A_NS}.svc.cluster.local"
    assert (await ask(server, query(fqdn)))[:2] == (clusterdns.NOERROR, [web_ip])
    assert (await ask(server, query(fqdn), tcp=True))[:2] == (clusterdns.NOERROR, [web_ip])
    rcode, addresses, flags = (await ask(server, query(fqdn, clusterdns.AAAA)))
    assert (rcode, addresses) == (clusterdns.NOERROR, [])  # IPv4 only: no data
    assert flags & 0x0400  # authoritative
    assert (await ask(server, query(f"gone.{A_NS}.svc.cluster.local")))[0] == clusterdns.NXDOMAIN
    rcode, addresses, flags = (await ask(server, query("www.example.com")))
    assert (rcode, addresses) == (clusterdns.NXDOMAIN, [])  # never forwarded
    assert not flags & 0x0400 and not flags & 0x0080  # not ours, and no recursion offered
    # labels that would walk the API path are refused before any request is made
    looked_up: list[tuple[str, str]] = []
    original = kubelet.dns.service_addresses

    async def recording(namespace: str, name: str) -> list[str] | None:
        looked_up.append((namespace, name))
        return await original(namespace, name)
    kubelet.dns.service_addresses = recording
    zone = [b"svc", b"cluster", b"local"]
    for labels in ([b"..", A_NS.encode()], [b"web", b"default/secrets/x"],
                   [b"x", b".."], [b"web", b"DNS-A\x00"], [b"a" * 63, b"b" * 63]):
        assert (await ask(server, query(labels + zone)))[0] == clusterdns.NXDOMAIN, labels
    assert looked_up == [("b" * 63, "a" * 63)]  # only the well-formed name reached the API

    # a flood of queries from a pod doesn't become a flood of API requests: every lookup is
    # held until the flood is in, so however fast the machine answers, the cap is met
    busy, peak = 0, 0
    release = asyncio.Event()

    async def slow(namespace: str, name: str) -> list[str] | None:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        try:
            await release.wait()
            return await original(namespace, name)
        finally:
            busy -= 1
    kubelet.dns.service_addresses = slow

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(400):
                s.sendto(query(f"x{i}.{A_NS}.svc.cluster.local", ident=i), (server, 53))
    try:
        await asyncio.to_thread(flood)
        await eventually(lambda: asyncio.sleep(0, kubelet.dns.dropped > 0),
                         "queries over the cap dropped")
    finally:
        release.set()
    await eventually(lambda: asyncio.sleep(0, busy == 0), "the held lookups answered")
    assert 0 < peak <= clusterdns.MAX_IN_FLIGHT, peak
    kubelet.dns.service_addresses = original
    assert (await ask(server, query(fqdn)))[:2] == (clusterdns.NOERROR, [web_ip])

    # a forged answer sent to the responder is dropped, not answered (no reflection loop)
    def forged_gets_no_reply() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            forged = bytearray(query(fqdn))
            forged[2] |= 0x80
            s.sendto(bytes(forged), (server, 53))
            try:
                s.recv(512)
            except TimeoutError:
                return True
        return False
    assert await asyncio.to_thread(forged_gets_no_reply)

    # the pod gone: its name is still the Service's, with no address (not an old one)
    await api.request("DELETE", f"/api/v1/namespaces/{A_NS}/pods/web-0",
                      params={"gracePeriodSeconds": "0"})

    async def no_address() -> bool:
        return (await ask(server, query(fqdn)))[:2] == (clusterdns.NOERROR, [])
    await eventually(no_address, "the deleted pod's address withdrawn", within=30)
