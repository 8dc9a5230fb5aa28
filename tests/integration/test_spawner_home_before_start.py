"""The home before the first start: KDashSpawner.ensure_namespace_bundle (what the hub's
namespace endpoint runs when a side service is launched before the first notebook) makes
the home a start would make, through the start's own code: the PV, the home directory Job
and the claim. The start then finds them and makes nothing again; no claim is ever
deleted or replaced, whatever is already there."""

from __future__ import annotations

from kdash_hub.spawner import homedir, storage
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.spawner import build_spawner
from tests.integration.test_spawner_homes import job_posts, nfs_spawner


def claim_writes(log, start: int) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in list(log)[start:]
            if "persistentvolumeclaims" in p and m in ("DELETE", "PUT", "PATCH", "POST")]


async def test_the_nfs_home_is_made_before_the_first_start(local_cluster, kube):
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    early = nfs_spawner("carl", 2005)
    n = len(log)
    assert await early.ensure_namespace_bundle() == "created"
    assert job_posts(log, n) == [f"/apis/batch/v1/namespaces/{early.home_provisioner_namespace}"
                                 "/jobs"]
    pv_name = early._plan.pv["metadata"]["name"]
    pv = await kube.get("PersistentVolume", pv_name)
    assert pv["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == "2005:3001"
    claim = await kube.get("PersistentVolumeClaim", early.pvc_name, early.namespace)
    assert claim["spec"]["volumeName"] == pv_name
    assert claim["metadata"]["labels"]["kdash-hub.io/component"] == "home"
    assert not early.active and early.get_state().get("pvc_name") is None

    # asked again: the namespace is unchanged, no Job, the claim left as it is
    n = len(log)
    assert await early.ensure_namespace_bundle() == "unchanged"
    assert job_posts(log, n) == []
    assert [m for m, _ in claim_writes(log, n)] in ([], ["POST"])  # a create that 409s
    assert (await kube.get("PersistentVolumeClaim", early.pvc_name, early.namespace)
            )["metadata"]["uid"] == claim["metadata"]["uid"]

    # the first start (the hub's spawner of the same user) uses them
    first = nfs_spawner("carl", 2005)
    n = len(log)
    await first.start()
    assert job_posts(log, n) == []
    pod = await kube.get("Pod", first.pod_name, first.namespace)
    home = [v for v in pod["spec"]["volumes"] if v["name"] == storage.HOME_VOLUME]
    assert home == [{"name": "home", "persistentVolumeClaim": {"claimName": early.pvc_name}}]
    assert (await kube.get("PersistentVolumeClaim", early.pvc_name, early.namespace)
            )["metadata"]["uid"] == claim["metadata"]["uid"]
    await first.stop()
    assert not [w for w in claim_writes(log, 0) if w[0] != "POST"]  # never deleted


async def test_a_dynamic_claim_is_made_and_a_users_own_is_kept(local_cluster, kube):
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    dina = build_spawner(username="dina")
    assert await dina.ensure_namespace_bundle() == "created"
    claim = await kube.get("PersistentVolumeClaim", dina.pvc_name, dina.namespace)
    assert claim["metadata"]["labels"]["kdash-hub.io/owner"] == "dina"
    assert claim["spec"]["resources"]["requests"]["storage"] == dina.storage_capacity

    # a claim of the same name the user made herself: kept as it is
    await kube.delete("PersistentVolumeClaim", dina.pvc_name, dina.namespace)
    for _ in range(100):
        if await kube.get("PersistentVolumeClaim", dina.pvc_name, dina.namespace) is None:
            break
    own = await kube.create({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": dina.pvc_name, "namespace": dina.namespace,
                     "labels": {"mine": "yes"}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Mi"}}}})
    n = len(log)
    assert await build_spawner(username="dina").ensure_namespace_bundle() == "unchanged"
    kept = await kube.get("PersistentVolumeClaim", dina.pvc_name, dina.namespace)
    assert kept["metadata"]["uid"] == own["metadata"]["uid"]
    assert kept["metadata"]["labels"] == {"mine": "yes"}
    assert [m for m, _ in claim_writes(log, n)] == ["POST"]


async def test_state_from_before_kubespawner_7_is_left_to_the_start(local_cluster, kube):
    """Its claim may have the old naming: only a start can tell which, so nothing is
    made (a new-named claim would hide the old home)."""
    requires_emulator(local_cluster)
    old = build_spawner(username="olga")
    old.load_state({"pod_name": "jupyter-olga"})  # no kubespawner_version: 6.x
    assert await old.ensure_namespace_bundle() == "created"
    assert await kube.list("PersistentVolumeClaim", old.namespace) == []
