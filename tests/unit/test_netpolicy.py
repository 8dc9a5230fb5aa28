"""NetworkPolicy -> nftables translation of the local cluster's policy agent (netpolicy.py):
Kubernetes' selection and peer semantics, then the rendered ruleset."""

from __future__ import annotations

import os
import subprocess

import pytest

from kdash_hub.localcluster.netpolicy import (
    Allow,
    PodView,
    Port,
    Rules,
    compile_rules,
    nft_binary,
    policy_types,
    render,
    selector_matches,
)
from kdash_hub.spawner.bundle import BundleSpec, network_policy

HUB_LABELS = {"hub.jupyter.org/network-access-singleuser": "true", "component": "hub"}
PODS = [
    PodView("hub", "hub", "10.244.7.2", HUB_LABELS, (("http", "TCP", 8081),)),
    PodView("user-a", "a1", "10.244.7.3", {"app": "nb"}, (("notebook", "TCP", 8888),)),
    PodView("user-a", "fake-hub", "10.244.7.4", HUB_LABELS),
    PodView("user-b", "b1", "10.244.7.5", {"app": "nb"}, (("notebook", "TCP", 9999),)),
    PodView("user-b", "b2", "10.244.7.6", {"app": "db"}),
]
NAMESPACES = {ns: {"kubernetes.io/metadata.name": ns, "team": team}
              for ns, team in (("hub", "ops"), ("user-a", "red"), ("user-b", "blue"))}


def policy(namespace: str, spec: dict, name: str = "p") -> dict:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def chain_text(script: str, name: str) -> str:
    return script.split(f"chain {name} {{")[1].split("\n  }")[0]


def ips(allows: list[Allow]) -> set[str]:
    return {ip for a in allows for ip in (a.ips or ())}


def test_label_selectors():
    labels = {"app": "nb", "tier": "x"}
    assert selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"app": "nb"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "nb", "tier": "y"}}, labels)
    expr = [{"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "env", "operator": "DoesNotExist"},
            {"key": "app", "operator": "Exists"},
            {"key": "app", "operator": "NotIn", "values": ["db"]}]
    assert selector_matches({"matchExpressions": expr}, labels)
    assert not selector_matches({"matchExpressions": expr}, {**labels, "env": "dev"})
    assert not selector_matches({"matchLabels": {"app": "nb"}, "matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["x"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}, {})


def test_policy_types_default_as_the_api_server_does():
    assert policy_types(policy("x", {"podSelector": {}})) == {"Ingress"}
    assert policy_types(policy("x", {"podSelector": {}, "egress": [{}]})) == {
        "Ingress", "Egress"}
    assert policy_types(policy("x", {"podSelector": {}, "policyTypes": ["Egress"]})) == {
        "Egress"}


def test_unselected_pods_stay_open_and_selected_ones_deny_by_default():
    rules = compile_rules([policy("user-b", {"podSelector": {"matchLabels": {"app": "nb"}},
                                             "policyTypes": ["Ingress"]})], PODS, NAMESPACES)
    assert rules.ingress == {"10.244.7.5": []}  # b1: isolated, nothing allowed
    assert rules.egress == {}
    script = render(7, "kdash-br7", rules, [], ["kdv7x"])
    assert "ip daddr vmap { 10.244.7.5 : jump in_0 }" in script
    assert "  chain in_0 {\n    drop\n  }" in script


def test_pod_selector_is_the_policys_namespace_only():
    rules = compile_rules([policy("user-b", {"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": HUB_LABELS}}]}]})], PODS, NAMESPACES)
    assert rules.ingress["10.244.7.5"] == []  # the hub-labelled pods are elsewhere


