"""The namespace bundle's objects: names, quota merge, network policy, RBAC, all valid."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress

import pytest

from kdash_hub import labels as L
from kdash_hub.naming import is_dns1123_label, user_namespace
from kdash_hub.spawner import bundle, quotas
from kdash_hub.spawner.drift import DriftWatch
from tests.fixtures.spawner import validate

SERVICE_ROLES = {"kdash-launcher-namespace": "kdash-launcher",
                 "kdash-culler-namespace": "jhub/kdash-culler"}
AWKWARD = ["alice", "Ünïcode", "ünïcode", "a.b", "a-b", "A_B", "a_b", "ab", "AB", "x" * 100,
           "x" * 99 + "y", "user@example.org", "-lead", "trail-"]


def spec(username: str = "alice", **kw) -> bundle.BundleSpec:
    defaults = dict(
        username=username, namespace=user_namespace(username), hub_namespace="jhub",
        quota={"requests.cpu": "4", "limits.memory": "8Gi", "requests.nvidia.com/gpu": "1",
               "pods": "10", "persistentvolumeclaims": "5", "requests.storage": "50Gi"},
        limit_range={"default": {"cpu": "1", "memory": "1Gi"},
                     "defaultRequest": {"cpu": "100m", "memory": "128Mi"}},
    )
    defaults.update(kw)
    return bundle.BundleSpec(**defaults)


def test_user_namespaces_are_valid_distinct_and_stable():
    names = [user_namespace(u) for u in AWKWARD]
    assert all(is_dns1123_label(n) and len(n) <= 63 for n in names), names
    assert len(set(names)) == len(AWKWARD)
    assert names == [user_namespace(u) for u in AWKWARD]
    assert user_namespace("alice") == "kdash-alice"  # valid names are kept as they are


@pytest.mark.parametrize("username", AWKWARD)
def test_every_bundle_object_is_valid_and_labelled(username):
    s = spec(username, pull_secrets=[{
        "metadata": {"name": "registry", "namespace": "jhub"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}])
    s = dataclasses.replace(s, hub_role="kdash-hub-namespace", service_roles=SERVICE_ROLES)
    objects = [bundle.namespace(s, "abc")] + bundle.bundle_objects(s)
    assert [o["kind"] for o in objects] == [
        "Namespace", "RoleBinding", "RoleBinding", "RoleBinding", "ResourceQuota",
        "LimitRange", "NetworkPolicy", "ServiceAccount", "RoleBinding", "Secret"]
    for obj in objects:
        validate(obj)
        assert L.is_owned_by(obj, username)
        assert not L.is_owned_by(obj, username + "x")
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == s.namespace


def test_quota_and_limit_range_contents():
    s = spec()
    quota = bundle.resource_quota(s)
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "1"
    assert quota["spec"]["hard"]["persistentvolumeclaims"] == "5"
    limits = bundle.limit_range(s)["spec"]["limits"][0]
    assert limits["type"] == "Container"
    assert limits["default"] == {"cpu": "1", "memory": "1Gi"}
    assert limits["defaultRequest"] == {"cpu": "100m", "memory": "128Mi"}


def test_network_policy_admits_only_hub_and_proxy_and_own_namespace():
    pol = bundle.network_policy(spec())["spec"]
    assert pol["podSelector"] == {} and set(pol["policyTypes"]) == {"Ingress", "Egress"}
    peers = pol["ingress"][0]["from"]
    assert peers[0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}},
        "podSelector": {"matchLabels": {"hub.jupyter.org/network-access-singleuser": "true"}},
    }
    assert peers[1] == {"podSelector": {}}  # same namespace only (no namespaceSelector)
    # no peer selects other namespaces wholesale
    assert not any(p.get("namespaceSelector") == {} for p in peers)
    custom = bundle.network_policy(spec(egress=[{"ports": [{"port": 443}]}]))["spec"]
    assert custom["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}]}]
    closed = bundle.network_policy(spec(allow_same_namespace=False, egress=[]))["spec"]
    assert len(closed["ingress"][0]["from"]) == 1 and closed["egress"] == []
    assert all(p.get("protocol") for rule in pol["egress"] for p in rule.get("ports", []))


def _allowed_by(egress: list[dict], address: str, port: int, protocol: str = "TCP") -> bool:
    """Would a packet to `address:port` (outside the cluster's pod selectors) pass?"""
    ip = ipaddress.ip_address(address)
    for rule in egress:
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol
                             for p in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            block = peer.get("ipBlock")
            if block and ip in ipaddress.ip_network(block["cidr"]) and not any(
                    ip in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_default_egress_allows_dns_hub_and_internet_but_not_the_cluster_or_metadata():
    egress = bundle.network_policy(spec())["spec"]["egress"]
    assert egress[0] == {"to": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert egress[1] == {"to": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jhub"}},
        "podSelector": {"matchLabels": {"component": "hub"}}}],
        "ports": [{"protocol": "TCP", "port": 8081}]}
    assert {"to": [{"podSelector": {}}]} in egress  # the user's own side services
    assert _allowed_by(egress, "1.1.1.1", 443) and _allowed_by(egress, "8.8.8.8", 53, "UDP")
    # DNS inside the cluster only to the resolver's pods (a policy sees the pod address
    # behind the kube-dns Service): port 53 of any other cluster address stays closed
    for inside in ("10.96.0.10", "10.244.1.7", "192.168.1.53"):
        assert not _allowed_by(egress, inside, 53, "UDP"), inside
    for inside in ("10.96.0.1", "10.244.1.7", "172.20.0.5", "192.168.1.1", "100.100.100.200",
                   "169.254.169.254"):
        assert not _allowed_by(egress, inside, 443), inside
    assert _allowed_by(egress, "169.254.169.253", 80)  # only the metadata address itself
    # configurable: the cluster's own ranges, the hub API's port
    own = bundle.network_policy(spec(egress_denied_cidrs=("203.0.113.0/24",),
                                     hub_api_port=9000))["spec"]["egress"]
    assert own[1]["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert not _allowed_by(own, "203.0.113.9", 443) and _allowed_by(own, "10.0.0.1", 443)
    # NodeLocal DNSCache: the admin's peers replace the kube-dns ones
    local = bundle.network_policy(spec(dns_peers=[{"ipBlock": {"cidr": "169.254.20.10/32"}}]))
    assert _allowed_by(local["spec"]["egress"], "169.254.20.10", 53, "UDP")
    # without same-namespace traffic, no rule to the own pods either
    closed = bundle.network_policy(spec(allow_same_namespace=False))["spec"]["egress"]
    assert {"to": [{"podSelector": {}}]} not in closed


def test_role_binding_is_namespaced_and_bound_to_the_users_service_account():
    rb = bundle.role_binding(spec(cluster_role="view", service_account="me"))
    assert rb["kind"] == "RoleBinding"
    assert rb["metadata"]["namespace"] == "kdash-alice"
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": "view"}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "me",
                               "namespace": "kdash-alice"}]
    assert bundle.service_account(spec(service_account="me"))["metadata"]["name"] == "me"
    assert spec().cluster_role == "kdash-user"


