"""Instances on the local cluster without the hub: the culler's interface (lifecycle),
request counts of a launch, rollback on failure, templates from ConfigMaps."""

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources
from kdash_hub.services.launcher import lifecycle, records
from kdash_hub.services.launcher.app import LauncherApp
from kdash_hub.services.launcher.instances import Actor, InstanceManager, LauncherError
from kdash_hub.services.launcher.reconcile import Reconciler
from kdash_hub.services.launcher.records import ANN_RECORD, record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR, LauncherSettings
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.launcher import InstanceUser, ready_pod
from tests.fixtures.realcp import HUB_NAMESPACE, REPO


@pytest.fixture
def user(instance_user: InstanceUser) -> InstanceUser:
    """alice on the emulator; a user of this test's own on the shared real control plane."""
    return instance_user


@pytest.fixture
def emulator_only(local_cluster) -> None:
    """Skip before any set-up when the test needs the emulator's fault injection."""
    requires_emulator(local_cluster)


@pytest.fixture
def manager(launcher_identity: KubeResources, user: InstanceUser) -> InstanceManager:
    """The launcher's code with the launcher's identity (its ServiceAccount token in the
    real tier); `kube` (admin) sets up and checks."""
    return InstanceManager(launcher_identity, user.settings(), load_directories([CATALOG_DIR]))


async def test_expiry_stop_and_delete(manager, kube, culler_identity, user):
    """The culler's interface, with the culler's identity (its token in the real tier)."""
    culler = culler_identity
    pg = await manager.launch(user.actor, "postgresql", ttl="1h")  # expiry: stop
    tb = await manager.launch(user.actor, "tensorboard", ttl="2h")  # expiry: delete
    now = datetime.now(UTC)
    assert await lifecycle.expired_instances(culler, now, manager.signer) == []
    later = now + timedelta(hours=1, minutes=1)
    refs = await lifecycle.expired_instances(culler, later, manager.signer)
    assert [(r.name, r.owner, r.template, r.on_expiry, r.namespace) for r in refs] == [
        (pg["name"], user.name, "postgresql", "stop", user.namespace)]
    assert abs((refs[0].expires_at - now).total_seconds() - 3600) < 5

    await lifecycle.stop_instance(culler, user.namespace, pg["name"], manager.signer)
    assert (await kube.get("Deployment", pg["name"], user.namespace))["spec"]["replicas"] == 0
    assert await kube.get("PersistentVolumeClaim", f"{pg['name']}-data", user.namespace)
    await lifecycle.stop_instance(culler, user.namespace, pg["name"], manager.signer)  # idempotent
    much_later = now + timedelta(hours=3)
    refs = await lifecycle.expired_instances(culler, much_later, manager.signer)
    assert [(r.name, r.on_expiry) for r in refs] == [(tb["name"], "delete")]  # stopped: done
    await lifecycle.delete_instance(culler, user.namespace, tb["name"], manager.signer)
    assert await kube.get("Deployment", tb["name"], user.namespace) is None
    assert await lifecycle.expired_instances(culler, much_later, manager.signer) == []
    with pytest.raises(lifecycle.InstanceNotFound):
        await lifecycle.delete_instance(culler, user.namespace, tb["name"], manager.signer)

    # start after expiry: replicas back, a fresh TTL
    rec = await lifecycle.start_instance(manager.kube, user.namespace, pg["name"], now=later,
                                         signer=manager.signer)  # the launcher's operation
    assert rec.expires_at == later + timedelta(hours=1)
    assert (await kube.get("Deployment", pg["name"], user.namespace))["spec"]["replicas"] == 1


async def test_launch_makes_one_create_per_object(bare_apiserver):
    server, kube = bare_apiserver
    manager = InstanceManager(kube, LauncherSettings(), load_directories([CATALOG_DIR]))
    await kube.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "kdash-alice"}})
    for template_id in ("postgresql", "minio", "tensorboard", "redis", "filebrowser"):
        before = dict(server.request_count)
        await manager.launch(Actor("alice"), template_id)
        spent = {k: v - before.get(k, 0) for k, v in server.request_count.items()}
        objects = len(manager.catalog.get(template_id).manifests)
        # one create per object, plus the record and one patch sealing it (the objects'
        # UIDs, signed); reads: the user's records, the namespace
        assert spent == {"total": objects + 4, "create": objects + 1, "patch": 1,
                         "list": 1, "get": 1}, (template_id, spent)


