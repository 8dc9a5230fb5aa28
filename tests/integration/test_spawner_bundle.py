"""KDashSpawner on the local cluster: the namespace bundle, drift, faults, deletion."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from kdash_hub import labels as L
from kdash_hub.quantities import parse_quantity
from kdash_hub.spawner import bundle
from kdash_hub.spawner.drift import DriftWatch
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.polling import eventually
from tests.fixtures.spawner import (
    build_spawner,
    requires_real_rbac,
    spawner_requests,
    to_dict,
    validate,
)

BUNDLE_KINDS = [("ResourceQuota", bundle.QUOTA_NAME), ("LimitRange", bundle.LIMIT_RANGE_NAME),
                ("NetworkPolicy", bundle.NETWORK_POLICY_NAME),
                ("ServiceAccount", "kdash-user"), ("RoleBinding", bundle.ROLE_BINDING_NAME),
                ("RoleBinding", "kdash-hub-namespace"), ("RoleBinding", "kdash-launcher-namespace"),
                ("RoleBinding", "kdash-culler-namespace")]


async def started(spawner):
    url = await spawner.start()
    assert url.startswith("http://")
    return url


async def test_first_start_creates_the_bundle(local_cluster, kube):
    s = build_spawner(username="A_B", groups=["ml"], auth_state={"uid": 2001, "gid": 3001},
                      group_quotas={"ml": {"requests.cpu": "32"}})
    try:
        await started(s)
        ns = await kube.get("Namespace", s.namespace)
        assert L.is_owned_by(ns, "A_B")
        assert ns["metadata"]["annotations"][bundle.BUNDLE_HASH_ANNOTATION]
        for kind, name in BUNDLE_KINDS:
            obj = await kube.get(kind, name, s.namespace)
            assert obj is not None, kind
            assert L.is_owned_by(obj, "A_B")
            validate({k: v for k, v in obj.items() if k != "status"} | {"metadata": {
                k: v for k, v in obj["metadata"].items()
                if k in ("name", "namespace", "labels", "annotations")}})
        quota = await kube.get("ResourceQuota", bundle.QUOTA_NAME, s.namespace)
        assert quota["spec"]["hard"]["requests.cpu"] == "32"  # the ml group's grant
        rb = await kube.get("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
        assert rb["roleRef"]["name"] == "kdash-user"
        assert rb["subjects"][0] == {"kind": "ServiceAccount", "name": "kdash-user",
                                     "namespace": s.namespace}
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 2001
        assert pod["spec"]["securityContext"]["fsGroup"] == 3001
        assert pod["spec"]["serviceAccountName"] == "kdash-user"
        events = [e["message"] async for e in s.progress()]
        assert any("Creating namespace" in m for m in events)
        assert any("network policy" in m for m in events)
    finally:
        await s.stop()


async def test_the_hubs_own_role_binding_is_made_before_anything_else(local_cluster, kube):
    """The hub's rights in a new namespace come from its RoleBinding there: made first."""
    requires_emulator(local_cluster)
    # the hub's own rights are unknown (its access review refused): as for the hub's
    # ServiceAccount, which holds no rights in user namespaces but by that binding
    local_cluster.api.faults.add(method="POST", path_regex="selfsubjectaccessreviews",
                                 status=403, times=None)
    log = local_cluster.api.request_log
    n = len(log)
    s = build_spawner(username="lena")
    await started(s)
    writes = [p for m, p, _ in list(log)[n:] if m == "POST"
              and p.startswith(f"/api/v1/namespaces/{s.namespace}/")
              or m == "POST" and f"/namespaces/{s.namespace}/" in p]
    assert writes[0] == (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{s.namespace}"
                         "/rolebindings"), writes
    first = [b for b in await kube.list("RoleBinding", s.namespace)
             if b["metadata"]["name"] == "kdash-hub-namespace"][0]
    assert first["subjects"] == [{"kind": "ServiceAccount", "name": "hub",
                                  "namespace": s.hub_namespace}]
    await s.stop()