def test_no_cluster_role_means_no_role_binding_for_the_user():
    kinds = [(o["kind"], o["metadata"]["name"]) for o in bundle.bundle_objects(
        spec(cluster_role=""))]
    assert ("RoleBinding", bundle.ROLE_BINDING_NAME) not in kinds
    assert ("ServiceAccount", "kdash-user") in kinds  # the pod still names its account


def test_services_get_their_rights_by_role_bindings_the_hub_first():
    s = spec(hub_role="kdash-hub-namespace", hub_service_account="hub",
             service_roles={**SERVICE_ROLES, "kdash-hub-namespace": "ignored"})
    bindings = bundle.service_role_bindings(s)
    assert bundle.bundle_objects(s)[:3] == bindings and bundle.bootstrap_count(s) == 1
    got = [(b["metadata"]["name"], b["roleRef"]["name"], b["subjects"]) for b in bindings]
    assert got == [
        ("kdash-hub-namespace", "kdash-hub-namespace",
         [{"kind": "ServiceAccount", "name": "hub", "namespace": "jhub"}]),
        ("kdash-culler-namespace", "kdash-culler-namespace",
         [{"kind": "ServiceAccount", "name": "kdash-culler", "namespace": "jhub"}]),
        ("kdash-launcher-namespace", "kdash-launcher-namespace",
         [{"kind": "ServiceAccount", "name": "kdash-launcher", "namespace": "jhub"}]),
    ]
    for b in bindings:
        validate(b)
        assert b["metadata"]["namespace"] == s.namespace and L.is_owned_by(b, "alice")
    # no hub role: the hub has cluster-wide rights, nothing to make first
    legacy = spec(service_roles=SERVICE_ROLES)
    assert bundle.bootstrap_count(legacy) == 0
    assert [b["metadata"]["name"] for b in bundle.service_role_bindings(legacy)] == [
        "kdash-culler-namespace", "kdash-launcher-namespace"]


