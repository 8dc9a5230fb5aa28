"""Side services past their TTL, on the local cluster: stopped or deleted as their template
says, dry run first, and retries while the Kubernetes API is unavailable."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import pytest

from kdash_hub.labels import owner_labels
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from kdash_hub.services.culler.sideservices import SideServiceExpiry
from kdash_hub.services.launcher.instances import InstanceManager
from kdash_hub.services.launcher.notebookenv import (
    ENV_SECRET,
    FILES_DIR,
    FILES_SECRET,
    env_prefix,
    forget,
    set_notebook_env,
)
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR
from kdash_hub.services.launcher.signing import make_signer
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import requires_emulator


@pytest.fixture
def emulator_only(local_cluster) -> None:
    """Skip before any set-up when the test needs the emulator's fault injection."""
    requires_emulator(local_cluster)


@pytest.fixture
async def instances(kube, launcher_identity, instance_user):
    """Two of the user's instances, launched by the launcher's code with its identity."""
    user = instance_user
    manager = InstanceManager(launcher_identity, user.settings(ensure_namespace=False),
                              load_directories([CATALOG_DIR]))
    if not user.real:  # the real tier's user namespace is made by the hub's identity
        await kube.create({"apiVersion": "v1", "kind": "Namespace",  # as the spawner labels it
                           "metadata": {"name": user.namespace,
                                        "labels": owner_labels(user.name)}})
    pg = await manager.launch(user.actor, "postgresql", ttl="1h")  # template expiry: stop
    tb = await manager.launch(user.actor, "tensorboard", ttl="2h")  # template expiry: delete
    return pg["name"], tb["name"]


def make_culler(culler_hub, culler_kube, user, clock, delays, **settings):
    """The culler with its own identity (its token in the real tier) and the records'
    signing key."""
    async def record(seconds):
        delays.append(seconds)

    app = CullerApp(hub_api_url=culler_hub.api_url, api_token=culler_hub.culler_token,
                    side_services=True, opt_out_group="", **settings)
    side = SideServiceExpiry(culler_kube, retries=3, backoff_base=0.25, sleep=record,
                             signer=make_signer(user.signing_key))
    return app.make_culler(clock=clock, side_services=side)


async def test_expired_instances_are_stopped_or_deleted(culler_hub, kube, culler_identity,
                                                        instance_user, instances):
    pg, tb = instances
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=2, minutes=5))
    culler = make_culler(culler_hub, culler_identity, instance_user, clock, [], dry_run=True)
    try:
        report = await culler.run_once()
        assert sorted((r.name, r.action, r.done) for r in report.instances) == [
            (pg, "stop", False), (tb, "delete", False)]
        assert (await kube.get("Deployment", pg, instance_user.namespace))["spec"]["replicas"] == 1
        assert await kube.get("Deployment", tb, instance_user.namespace) is not None

        culler.options.dry_run = False
        report = await culler.run_once()
        assert sorted((r.name, r.action, r.done) for r in report.instances) == [
            (pg, "stop", True), (tb, "delete", True)]
        # stopped: scaled to zero, data and record kept; deleted: gone with its record
        assert (await kube.get("Deployment", pg, instance_user.namespace))["spec"]["replicas"] == 0
        assert await kube.get("PersistentVolumeClaim", f"{pg}-data", instance_user.namespace)
        assert await kube.get("Secret", record_name(pg), instance_user.namespace)
        assert await kube.get("Deployment", tb, instance_user.namespace) is None
        assert await kube.get("Secret", record_name(tb), instance_user.namespace) is None
        expired = {s.labels["action"]: s.value for m in culler.metrics.registry.collect()
                   for s in m.samples if s.name == "kdash_culler_expired_instances_total"}
        assert expired == {"stop": 1.0, "delete": 1.0}
        # nothing left to do
        assert (await culler.run_once()).instances == []
    finally:
        await culler.hub.close()


async def test_kubernetes_unavailable_is_retried_then_reported(
        emulator_only, culler_hub, kube, culler_identity, local_cluster, instance_user,
        instances):
    requires_emulator(local_cluster)
    pg, _ = instances
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=1, minutes=5))
    delays: list[float] = []
    culler = make_culler(culler_hub, culler_identity, instance_user, clock, delays)
    try:
        # two failures, then the API is back: the cycle succeeds after backing off
        local_cluster.api.faults.add(method="GET", path_regex="/secrets", status=503, times=2)
        report = await culler.run_once()
        assert delays == [0.25, 0.5]
        assert [(r.name, r.done) for r in report.instances] == [(pg, True)]
        assert not [e for e in report.errors if e.startswith("kubernetes")]

        # down for good: the cycle ends with an error, the culler doesn't crash
        delays.clear()
        local_cluster.api.faults.add(method="GET", path_regex="/secrets", status=503,
                                     times=None)
        report = await culler.run_once()
        assert delays == [0.25, 0.5, 1.0]
        assert any(e.startswith("kubernetes") for e in report.errors)
        errors = {s.labels["kind"]: s.value for m in culler.metrics.registry.collect()
                  for s in m.samples if s.name == "kdash_culler_errors_total"}
        assert errors.get("kubernetes") == 1.0
    finally:
        local_cluster.api.faults.clear()
        await culler.hub.close()


