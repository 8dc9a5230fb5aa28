"""The cluster DNS responder's parts that need no network (clusterdns.py): the pod's
resolv.conf (a pod's dnsConfig can't add lines), the wire format's edge cases, and when
there is no responder at all. The responder answering real pods is
tests/integration/test_localcluster_dns.py."""

from __future__ import annotations

import struct

from kdash_hub.localcluster import clusterdns


def query(name: str) -> bytes:
    labels = b"".join(bytes([len(x)]) + x for x in name.encode().split(b"."))
    return struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"


def test_resolv_conf_follows_dns_policy_and_drops_injected_lines():
    base = {"metadata": {"namespace": "ns"}, "spec": {}}
    text = clusterdns.resolv_conf(base, "10.244.7.1")
    assert text is not None
    assert "nameserver 10.244.7.1\n" in text
    assert "search ns.svc.cluster.local svc.cluster.local cluster.local\n" in text
    assert "options ndots:5\n" in text
    assert clusterdns.resolv_conf({**base, "spec": {"dnsPolicy": "Default"}}, "x") is None
    hostile = {**base, "spec": {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["10.244.7.9", "1.1.1.1\nnameserver 9.9.9.9", "no"],
        "searches": ["corp.example", "bad\nline"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "x\ny"}]}}}
    text = clusterdns.resolv_conf(hostile, "10.244.7.1")
    assert text is not None
    assert "10.244.7.1" not in text  # policy None: only the pod's own
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("nameserver")] == [
        "nameserver 10.244.7.9"]
    assert "search corp.example" in lines
    assert "options ndots:2" in lines
    assert not any("9.9.9.9" in line or "bad" in line or "x" == line for line in lines)


async def test_wire_format_edge_cases():
    """Malformed queries get FORMERR (or nothing), oversized answers are truncated for UDP."""
    dns = clusterdns.ClusterDNS(None, lambda: [])  # type: ignore[arg-type]
    assert await dns.answer(b"\x00\x01", 512) is None  # not even a header
    compressed = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
    reply = await dns.answer(compressed, 512)
    assert reply is not None and reply[3] & 0xF == clusterdns.FORMERR
    many = [f"10.244.9.{i}" for i in range(2, 200)]
    message = query("web.ns.svc.cluster.local")
    _, _, _, _, _, end = clusterdns.parse_query(message)
    full = clusterdns.build_response(message, end, clusterdns.NOERROR, many)
    cut = clusterdns.build_response(message, end, clusterdns.NOERROR, many, limit=512)
    assert len(cut) <= 512 < len(full)
    assert cut[2] & 0x02  # TC: ask again over TCP
    assert not full[2] & 0x02


def test_no_dns_without_network_namespaces():
    from kdash_hub.localcluster.nodes import PodNetwork

    assert clusterdns.dns_for(PodNetwork(), None, list) is None  # type: ignore[arg-type]


def test_a_service_answers_with_its_ready_pods_of_its_namespace_only():
    def pod(name, ns="a", labels=None, ip="10.244.1.2", ready=True, phase="Running", **meta):
        return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "db"},
                             **meta},
                "status": {"phase": phase, "podIP": ip, "conditions": [
                    {"type": "Ready", "status": "True" if ready else "False"}]}}
    pods = [pod("ok", ip="10.244.1.2"), pod("other-ns", ns="b", ip="10.244.1.3"),
            pod("other-app", labels={"app": "web"}, ip="10.244.1.4"),
            pod("unready", ready=False, ip="10.244.1.5"),
            pod("leaving", ip="10.244.1.6", deletionTimestamp="2026-01-01T00:00:00Z"),
            pod("done", phase="Succeeded", ip="10.244.1.7"), pod("no-ip", ip="")]
    svc = {"metadata": {"name": "db", "namespace": "a"}, "spec": {"selector": {"app": "db"}}}
    assert clusterdns.service_pod_addresses(svc, pods) == ["10.244.1.2"]
    svc["spec"]["publishNotReadyAddresses"] = True
    assert clusterdns.service_pod_addresses(svc, pods) == ["10.244.1.2", "10.244.1.5"]
    endpoints = {"subsets": [{"addresses": [{"ip": "10.244.1.8"}],
                              "notReadyAddresses": [{"ip": "10.244.1.9"}]}]}
    assert clusterdns.endpoints_addresses(endpoints) == ["10.244.1.8"]
    assert clusterdns.endpoints_addresses(endpoints, True) == ["10.244.1.8", "10.244.1.9"]