def test_bundle_hash_tracks_the_desired_state():
    assert bundle.bundle_hash(spec()) == bundle.bundle_hash(spec())
    assert bundle.bundle_hash(spec()) != bundle.bundle_hash(spec(cluster_role="view"))
    assert bundle.bundle_hash(spec()) != bundle.bundle_hash(spec(hub_role="kdash-hub-namespace"))
    assert bundle.bundle_hash(spec()) != bundle.bundle_hash(spec(egress_denied_cidrs=()))
    assert bundle.bundle_hash(spec()) != bundle.bundle_hash(spec(quota={"pods": "1"}))


def test_largest_group_grant_wins_per_key():
    default = {"requests.cpu": "4", "limits.memory": "8Gi", "pods": "10"}
    groups = {"ml": {"requests.cpu": "16", "limits.memory": "4Gi"},
              "gpu": {"requests.cpu": "8000m", "requests.nvidia.com/gpu": "2"},
              "small": {"pods": "2"}}
    assert quotas.merge_grants(default, groups, []) == default
    got = quotas.merge_grants(default, groups, ["ml", "gpu", "other"])
    assert got == {"requests.cpu": "16", "limits.memory": "4Gi", "pods": "10",
                   "requests.nvidia.com/gpu": "2"}
    assert quotas.merge_grants(default, groups, ["small"])["pods"] == "2"  # may lower
    assert quotas.merge_grants({"pods": "3"}, {"a": {"pods": "1500m"}, "b": {"pods": 2}},
                               ["a", "b"]) == {"pods": "2"}


def test_limit_range_grants_merge_nested():
    default = {"default": {"cpu": "1", "memory": "1Gi"}, "max": {"cpu": "4"}}
    got = quotas.merge_grants(default, {"big": {"max": {"cpu": "32", "memory": "64Gi"}},
                                        "mid": {"max": {"cpu": "8"}}}, ["big", "mid"])
    assert got == {"default": {"cpu": "1", "memory": "1Gi"},
                   "max": {"cpu": "32", "memory": "64Gi"}}


def test_quantities_and_exceeds():
    assert quotas.parse_quantity("500m") * 2 == 1
    assert quotas.parse_quantity("1Gi") == 1024 ** 3
    with pytest.raises(ValueError):
        quotas.parse_quantity("lots")
    hard = {"requests.nvidia.com/gpu": "2", "limits.memory": "8Gi"}
    assert quotas.exceeds({"requests.nvidia.com/gpu": 2}, hard) == []
    problems = quotas.exceeds({"requests.nvidia.com/gpu": 4, "limits.memory": 2 ** 30},
                              hard, used={"limits.memory": "7.5Gi"})
    assert len(problems) == 2
    assert "requests.nvidia.com/gpu: asking for 4, quota is 2" in problems[0]