async def test_failure_rolls_back_everything(emulator_only, manager, local_cluster, kube, user):
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="POST", path_regex="/services$", status=500, times=1)
    with pytest.raises(LauncherError) as e:
        await manager.launch(user.actor, "minio", name="halfway")
    assert e.value.status == 502 and "Service halfway" in e.value.message
    for kind, name in (("Secret", "halfway"), ("PersistentVolumeClaim", "halfway-data"),
                       ("Deployment", "halfway"), ("Secret", record_name("halfway"))):
        obj = await kube.get(kind, name, user.namespace)
        assert obj is None or obj["metadata"].get("deletionTimestamp"), (kind, name)
    assert await manager.list(user.actor) == []
    # and the same name works afterwards
    assert (await manager.launch(user.actor, "minio", name="halfway"))["name"] == "halfway"


async def test_templates_from_configmaps(kube, launcher_identity, local_cluster, tmp_path):
    """Templates kept in ConfigMaps; in the real tier read with the launcher's identity and
    the optional Role helm-values ships for it (services/optional/), in the release
    namespace."""
    good = (CATALOG_DIR / "redis.yaml").read_text().replace("name: Redis", "name: Cache")
    bad = "kind: Template\nname: Evil\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
    namespace, name = "hub", "site-templates"
    if getattr(local_cluster, "api", None) is None:  # a real cluster, shared by the session
        namespace, name = HUB_NAMESPACE, f"site-templates-{secrets.token_hex(3)}"
        for obj in optional_launcher_role(namespace):
            if await kube.get(obj["kind"], obj["metadata"]["name"], namespace) is None:
                await kube.create(obj)
    else:
        await kube.create({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": namespace}})
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": namespace,
                                    "labels": {"kdash-hub.io/templates": "true"}},
                       "data": {"cache.yaml": good, "evil.yaml": bad}})
    try:
        app = LauncherApp()
        app.launcher = LauncherSettings(parent=app)
        app.launcher.template_configmap_namespace = namespace
        app.launcher.template_dirs = [str(tmp_path)]
        catalog = await app.load_catalog(launcher_identity)
        assert list(catalog.templates) == ["cache"]
        assert [str(e) for e in catalog.errors] == [
            f"configmap/{namespace}/{name}/evil.yaml:5: kind Namespace is not allowed in"
            " templates (allowed: ConfigMap, CronJob, CronWorkflow, Deployment, Job,"
            " PersistentVolumeClaim, Secret, Service, StatefulSet, Workflow)"]
    finally:
        await kube.delete("ConfigMap", name, namespace)