def test_namespace_and_pod_selector_together_and_apart():
    both = {"namespaceSelector": {"matchLabels": {"team": "ops"}},
            "podSelector": {"matchLabels": HUB_LABELS}}
    rules = compile_rules([policy("user-b", {"podSelector": {}, "ingress": [
        {"from": [both]}]})], PODS, NAMESPACES)
    assert ips(rules.ingress["10.244.7.5"]) == {"10.244.7.2"}  # not user-a's fake hub
    apart = [{"namespaceSelector": {"matchLabels": {"team": "ops"}}},
             {"podSelector": {"matchLabels": {"app": "db"}}}]
    rules = compile_rules([policy("user-b", {"podSelector": {}, "ingress": [
        {"from": apart}]})], PODS, NAMESPACES)
    assert ips(rules.ingress["10.244.7.5"]) == {"10.244.7.2", "10.244.7.6"}
    everyone = compile_rules([policy("user-b", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": {}}]}]})], PODS, NAMESPACES)
    assert ips(everyone.ingress["10.244.7.5"]) == {p.ip for p in PODS}


def test_policies_add_up():
    rules = compile_rules([
        policy("user-b", {"podSelector": {}, "ingress": [
            {"from": [{"podSelector": {}}]}]}, "same-ns"),
        policy("user-b", {"podSelector": {"matchLabels": {"app": "nb"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}]}, "hub"),
    ], PODS, NAMESPACES)
    assert ips(rules.ingress["10.244.7.5"]) == {"10.244.7.2", "10.244.7.5", "10.244.7.6"}
    assert ips(rules.ingress["10.244.7.6"]) == {"10.244.7.5", "10.244.7.6"}


def test_ports_protocols_ranges_and_named_ports():
    rules = compile_rules([policy("user-b", {"podSelector": {}, "ingress": [{"ports": [
        {"port": "notebook"}, {"protocol": "UDP", "port": 5000, "endPort": 5100},
        {"protocol": "SCTP"}]}]})], PODS, NAMESPACES)
    script = render(7, "kdash-br7", rules, [], ["kdv7x"])
    # b1's named port is its own 9999; b2 has none, so only the others apply to it
    b1, b2 = chain_text(script, "in_0"), chain_text(script, "in_1")
    assert "meta l4proto tcp th dport 9999 return" in b1
    assert "dport 9999" not in b2 and "dport 8888" not in b1 + b2
    for chain in (b1, b2):
        assert "meta l4proto udp th dport 5000-5100 return" in chain
        assert "meta l4proto sctp return" in chain


def test_egress_named_ports_resolve_on_each_destination():
    rules = compile_rules([policy("user-a", {"podSelector": {"matchLabels": {"app": "nb"}},
                                             "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {}}], "ports": [{"port": "notebook"}]}]})],
        PODS, NAMESPACES)
    allows = rules.egress["10.244.7.3"]
    assert {(tuple(a.ips or ()), a.ports) for a in allows} == {
        (("10.244.7.3",), (8888, 8888)), (("10.244.7.5",), (9999, 9999))}
    assert rules.ingress == {}


def test_ip_blocks_with_exceptions():
    rules = compile_rules([policy("user-b", {"podSelector": {}, "egress": [{"to": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.2.0/24"]}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}},
        {"ipBlock": {"cidr": "fd00::/8"}}]}]})], PODS, NAMESPACES)
    script = render(7, "kdash-br7", rules, [], ["kdv7x"])
    assert "ip daddr 10.0.0.0/8 ip daddr != { 10.1.0.0/16 } return" in script
    assert "ip daddr != { 169.254.169.254 } return" in script
    assert "fd00" not in script


def test_the_packs_bundle_policy():
    """What the pack's own policy lets through, pod by pod: the hub's pods in (never a user
    pod labelled like them), the user's own pods, and out only DNS, the hub API and
    addresses outside private ranges."""
    policies = [network_policy(BundleSpec(username=u, namespace=f"user-{u}",
                                          hub_namespace="hub", quota={}, limit_range={}))
                for u in ("a", "b")]
    dns = PodView("kube-system", "coredns", "10.244.7.9", {"k8s-app": "kube-dns"},
                  (("dns", "UDP", 53),))
    namespaces = {**NAMESPACES, "kube-system": {"kubernetes.io/metadata.name": "kube-system"}}
    rules = compile_rules(policies, [*PODS, dns], namespaces)
    assert ips(rules.ingress["10.244.7.5"]) == {"10.244.7.2", "10.244.7.5", "10.244.7.6"}
    assert "10.244.7.4" not in ips(rules.ingress["10.244.7.5"])
    assert "10.244.7.2" not in rules.ingress  # the hub's namespace has no policy here
    script = render(7, "kdash-br7", rules, [], ["kdv7x"])
    b1 = script.split(f"{'10.244.7.5'} : jump ")[1].split(",")[0].split(" ")[0]
    egress = chain_text(script, b1)
    # DNS only to the cluster's resolver: port 53 of other cluster addresses stays closed
    assert "ip daddr { 10.244.7.9 } meta l4proto udp th dport 53 return" in egress
    assert "\n    meta l4proto udp th dport 53 return" not in egress
    assert "ip daddr { 10.244.7.2 } meta l4proto tcp th dport 8081 return" in egress
    assert "ip daddr != { 10.0.0.0/8, 100.64.0.0/10, 169.254.169.254, 172.16.0.0/12, " \
           "192.168.0.0/16 } return" in egress


def test_a_users_allow_all_opens_only_their_own_pods():
    allow_all = policy("user-a", {"podSelector": {}, "ingress": [{}], "egress": [{}]}, "all")
    bundle_b = network_policy(BundleSpec(username="b", namespace="user-b",
                                         hub_namespace="hub", quota={}, limit_range={}))
    rules = compile_rules([allow_all, bundle_b], PODS, NAMESPACES)
    assert rules.ingress["10.244.7.3"] == [Allow()]  # A's pods: anyone
    assert not ips(rules.ingress["10.244.7.5"]) & {"10.244.7.3", "10.244.7.4"}


def test_only_targets_get_chains_and_every_veth_is_pinned():
    rules = compile_rules([policy("user-b", {"podSelector": {}})], PODS, NAMESPACES,
                          targets=["10.244.7.6"])
    assert set(rules.ingress) == {"10.244.7.6"}
    script = render(7, "kdash-br7", rules,
                    [Port("kdv7x6", "02:00:00:00:00:06", "10.244.7.6")], ["kdv7x", "kdv9x"])
    assert 'iifname "kdv7x*" jump pod_ports' in script
    assert 'iifname "kdv9x*" jump pod_ports' in script
    assert "ether type != { ip, arp } drop" in script
    assert ('iifname . ether saddr . ip saddr { "kdv7x6" . 02:00:00:00:00:06 . 10.244.7.6 }'
            in script)
    assert script.rstrip().endswith("drop\n  }\n}")
    assert script.startswith("table inet kdash_np_7\ndelete table inet kdash_np_7\n")


def test_pod_views_skip_pods_without_their_own_address():
    base = {"metadata": {"name": "x", "namespace": "n", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "web", "containerPort": 80}, {"containerPort": 81}]}]},
            "status": {"podIP": "10.244.7.9", "phase": "Running"}}
    view = PodView.of(base)
    assert view is not None and view.ports == (("web", "TCP", 80),)
    assert PodView.of({**base, "spec": {"hostNetwork": True}}) is None
    assert PodView.of({**base, "status": {"podIP": "10.244.7.9", "phase": "Succeeded"}}) is None
    assert PodView.of({**base, "status": {}}) is None
    assert PodView.of({**base, "status": {}}, ip="10.244.7.10").ip == "10.244.7.10"


@pytest.mark.skipif(os.geteuid() != 0 or nft_binary() is None,
                    reason="`nft -c` checks a ruleset with the kernel: root and nftables")
def test_the_rendered_ruleset_is_valid_nftables():
    policies = [network_policy(BundleSpec(username=u, namespace=f"user-{u}",
                                          hub_namespace="hub", quota={}, limit_range={}))
                for u in ("a", "b")]
    rules = compile_rules(policies, PODS, NAMESPACES)
    script = render(7, "kdash-br7", rules, [Port("kdv7x3", "02:00:00:00:00:03",
                                                 "10.244.7.3")], ["kdv7x"])
    done = subprocess.run([str(nft_binary()), "-c", "-f", "-"], input=script, text=True,
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr + script
    empty = render(7, "kdash-br7", Rules(), [], ["kdv7x"])
    done = subprocess.run([str(nft_binary()), "-c", "-f", "-"], input=empty, text=True,
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr + empty


async def test_without_nft_the_kubelet_says_policies_are_not_enforced(monkeypatch, caplog):
    from kdash_hub.localcluster import netpolicy
    from kdash_hub.localcluster.podnetwork import NetnsPodNetwork

    monkeypatch.setattr(netpolicy, "nft_binary", lambda: None)
    agent = netpolicy.NetworkPolicyAgent(None, NetnsPodNetwork())  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="kdash_hub.localcluster.netpolicy"):
        await agent.start()
    assert not agent.enforcing
    assert "NOT enforced" in caplog.text and "nftables" in caplog.text
    await agent.admit({"metadata": {"name": "x"}}, "10.244.7.9")  # a no-op, no error
    await agent.stop()