def test_a_limit_range_shapes_a_pod_missing_a_default_or_under_a_bound():
    lr = {"default": {"cpu": "1", "memory": "2Gi"},
          "defaultRequest": {"cpu": "100m", "memory": "256Mi"}}
    full = {"resources": {"limits": {"cpu": 2, "memory": 10**9},
                          "requests": {"cpu": 0.1, "memory": None}}}
    assert not bundle.limit_range_shapes(lr, [full])  # a request comes from its limit
    assert bundle.limit_range_shapes(lr, [full, {"name": "init", "image": "busybox"}])
    no_memory = {"resources": {"limits": {"cpu": 2, "memory": None}, "requests": {"cpu": 1}}}
    assert bundle.limit_range_shapes(lr, [no_memory])
    only_requests = {"resources": {"requests": {"cpu": 1, "memory": 10**9}}}
    assert bundle.limit_range_shapes(lr, [only_requests])  # the default limit fills in
    assert not bundle.limit_range_shapes({"defaultRequest": lr["defaultRequest"]},
                                         [only_requests])
    for bound in ("min", "max", "maxLimitRequestRatio"):
        assert bundle.limit_range_shapes({**lr, bound: {"cpu": "4"}}, [full]), bound
    assert not bundle.limit_range_shapes({}, [{"name": "bare"}])


class _Copies:
    """A stand-in for a BundleReflector: only its `resources` (namespace/name -> copy)."""

    def __init__(self) -> None:
        self.resources: dict[str, dict] = {}


def _watched(objects: list[dict]) -> DriftWatch:
    watch = DriftWatch(parent=None)
    for obj in objects:
        meta = obj["metadata"]
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = "1"
        watch.reflectors.setdefault(obj["kind"], _Copies()).resources[
            f"{meta['namespace']}/{meta['name']}"] = stored
    return watch


def test_a_copy_found_in_place_is_compared_again_once_it_changes():
    """The drift watch remembers a match by the copy's resourceVersion: a change (a user
    editing their NetworkPolicy gets a new version from the API server) is compared again."""
    objects = bundle.bundle_objects(spec())
    digest = bundle.bundle_hash(spec(), objects)
    watch = _watched(objects)
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    assert all(watch.in_place(o, digest) for o in objects)
    copy_ = watch.cached("NetworkPolicy", policy["metadata"]["namespace"],
                         policy["metadata"]["name"])
    copy_["spec"]["ingress"] = [{}]  # allow everything, as a new version
    copy_["metadata"]["resourceVersion"] = "2"
    assert not watch.in_place(policy, digest)
    # new settings (another hash) are compared even against a remembered version
    copy_["spec"]["ingress"] = policy["spec"]["ingress"]
    copy_["metadata"]["resourceVersion"] = "3"
    assert watch.in_place(policy, digest)
    wider = dataclasses.replace(spec(), allow_same_namespace=False)
    wanted = next(o for o in bundle.bundle_objects(wider) if o["kind"] == "NetworkPolicy")
    assert not watch.in_place(wanted, bundle.bundle_hash(wider))
    # a deleted copy is missing, whatever was remembered
    del watch.reflectors["NetworkPolicy"].resources[
        f"{policy['metadata']['namespace']}/{policy['metadata']['name']}"]
    assert not watch.in_place(policy, digest)


def test_the_memory_of_matches_forgets_namespaces_that_were_deleted(monkeypatch):
    """Matches of a deleted namespace's objects are swept once the memory reaches its
    threshold; matches still watched are kept (and still answer without a compare)."""
    monkeypatch.setattr(DriftWatch, "PRUNE_MIN", 30)
    users = [spec(username=f"user{i}") for i in range(6)]
    bundles = [(bundle.bundle_objects(s), s) for s in users]
    watch = _watched([o for objects, _ in bundles for o in objects])
    for objects, s in bundles[:3]:
        assert all(watch.in_place(o, bundle.bundle_hash(s, objects)) for o in objects)
    remembered = set(watch._matched)
    gone = {k for k in remembered if k[1] == users[0].namespace}
    assert gone and len(remembered) < DriftWatch.PRUNE_MIN
    for reflector in watch.reflectors.values():  # user0's namespace is deleted
        for key in [k for k in reflector.resources if k.startswith(f"{users[0].namespace}/")]:
            del reflector.resources[key]
    for objects, s in bundles[3:]:
        assert all(watch.in_place(o, bundle.bundle_hash(s, objects)) for o in objects)
    assert not gone & set(watch._matched)
    assert remembered - gone <= set(watch._matched)
    assert len(watch._matched) < DriftWatch.PRUNE_MIN