async def test_a_first_start_makes_its_pod_in_as_many_rounds_as_kubespawner(local_cluster):
    """The namespace with one request (no read first), the home claim with the bundle, the
    pod before the quota and the RoleBindings it does not need (the quota before the
    rights it bounds), the completion mark after those."""
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    n = len(log)
    s = build_spawner(username="mia")
    await started(s)
    ns = f"/api/v1/namespaces/{s.namespace}"
    sent = [(m, p.split("?")[0]) for m, p, _ in list(log)[n:]]
    assert ("GET", ns) not in sent
    writes = [(m, p) for m, p in sent if m in ("POST", "PATCH")
              and (p == "/api/v1/namespaces" or f"/namespaces/{s.namespace}" in p)
              and not p.endswith(("/status", "/binding", "/events"))]
    assert writes[0] == ("POST", "/api/v1/namespaces"), writes
    pod = writes.index(("POST", f"{ns}/pods"))
    before = {p.rsplit("/", 1)[-1] for _, p in writes[1:pod]}
    assert before == {"limitranges", "networkpolicies", "serviceaccounts",
                      "persistentvolumeclaims"}, writes
    quota = writes.index(("POST", f"{ns}/resourcequotas"))
    # the emulator authorizes all, so even the hub's own binding is not needed before the pod
    bindings = [i for i, (_, p) in enumerate(writes) if p.endswith("/rolebindings")]
    assert len(bindings) == 4 and min(bindings) > quota > pod, writes
    assert writes[-1] == ("PATCH", ns) and len(writes) == 12, writes
    await s.stop()


async def test_the_pod_is_built_while_the_bundle_is_made_and_is_the_pod_made(
        local_cluster, kube, monkeypatch):
    """The pod's manifest is built once per start, while the bundle's requests are out
    (before KubeSpawner asks for it), and is exactly the pod KubeSpawner then makes; a start
    the bundle fails leaves no build running or unread."""
    requires_emulator(local_cluster)
    s = build_spawner(username="mira", auth_state={"uid": 2002, "gid": 3002})
    built: list[bool] = []  # per build: was the bundle still being made
    build = type(s)._pod_manifest

    async def counted(self):
        built.append(not self._bundle_finished)
        return await build(self)

    monkeypatch.setattr(type(s), "_pod_manifest", counted)
    await started(s)
    assert built == [True]
    made = await kube.get("Pod", s.pod_name, s.namespace)
    want = to_dict(await s.get_pod_manifest())
    assert made["spec"]["containers"][0]["env"] == want["spec"]["containers"][0]["env"]
    assert made["spec"]["volumes"] == want["spec"]["volumes"]
    assert made["metadata"]["labels"] == want["metadata"]["labels"]
    assert made["spec"]["containers"][0]["securityContext"]["runAsUser"] == 2002
    await s.stop()
    local_cluster.api.faults.add(method="POST", path_regex=r"/networkpolicies$", status=500,
                                 times=1)
    failing = build_spawner(username="mira-b")
    with pytest.raises(web.HTTPError):
        await failing.start()
    assert failing._early_pod_manifest is None


async def test_a_pod_with_every_limit_set_goes_before_the_limit_range(local_cluster, kube):
    """A pod that sets each limit and request the LimitRange would fill in needs none of it:
    the LimitRange goes with the quota after the pod, and still before any user right."""
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    n = len(log)
    s = build_spawner(username="milo", cpu_limit=1, mem_limit="1G", cpu_guarantee=0.1,
                      mem_guarantee="128M")
    await started(s)
    ns = f"/api/v1/namespaces/{s.namespace}"
    writes = [p.split("?")[0].rsplit("/", 1)[-1] for m, p, _ in list(log)[n:]
              if m == "POST" and f"/namespaces/{s.namespace}/" in p
              and not p.endswith(("/status", "/binding", "/events"))]
    pod, limits = writes.index("pods"), writes.index("limitranges")
    bindings = [i for i, w in enumerate(writes) if w == "rolebindings"]
    assert set(writes[:pod]) == {"networkpolicies", "serviceaccounts",
                                 "persistentvolumeclaims"}, writes
    assert pod < limits < min(bindings) and len(bindings) == 4, writes
    made = await kube.get("Pod", s.pod_name, s.namespace)
    assert parse_quantity(made["spec"]["containers"][0]["resources"]["limits"]["cpu"]) == 1
    assert await kube.get("LimitRange", bundle.LIMIT_RANGE_NAME, s.namespace) is not None
    assert (await kube.get("Namespace", s.namespace))["metadata"]["annotations"].get(
        bundle.BUNDLE_HASH_ANNOTATION), ns
    await s.stop()


