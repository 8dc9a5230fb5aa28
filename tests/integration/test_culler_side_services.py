"""Side services past their TTL, on the local cluster: stopped or deleted as their template
says, dry run first, and retries while the Kubernetes API is unavailable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kdash_hub.labels import owner_labels
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from kdash_hub.services.culler.sideservices import SideServiceExpiry
from kdash_hub.services.launcher.instances import InstanceManager
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