async def _secret_data(kube, name: str, namespace: str) -> dict[str, str] | None:
    secret = await kube.get("Secret", name, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def test_a_deleted_instance_leaves_the_owners_notebook(
        culler_hub, kube, culler_identity, launcher_identity, instance_user, instances):
    """The expired TensorBoard (expiry: delete) had its details in the notebook as
    variables, the PostgreSQL (expiry: stop) as files: the culler takes the deleted one's
    variables out (a key the user added stays) and leaves the stopped one's files."""
    pg, tb = instances
    user, ns = instance_user, instance_user.namespace
    manager = InstanceManager(launcher_identity, user.settings(ensure_namespace=False),
                              load_directories([CATALOG_DIR]))
    assert (await set_notebook_env(manager, user.actor, user.name, tb, True))["as"] == "env"
    done = await set_notebook_env(manager, user.actor, user.name, pg, True, as_="file")
    assert done["files"] == [f"{FILES_DIR}/{pg}.json", f"{FILES_DIR}/{pg}.env"]
    files_before = await _secret_data(kube, FILES_SECRET, ns)
    assert sorted(files_before) == [f"{pg}.env", f"{pg}.json"]
    env_before = await _secret_data(kube, ENV_SECRET, ns)
    assert {f"{env_prefix(tb)}HOST", f"{env_prefix(tb)}URL"} <= set(env_before)
    # the user's own key in the env Secret (kubectl edit): not the culler's to remove
    await kube.patch("Secret", ENV_SECRET, ns, {"data": {"MY_TOKEN": "c2VjcmV0"}})

    clock = ManualClock(datetime.now(UTC) + timedelta(hours=2, minutes=5))
    culler = make_culler(culler_hub, culler_identity, instance_user, clock, [])
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("kdash_hub.services.culler")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        report = await culler.run_once()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        await culler.hub.close()
    assert sorted((r.name, r.action, r.done) for r in report.instances) == [
        (pg, "stop", True), (tb, "delete", True)]
    assert await _secret_data(kube, ENV_SECRET, ns) == {"MY_TOKEN": "secret"}
    assert await _secret_data(kube, FILES_SECRET, ns) == files_before  # stopped: kept
    removed = [r for r in records if getattr(r, "event", "") == "notebook-details-removed"]
    assert [(r.fields["instance"], r.fields["keys"]) for r in removed] == [
        (tb, len(env_before))]


async def test_forget_touches_only_the_instances_keys_in_the_launchers_secrets(
        kube, culler_identity, launcher_identity, instance_user, instances):
    """`forget` with the culler's identity: a Secret left empty is deleted; one whose
    labels the user changed, or that names another owner, is left as it is; keys of a
    name that merely starts like the instance's stay."""
    pg, tb = instances
    user, ns = instance_user, instance_user.namespace
    manager = InstanceManager(launcher_identity, user.settings(ensure_namespace=False),
                              load_directories([CATALOG_DIR]))
    await set_notebook_env(manager, user.actor, user.name, tb, True, as_="file")
    await set_notebook_env(manager, user.actor, user.name, pg, True)
    # a prefix of another instance's names (tb "x" vs "x-y"): never taken for it
    await kube.patch("Secret", ENV_SECRET, ns, {"data": {
        f"{env_prefix(pg + '-2')}HOST": "aG9zdA=="}})
    assert await forget(culler_identity, ns, user.name, tb) == [f"{tb}.json", f"{tb}.env"]
    assert await kube.get("Secret", FILES_SECRET, ns) is None  # empty: deleted
    before = await _secret_data(kube, ENV_SECRET, ns)
    removed = await forget(culler_identity, ns, user.name, pg)
    assert sorted(removed) == sorted(k for k in before if not k.startswith(
        env_prefix(pg + "-2")))
    assert await _secret_data(kube, ENV_SECRET, ns) == {f"{env_prefix(pg + '-2')}HOST": "host"}

    # the user relabels the Secret, or claims another owner: the culler leaves it alone
    await set_notebook_env(manager, user.actor, user.name, tb, True)
    for labels in ({"kdash-hub.io/component": "mine"}, {"kdash-hub.io/owner": "someone"}):
        saved = (await kube.get("Secret", ENV_SECRET, ns))["metadata"]["labels"]
        await kube.patch("Secret", ENV_SECRET, ns, {"metadata": {"labels": labels}})
        assert await forget(culler_identity, ns, user.name, tb) == []
        assert f"{env_prefix(tb)}HOST" in await _secret_data(kube, ENV_SECRET, ns)
        await kube.patch("Secret", ENV_SECRET, ns, {"metadata": {"labels": saved}})
    # nothing there: nothing to do
    await set_notebook_env(manager, user.actor, user.name, tb, False)
    await set_notebook_env(manager, user.actor, user.name, pg, False)
    assert await forget(culler_identity, ns, user.name, tb) == []