async def test_later_start_writes_nothing(local_cluster, kube):
    requires_emulator(local_cluster)  # counts requests in the emulator's log
    s = build_spawner(username="carol")
    await started(s)
    await s.stop()
    await asyncio.sleep(0.2)  # the drift watches see the new objects
    log = local_cluster.api.request_log
    n = len(log)
    s.clear_state()
    await started(s)
    mine = spawner_requests(log, n, s.namespace)
    assert mine == [("GET", f"/api/v1/namespaces/{s.namespace}"),
                    ("POST", f"/api/v1/namespaces/{s.namespace}/pods")]
    await s.stop()


async def test_drift_is_repaired_by_the_next_start(local_cluster, kube):
    """A deleted NetworkPolicy and a RoleBinding pointed at `admin` (an admin's doing: users
    can write neither) are put right by the next start, through the hub's own rights."""
    s = build_spawner(username="carla")
    try:
        await started(s)
        await s.stop()
        await kube.delete("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)
        rb = await kube.get("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
        await kube.delete("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
        rb["roleRef"]["name"] = "admin"
        await kube.create({k: v for k, v in rb.items() if k in ("apiVersion", "kind", "roleRef",
                                                               "subjects")}
                          | {"metadata": {k: rb["metadata"][k] for k in ("name", "namespace",
                                                                          "labels")}})

        watch = DriftWatch.for_loop(s)

        async def seen() -> bool:  # by the hub's watches, which a start consults
            changed = watch.cached("RoleBinding", s.namespace, bundle.ROLE_BINDING_NAME)
            return (watch.cached("NetworkPolicy", s.namespace, bundle.NETWORK_POLICY_NAME)
                    is None and (changed or {}).get("roleRef", {}).get("name") == "admin")

        deadline = asyncio.get_running_loop().time() + 30
        while not await seen():
            assert asyncio.get_running_loop().time() < deadline, "the watches missed the drift"
            await asyncio.sleep(0.1)
        s.clear_state()
        await started(s)
        assert await kube.get("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)
        rb = await kube.get("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
        assert rb["roleRef"]["name"] == "kdash-user"
    finally:
        await s.stop()


async def test_a_policy_widened_after_a_start_found_it_in_place_is_narrowed_again(
        local_cluster, kube):
    """The drift watch remembers an object it found in place (by its version): a later
    change to it, here a NetworkPolicy opened to every pod, is still put right by the next
    start."""
    s = build_spawner(username="cleo")
    try:
        await started(s)
        await s.stop()
        watch = DriftWatch.for_loop(s)

        async def watched_policy() -> dict | None:
            return watch.cached("NetworkPolicy", s.namespace, bundle.NETWORK_POLICY_NAME)

        # the watch has the policy: the next start remembers it
        policy = await eventually(watched_policy, "the watch has the policy", interval=0.1)
        narrow = policy["spec"]["ingress"]
        s.clear_state()
        await started(s)  # a later start: everything found in place
        assert watch._matched, "the later start remembered nothing: this test shows nothing"
        await s.stop()
        await kube.patch("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace,
                         {"spec": {"ingress": [{}]}})

        async def widened() -> bool:
            return ((await watched_policy()) or {}).get("spec", {}).get("ingress") == [{}]

        await eventually(widened, "the watch sees the widened policy", interval=0.1)
        s.clear_state()
        await started(s)
        repaired = await kube.get("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)
        assert repaired["spec"]["ingress"] == narrow
    finally:
        await s.stop()


@pytest.mark.parametrize(("failing", "mode"), [
    ("networkpolicies", "watch"), ("rolebindings", "watch"), ("limitranges", "hash"),
    ("serviceaccounts", "hash"), ("resourcequotas", "always")])
async def test_a_fault_mid_provisioning_is_finished_by_the_next_start(
        local_cluster, kube, failing, mode):
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="POST", path_regex=failing, status=500)
    s = build_spawner(username="dave", bundle_drift_check=mode)
    with pytest.raises(web.HTTPError) as e:
        await s.start()
    assert "Could not prepare your namespace" in e.value.log_message
    ns = await kube.get("Namespace", s.namespace)
    if mode == "hash":  # nothing but the hash tells the next start to look: written last
        assert bundle.BUNDLE_HASH_ANNOTATION not in ns["metadata"].get("annotations", {})
    await asyncio.sleep(0.2)
    s.clear_state()
    await started(s)
    for kind, name in BUNDLE_KINDS:
        assert await kube.get(kind, name, s.namespace) is not None, kind
    ns = await kube.get("Namespace", s.namespace)
    assert ns["metadata"]["annotations"][bundle.BUNDLE_HASH_ANNOTATION]
    await s.stop()


async def test_over_quota_spawn_fails_clearly(local_cluster, kube):
    # a user of its own: its 10Gi home stays behind for the launcher files' users otherwise
    s = build_spawner(username="oquota", quota={"pods": "1", "limits.cpu": "4"}, cpu_limit=1)
    await started(s)
    await s.stop()
    # something else of the user's now holds the only pod slot
    await kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "side", "namespace": s.namespace}, "spec": {"containers": [{
            "name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]}})
    await asyncio.sleep(0.2)
    s.clear_state()
    try:
        with pytest.raises(web.HTTPError) as e:
            await asyncio.wait_for(s.start(), 10)
        assert e.value.status_code == 403
        assert "quota" in e.value.log_message
    finally:
        await kube.delete("Pod", "side", s.namespace)


async def test_a_namespace_of_another_user_is_refused(local_cluster, kube):
    s = build_spawner(username="frank")
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": s.namespace, "labels": L.owner_labels("mallory", bundle.COMPONENT)}})
    with pytest.raises(web.HTTPError) as e:
        await s.start()
    assert e.value.status_code == 409 and "belongs to another user" in e.value.log_message


@pytest.mark.parametrize("allowed", [False, True])
async def test_delete_forever(local_cluster, kube, allowed):
    s = build_spawner(username=f"gina-{allowed}".lower(),
                      delete_namespace_on_user_delete=allowed)
    await started(s)
    await s.stop()
    await s.delete_forever()
    ns = await kube.get("Namespace", s.namespace)
    if allowed:
        assert ns is None or ns["metadata"].get("deletionTimestamp")
    else:
        assert ns is not None and not ns["metadata"].get("deletionTimestamp")
        assert await kube.get("PersistentVolumeClaim", s.pvc_name, s.namespace) is not None


async def test_delete_forever_spares_a_namespace_that_is_not_ours(local_cluster, kube):
    s = build_spawner(username="hank", delete_namespace_on_user_delete=True)
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": s.namespace, "labels": {"team": "hank"}}})
    await s.delete_forever()
    ns = await kube.get("Namespace", s.namespace)
    assert ns is not None and not ns["metadata"].get("deletionTimestamp")


async def test_limit_range_lets_containers_without_limits_fit_the_quota(local_cluster, kube):
    """z2jh#2428: an init container without resources must not block the spawn."""
    s = build_spawner(username="ivy", quota={"limits.cpu": "8", "limits.memory": "16Gi",
                                             "requests.cpu": "4", "requests.memory": "8Gi"},
                      cpu_limit=1, mem_limit="1G", cpu_guarantee=0.1, mem_guarantee="128M",
                      init_containers=[{"name": "net-setup", "image": "busybox",
                                        "command": ["true"]}])
    try:
        await started(s)
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        init = [c for c in pod["spec"]["initContainers"] if c["name"] == "net-setup"][0]
        assert init["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}  # LimitRange default
    finally:
        await s.stop()


async def test_image_pull_secrets_are_copied(local_cluster, kube, chart_hub_role):
    s = build_spawner(username="jo", image_pull_secrets_to_copy=["registry"])
    # the original lives in the hub's namespace (the hub reads it by the chart's Role there)
    await kube.create({"apiVersion": "v1", "kind": "Secret",
                       "type": "kubernetes.io/dockerconfigjson",
                       "metadata": {"name": "registry", "namespace": s.hub_namespace},
                       "data": {".dockerconfigjson": "e30="}})
    try:
        await started(s)
        copy = await kube.get("Secret", "registry", s.namespace)
        assert copy["data"] == {".dockerconfigjson": "e30="} and L.is_owned_by(copy, "jo")
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        assert {"name": "registry"} in pod["spec"]["imagePullSecrets"]
    finally:
        await s.stop()
        await kube.delete("Secret", "registry", s.hub_namespace)


async def test_pull_secrets_outside_the_hubs_namespace_are_out_of_reach(
        local_cluster, kube, chart_hub_role):
    """The hub holds no right on Secrets outside its own namespace and the users': a pull
    secret named in another namespace (kube-system's, say) is refused, with the reason."""
    requires_real_rbac(local_cluster)
    other = "kube-system"
    await kube.create({"apiVersion": "v1", "kind": "Secret",
                       "type": "kubernetes.io/dockerconfigjson",
                       "metadata": {"name": "kdash-test-registry", "namespace": other},
                       "data": {".dockerconfigjson": "e30="}})
    s = build_spawner(username="jo-other",
                      image_pull_secrets_to_copy=[f"{other}/kdash-test-registry"])
    try:
        with pytest.raises(web.HTTPError) as e:
            await s.start()
        assert e.value.status_code == 403 and "forbidden" in e.value.log_message
        assert await kube.get("Secret", "kdash-test-registry", s.namespace) is None
        # the hub's stop after that start (it holds no rights in the namespace yet) works
        await s.stop()
    finally:
        await kube.delete("Secret", "kdash-test-registry", other)


async def test_stop_when_refused_where_no_pod_can_be(local_cluster, kube):
    """A pod delete refused (403: the hub has no rights in a namespace it never
    provisioned, as the real tier shows above) ends a stop when the hub's watch of every
    pod sees none there; refused for a pod that exists, the stop fails."""
    requires_emulator(local_cluster)
    refused = local_cluster.api.faults.add(method="DELETE", path_regex="/pods/", status=403,
                                           times=None)
    s = build_spawner(username="lou")
    await s.stop()  # nothing was ever made
    await started(s)
    with pytest.raises(ApiException) as e:
        await s.stop()
    assert e.value.status == 403
    local_cluster.api.faults.remove(refused)
    await s.stop()
    assert await kube.get("Pod", s.pod_name, s.namespace) is None


async def test_without_watch_rights_every_start_ensures_the_bundle(local_cluster, kube):
    """The drift watches are an optimisation: when they can't start, starts still work and
    still repair drift (by ensuring every object, as in "always" mode)."""
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="GET", path_regex=r"^/apis/networking\.k8s\.io/v1/"
                                 r"networkpolicies", status=403, times=None)
    s = build_spawner(username="kim")
    await started(s)
    await s.stop()
    await kube.delete("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)
    s.clear_state()
    await started(s)
    assert await kube.get("NetworkPolicy", bundle.NETWORK_POLICY_NAME, s.namespace)
    await s.stop()



async def test_an_admins_new_pod_security_level_judges_the_next_pod(local_cluster, kube):
    """The namespace's Pod Security level is a guardrail like the others: changed by the
    admin, it is applied before the next start's pod, not with the completion mark after it.
    Lowered, the next start gets in (its pod, made for the lower level, used to be refused
    by the old one, so the start never reached the mark: that user could never start
    again); raised, the namespace says so before the next pod is made."""
    s = build_spawner(username="lev", pod_security_level="restricted")
    await started(s)
    await s.stop()
    ns = await kube.get("Namespace", s.namespace)
    assert ns["metadata"]["labels"][bundle.POD_SECURITY_LABEL] == "restricted"

    s = build_spawner(username="lev")  # the admin lowers it to the default, baseline
    try:
        await started(s)
        ns = await kube.get("Namespace", s.namespace)
        assert ns["metadata"]["labels"][bundle.POD_SECURITY_LABEL] == "baseline"
    finally:
        await s.stop()

    log = getattr(getattr(local_cluster, "api", None), "request_log", None)
    n = len(log) if log is not None else 0
    s = build_spawner(username="lev", pod_security_level="restricted")  # and raises it again
    try:
        await started(s)
        ns = await kube.get("Namespace", s.namespace)
        assert ns["metadata"]["labels"][bundle.POD_SECURITY_LABEL] == "restricted"
    finally:
        await s.stop()
    if log is not None:  # the emulator's request log: the relabel went before the pod
        path = f"/api/v1/namespaces/{s.namespace}"
        sent = [(m, p.split("?")[0]) for m, p in spawner_requests(log, n, s.namespace)]
        assert sent.index(("PATCH", path)) < sent.index(("POST", f"{path}/pods")), sent
