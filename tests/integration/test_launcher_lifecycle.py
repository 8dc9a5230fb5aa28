"""Instances on the local cluster without the hub: the culler's interface (lifecycle),
request counts of a launch, rollback on failure, templates from ConfigMaps."""

from datetime import UTC, datetime, timedelta

import pytest
from kdash_hub.services.launcher import lifecycle
from kdash_hub.services.launcher.app import LauncherApp
from kdash_hub.services.launcher.instances import Actor, InstanceManager, LauncherError
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR, LauncherSettings

from kdash_hub.kube import KubeResources
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import requires_emulator

ALICE = Actor("alice")


@pytest.fixture
def manager(kube: KubeResources) -> InstanceManager:
    return InstanceManager(kube, LauncherSettings(), load_directories([CATALOG_DIR]))


async def test_expiry_stop_and_delete(manager, kube):
    pg = await manager.launch(ALICE, "postgresql", ttl="1h")  # expiry: stop
    tb = await manager.launch(ALICE, "tensorboard", ttl="2h")  # expiry: delete
    now = datetime.now(UTC)
    assert await lifecycle.expired_instances(kube, now) == []
    later = now + timedelta(hours=1, minutes=1)
    refs = await lifecycle.expired_instances(kube, later)
    assert [(r.name, r.owner, r.template, r.on_expiry, r.namespace) for r in refs] == [
        (pg["name"], "alice", "postgresql", "stop", "kdash-alice")]
    assert abs((refs[0].expires_at - now).total_seconds() - 3600) < 5

    await lifecycle.stop_instance(kube, "kdash-alice", pg["name"])
    assert (await kube.get("Deployment", pg["name"], "kdash-alice"))["spec"]["replicas"] == 0
    assert await kube.get("PersistentVolumeClaim", f"{pg['name']}-data", "kdash-alice")
    await lifecycle.stop_instance(kube, "kdash-alice", pg["name"])  # idempotent
    much_later = now + timedelta(hours=3)
    refs = await lifecycle.expired_instances(kube, much_later)
    assert [(r.name, r.on_expiry) for r in refs] == [(tb["name"], "delete")]  # stopped: done
    await lifecycle.delete_instance(kube, "kdash-alice", tb["name"])
    assert await kube.get("Deployment", tb["name"], "kdash-alice") is None
    assert await lifecycle.expired_instances(kube, much_later) == []
    with pytest.raises(lifecycle.InstanceNotFound):
        await lifecycle.delete_instance(kube, "kdash-alice", tb["name"])

    # start after expiry: replicas back, a fresh TTL
    rec = await lifecycle.start_instance(kube, "kdash-alice", pg["name"], now=later)
    assert rec.expires_at == later + timedelta(hours=1)
    assert (await kube.get("Deployment", pg["name"], "kdash-alice"))["spec"]["replicas"] == 1


async def test_launch_makes_one_create_per_object(bare_apiserver):
    server, kube = bare_apiserver
    manager = InstanceManager(kube, LauncherSettings(), load_directories([CATALOG_DIR]))
    await kube.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "kdash-alice"}})
    for template_id in ("postgresql", "minio", "tensorboard", "redis", "filebrowser"):
        before = dict(server.request_count)
        await manager.launch(ALICE, template_id)
        spent = {k: v - before.get(k, 0) for k, v in server.request_count.items()}
        objects = len(manager.catalog.get(template_id).manifests)
        # one create per object, plus the record; reads: the user's records, the namespace
        assert spent == {"total": objects + 3, "create": objects + 1, "list": 1, "get": 1}, (
            template_id, spent)


async def test_failure_rolls_back_everything(manager, local_cluster, kube):
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="POST", path_regex="/services$", status=500, times=1)
    with pytest.raises(LauncherError) as e:
        await manager.launch(ALICE, "minio", name="halfway")
    assert e.value.status == 502 and "Service halfway" in e.value.message
    for kind, name in (("Secret", "halfway"), ("PersistentVolumeClaim", "halfway-data"),
                       ("Deployment", "halfway"), ("Secret", record_name("halfway"))):
        obj = await kube.get(kind, name, "kdash-alice")
        assert obj is None or obj["metadata"].get("deletionTimestamp"), (kind, name)
    assert await manager.list(ALICE) == []
    # and the same name works afterwards
    assert (await manager.launch(ALICE, "minio", name="halfway"))["name"] == "halfway"


async def test_templates_from_configmaps(kube, local_cluster, tmp_path):
    good = (CATALOG_DIR / "redis.yaml").read_text().replace("name: Redis", "name: Cache")
    bad = "kind: Template\nname: Evil\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hub"}})
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "site-templates", "namespace": "hub",
                                    "labels": {"kdash-hub.io/templates": "true"}},
                       "data": {"cache.yaml": good, "evil.yaml": bad}})
    app = LauncherApp()
    app.launcher = LauncherSettings(parent=app)
    app.launcher.template_configmap_namespace = "hub"
    app.launcher.template_dirs = [str(tmp_path)]
    catalog = await app.load_catalog(kube)
    assert list(catalog.templates) == ["cache"]
    assert [str(e) for e in catalog.errors] == [
        "configmap/hub/site-templates/evil.yaml:5: kind Namespace is not allowed in templates"
        " (allowed: ConfigMap, Deployment, Job, PersistentVolumeClaim, Secret, Service,"
        " StatefulSet)"]