def optional_launcher_role(namespace: str) -> list[dict]:
    """helm-values/services/optional/launcher-template-configmaps.yaml, for `namespace`."""
    text = (REPO / "helm-values" / "services" / "optional"
            / "launcher-template-configmaps.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text.replace("jhub", namespace)) if doc]


async def test_an_edited_record_changes_nothing_else(manager, kube, culler_identity, user):
    """Records live in the user's namespace; one edited to name the namespace, its quota or
    another user's things doesn't verify any more: the launcher refuses to act on it."""
    inst = await manager.launch(user.actor, "redis", name="cache")
    await kube.create({"apiVersion": "v1", "kind": "ResourceQuota",
                       "metadata": {"name": "guard", "namespace": user.namespace},
                       "spec": {"hard": {"pods": "10"}}})
    secret = await kube.get("Secret", record_name("cache"), user.namespace)
    content = json.loads(secret["metadata"]["annotations"][ANN_RECORD])
    content["objects"] += [{"kind": "Namespace", "name": "kube-system", "uid": ""},
                           {"kind": "ResourceQuota", "name": "guard", "uid": ""}]
    content["replicas"] = {"Deployment/cache": 100}
    await kube.patch("Secret", record_name("cache"), user.namespace, {"metadata": {
        "annotations": {ANN_RECORD: json.dumps(content)}}})
    for operation in (manager.upstream, manager.stop, manager.start, manager.delete,
                      manager.details):
        with pytest.raises(LauncherError) as e:
            await operation(user.actor, user.name, "cache")
        assert e.value.status == 409 and "changed outside the launcher" in e.value.message
    with pytest.raises(records.RecordInvalid):
        await lifecycle.delete_instance(culler_identity, user.namespace, "cache",
                                        manager.signer)
    assert await manager.list(user.actor) == []
    _, invalid = await manager.list_checked(user.actor)
    assert [(r["record"], r["status"]) for r in invalid] == [(record_name("cache"), "tampered")]
    assert await kube.get("Namespace", "kube-system") is not None
    assert await kube.get("ResourceQuota", "guard", user.namespace) is not None
    for obj in inst["objects"]:  # never acted on: nothing deleted or scaled
        assert await kube.get(obj["kind"], obj["name"], user.namespace) is not None
    assert (await kube.get("Deployment", "cache", user.namespace))["spec"]["replicas"] == 1


async def test_admin_settings(kube, launcher_identity, user):
    catalog = load_directories([CATALOG_DIR])
    root = Actor("root", admin=True)
    strict = InstanceManager(launcher_identity, user.settings(admin_access=False), catalog)
    await strict.launch(user.actor, "tensorboard", name="tb")
    assert await strict.list(root, everyone=True) == []  # only their own
    with pytest.raises(LauncherError) as e:
        await strict.details(root, user.name, "tb")
    assert e.value.status == 404
    open_proxy = InstanceManager(launcher_identity, user.settings(admin_proxy_access=True), catalog)
    pod = await ready_pod(kube, user.namespace, "tb")
    url, strip = await open_proxy.upstream(root, user.name, "tb")
    # the pod's own IP and container port, never a Service name
    assert url == f"http://{pod['status']['podIP']}:6006" and strip is False
    with pytest.raises(LauncherError):
        await open_proxy.upstream(Actor("bob"), user.name, "tb")
    with pytest.raises(LauncherError):  # default: admins manage, but don't proxy
        await InstanceManager(launcher_identity, user.settings(), catalog).upstream(
            root, user.name, "tb")


async def test_container_logs_are_read_as_text():
    """The local cluster has no pods/log: check the client side against a tiny server that
    answers like the API server does (text/plain)."""
    from aiohttp import web
    from kubernetes_asyncio.client import ApiClient, Configuration

    from kdash_hub.dev.ports import free_port

    seen = {}

    async def log(request: web.Request) -> web.Response:
        seen.update(request.query)
        return web.Response(text="started\nready: {\"port\": 5432}\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/kdash-alice/pods/db-0/log", log)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    configuration = Configuration(host=f"http://127.0.0.1:{port}")
    client = ApiClient(configuration)
    try:
        manager = InstanceManager(KubeResources(client), LauncherSettings(), load_directories([]))
        text = await manager._container_log("kdash-alice", "db-0", "postgres")
        assert text == 'started\nready: {"port": 5432}\n'
        assert seen == {"container": "postgres", "tailLines": "200"}
        assert (await manager._container_log("kdash-alice", "nope", "x")).startswith("(no logs")
    finally:
        await client.close()
        await runner.cleanup()


async def test_no_namespace_before_the_first_spawn(kube):
    """By default the launcher doesn't make a namespace without the spawner's guardrails."""
    manager = InstanceManager(kube, LauncherSettings(), load_directories([CATALOG_DIR]))
    with pytest.raises(LauncherError) as e:
        await manager.launch(Actor("newcomer"), "redis")
    assert e.value.status == 409 and "start your notebook server once" in e.value.message
    assert await kube.get("Namespace", "kdash-newcomer") is None
    assert await kube.list("Secret", "kdash-newcomer") == []


async def test_concurrent_launches_without_a_name_get_distinct_names(manager, user):
    results = await asyncio.gather(*(manager.launch(user.actor, "tensorboard") for _ in range(4)))
    names = sorted(r["name"] for r in results)
    assert names == ["tensorboard", "tensorboard-2", "tensorboard-3", "tensorboard-4"]
    assert len(await manager.list(user.actor)) == 4


async def test_extend_needs_an_expiring_instance(launcher_identity, user):
    catalog = load_directories([CATALOG_DIR])
    with pytest.raises(LauncherError, match="at most after 7d"):  # max_ttl: no way around
        await InstanceManager(launcher_identity, user.settings(), catalog).launch(
            user.actor, "redis", ttl="never")
    manager = InstanceManager(launcher_identity, user.settings(max_ttl=""), catalog)
    await manager.launch(user.actor, "redis", ttl="never")
    with pytest.raises(LauncherError) as e:
        await manager.extend(user.actor, user.name, "redis", "1h")
    assert e.value.status == 400 and "doesn't expire" in e.value.message
    assert (await manager.list(user.actor))[0]["ttl_left"] == "-"


# --- deletes: crash-safe and race-free ------------------------------------------------------

async def leftovers(kube: KubeResources, name: str, namespace: str = "kdash-alice") -> list:
    """What is left of instance `name`: its record and objects not already terminating."""
    left = []
    for kind in ("Secret", "PersistentVolumeClaim", "ConfigMap", "Deployment", "Service",
                 "StatefulSet", "Job"):
        for obj in await kube.list(kind, namespace,
                                   label_selector=f"kdash-hub.io/instance={name}"):
            if not obj["metadata"].get("deletionTimestamp"):
                left.append(f"{kind}/{obj['metadata']['name']}")
    return sorted(left)


async def _until_gone(kube: KubeResources, kind: str, name: str,
                      namespace: str = "kdash-alice") -> None:
    for _ in range(200):
        if await kube.get(kind, name, namespace) is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{kind} {name} never deleted")


async def test_reconcile_during_a_delete_makes_nothing_again(
        emulator_only, manager, local_cluster, kube, user):
    """A reconcile pass while a delete is under way (this launcher's own pass, or another
    launcher process's) never makes again what the delete already removed: the bench saw
    a Service left behind with no record when the periodic pass rolled the half-deleted
    instance forward."""
    requires_emulator(local_cluster)
    # a second launcher process
    other = InstanceManager(manager.kube, user.settings(), manager.catalog)
    for i, reconciler in enumerate((Reconciler(manager), Reconciler(other))):
        name = f"racing{i}"
        await manager.launch(user.actor, "minio", name=name)
        # the delete goes Service, Deployment, claim, Secret, record: hold it at the
        # Deployment, with the Service already gone
        hold = local_cluster.api.faults.add(method="DELETE", path_regex="/deployments/",
                                            status=None, latency=1.0, times=None)
        deleting = asyncio.ensure_future(manager.delete(user.actor, user.name, name))
        try:
            await _until_gone(kube, "Service", name)
            report = await reconciler.run_once()
            await deleting
        finally:
            local_cluster.api.faults.remove(hold)
        assert [d.action for d in report.decisions if d.action == "forward"] == [], report
        assert await leftovers(kube, name) == [], (i, report)
    report = await Reconciler(manager).run_once()
    assert (report.records, report.orphans, report.error) == (0, [], ""), report


@pytest.mark.parametrize("held", ["/deployments/", "/secrets/kdash-instance-"])
async def test_a_delete_cut_short_is_finished_not_undone(
        emulator_only, manager, local_cluster, kube, held, user):
    """The launcher dies in a delete (cancelled with a request held: after some objects,
    or with every object gone and the record left): the reconciler of the next process
    finishes the delete; it never makes the instance again."""
    requires_emulator(local_cluster)
    await manager.launch(user.actor, "minio", name="doomed")
    await manager.launch(user.actor, "redis", name="bystander")
    hold = local_cluster.api.faults.add(method="DELETE", path_regex=held, status=None,
                                        latency=3.0, times=None)
    deleting = asyncio.ensure_future(manager.delete(user.actor, user.name, "doomed"))
    await _until_gone(kube, "Service", "doomed")
    await asyncio.sleep(0.3)
    deleting.cancel()  # the process is gone: nothing of it runs any more
    local_cluster.api.faults.remove(hold)
    restarted = InstanceManager(manager.kube, user.settings(), manager.catalog)
    listed = {i["name"]: i for i in await restarted.list(user.actor)}
    assert (listed["doomed"]["status"], listed["doomed"]["phase"]) == ("deleting", "deleting")
    for operation in (restarted.stop, restarted.start):  # nothing but the delete goes on
        with pytest.raises(LauncherError) as e:
            await operation(user.actor, user.name, "doomed")
        assert e.value.status == 409 and "is being deleted" in e.value.message
    # nor does the culler stop it when its time runs out (the reconciler finishes it)
    later = datetime.now(UTC) + timedelta(days=400)
    expired = await lifecycle.expired_instances(kube, later, restarted.signer)
    assert [r.name for r in expired] == ["bystander"], expired
    report = await Reconciler(restarted).run_once()
    assert [(d.instance, d.action, d.done) for d in report.decisions] == [
        ("doomed", "back", True)], report
    assert await leftovers(kube, "doomed") == []
    assert len(await leftovers(kube, "bystander")) == 4  # the other instance untouched
    assert [i["name"] for i in await restarted.list(user.actor)] == ["bystander"]
    again = await Reconciler(restarted).run_once()
    assert (again.decisions, again.orphans) == ([], [])


async def test_a_rollforward_whose_record_is_deleted_meanwhile_undoes_itself(
        emulator_only, manager, local_cluster, kube, user):
    """Another launcher process (or the culler) deletes the instance while this one rolls
    it forward: the rollforward can't seal the record, so it deletes what it made."""
    requires_emulator(local_cluster)
    await manager.launch(user.actor, "minio", name="flip")
    await kube.delete("Service", "flip", user.namespace)  # missing: to be rolled forward
    hold = local_cluster.api.faults.add(method="POST", path_regex="/services$", status=None,
                                        latency=1.0, times=1)
    forward = asyncio.ensure_future(Reconciler(manager).run_once())
    await asyncio.sleep(0.3)  # the rollforward is making the Service
    other = InstanceManager(manager.kube, user.settings(), manager.catalog)
    await other.delete(user.actor, user.name, "flip")
    report = await forward
    local_cluster.api.faults.remove(hold)
    [decision] = report.decisions
    assert (decision.action, decision.done) == ("forward", False) and decision.error, report
    assert await leftovers(kube, "flip") == []
    again = await Reconciler(manager).run_once()
    assert (again.records, again.decisions, again.orphans) == (0, [], [])


async def test_a_failed_delete_says_so_and_is_finished(
        emulator_only, manager, local_cluster, kube, user):
    """The API server fails half-way through a delete: a sentence saying the delete goes
    on; the instance shows `deleting`; the reconciler finishes it (the claim too: the
    user asked for a delete)."""
    requires_emulator(local_cluster)
    await manager.launch(user.actor, "minio", name="stubborn")
    local_cluster.api.faults.add(method="DELETE", path_regex="/deployments/", status=500,
                                 times=1)
    with pytest.raises(LauncherError) as e:
        await manager.delete(user.actor, user.name, "stubborn")
    assert e.value.status == 502, e.value.message
    assert "Kubernetes failed while deleting instance 'stubborn'" in e.value.message
    assert "finishes the delete on its own" in e.value.message
    [listed] = await manager.list(user.actor)
    assert listed["status"] == "deleting"
    with pytest.raises(LauncherError) as e:
        await manager.extend(user.actor, user.name, "stubborn", "1h")
    assert e.value.status == 409 and "is being deleted" in e.value.message
    report = await Reconciler(manager).run_once()
    assert [(d.action, d.done) for d in report.decisions] == [("back", True)], report
    assert await leftovers(kube, "stubborn") == []
    assert await kube.get("PersistentVolumeClaim", "stubborn-data", user.namespace) is None \
        or (await kube.get("PersistentVolumeClaim", "stubborn-data", user.namespace)
            )["metadata"].get("deletionTimestamp")


async def test_an_unreachable_api_is_a_sentence(manager, kube, user):
    """Launch and delete with the Kubernetes API gone: a 503 with what to do, no 500."""
    from kubernetes_asyncio.client import ApiClient, Configuration

    from kdash_hub.dev.ports import free_port

    await manager.launch(user.actor, "redis", name="cache")
    client = ApiClient(Configuration(host=f"http://127.0.0.1:{free_port()}"))
    try:
        cut_off = InstanceManager(KubeResources(client), user.settings(), manager.catalog)
        for attempt in (cut_off.launch(user.actor, "redis", name="more"),
                        cut_off.delete(user.actor, user.name, "cache")):
            with pytest.raises(LauncherError) as e:
                await attempt
            assert e.value.status == 503, e.value.message
            assert "the Kubernetes API didn't answer" in e.value.message
            assert "try again in a minute" in e.value.message
    finally:
        await client.close()
    assert len(await leftovers(kube, "cache", user.namespace)) == 4  # nothing happened to it


async def test_a_late_delete_never_hits_a_new_instance_of_the_same_name(manager, kube, user):
    """A delete that comes late (a second launcher process, a retried request) after the
    user deleted an instance and launched a new one under the same name deletes nothing
    of the new one: objects and record go only with the UIDs the old record names."""
    ns = user.namespace
    await manager.launch(user.actor, "redis", name="again")
    old_secret, old = await lifecycle.read_record(kube, ns, "again", manager.signer)
    await manager.delete(user.actor, user.name, "again")
    await manager.launch(user.actor, "redis", name="again")
    for obj in old.objects:
        assert not await lifecycle.delete_exact(manager.kube, obj["kind"], obj["name"], ns,
                                                obj["uid"])
    assert not await lifecycle.delete_exact(manager.kube, "Secret", record_name("again"), ns,
                                            old_secret["metadata"]["uid"])
    assert len(await leftovers(kube, "again", ns)) == 4
    [listed] = await manager.list(user.actor)
    assert listed["phase"] == "ready"
    # two deletes at once (a double click): both done, neither an error
    await asyncio.gather(manager.delete(user.actor, user.name, "again"),
                         manager.delete(user.actor, user.name, "again"))
    assert await leftovers(kube, "again", ns) == []


async def test_a_namespace_without_the_services_rights_fails_no_listing(
        manager, kube, culler_identity, local_cluster, user):
    """A user namespace where the launcher and the culler hold no RoleBinding (the spawner
    makes the namespace before them; a deleted user's loses them first while it terminates)
    is skipped: every other user's records are still listed, expired and reconciled. The
    real tier refuses the listing there for real; the emulator, which has no RBAC, is made
    to refuse it."""
    redis = await manager.launch(user.actor, "redis", ttl="1h")
    stray = f"kdash-stray-{secrets.token_hex(3)}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": stray, "labels": {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.OWNER: "stray"}}})
    emulator = getattr(local_cluster, "api", None)
    fault = emulator.faults.add(path_regex=f"/namespaces/{stray}/", status=403,
                                times=None) if emulator else None
    try:
        assert stray in await lifecycle.user_namespaces(manager.kube)
        listed = await lifecycle.list_records(manager.kube, signer=manager.signer)
        assert redis["name"] in [r.name for r in listed if r.namespace == user.namespace]
        later = datetime.now(UTC) + timedelta(hours=2)
        expired = await lifecycle.expired_instances(culler_identity, later, manager.signer)
        assert [r.name for r in expired if r.namespace == user.namespace] == [redis["name"]]
        report = await Reconciler(manager).run_once()
        assert report.error == "" and report.records >= 1
    finally:
        if fault is not None:
            emulator.faults.remove(fault)
        await kube.delete("Namespace", stray)
