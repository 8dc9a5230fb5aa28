"""Side services past their TTL, on the local cluster: stopped or deleted as their template
says, dry run first, and retries while the Kubernetes API is unavailable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kdash_hub.labels import owner_labels
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from kdash_hub.services.culler.sideservices import SideServiceExpiry
from kdash_hub.services.launcher.instances import Actor, InstanceManager
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR, LauncherSettings
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import requires_emulator

ALICE = Actor("alice")


@pytest.fixture
async def instances(kube):
    manager = InstanceManager(kube, LauncherSettings(), load_directories([CATALOG_DIR]))
    await kube.create({"apiVersion": "v1", "kind": "Namespace",  # as the spawner labels it
                       "metadata": {"name": "kdash-alice", "labels": owner_labels("alice")}})
    pg = await manager.launch(ALICE, "postgresql", ttl="1h")  # template expiry: stop
    tb = await manager.launch(ALICE, "tensorboard", ttl="2h")  # template expiry: delete
    return pg["name"], tb["name"]


def make_culler(culler_hub, kube, clock, delays, **settings):
    async def record(seconds):
        delays.append(seconds)

    app = CullerApp(hub_api_url=culler_hub.api_url, api_token=culler_hub.culler_token,
                    side_services=True, opt_out_group="", **settings)
    side = SideServiceExpiry(kube, retries=3, backoff_base=0.25, sleep=record)
    return app.make_culler(clock=clock, side_services=side)


async def test_expired_instances_are_stopped_or_deleted(culler_hub, kube, instances):
    pg, tb = instances
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=2, minutes=5))
    culler = make_culler(culler_hub, kube, clock, [], dry_run=True)
    try:
        report = await culler.run_once()
        assert sorted((r.name, r.action, r.done) for r in report.instances) == [
            (pg, "stop", False), (tb, "delete", False)]
        assert (await kube.get("Deployment", pg, "kdash-alice"))["spec"]["replicas"] == 1
        assert await kube.get("Deployment", tb, "kdash-alice") is not None

        culler.options.dry_run = False
        report = await culler.run_once()
        assert sorted((r.name, r.action, r.done) for r in report.instances) == [
            (pg, "stop", True), (tb, "delete", True)]
        # stopped: scaled to zero, data and record kept; deleted: gone with its record
        assert (await kube.get("Deployment", pg, "kdash-alice"))["spec"]["replicas"] == 0
        assert await kube.get("PersistentVolumeClaim", f"{pg}-data", "kdash-alice")
        assert await kube.get("Secret", record_name(pg), "kdash-alice")
        assert await kube.get("Deployment", tb, "kdash-alice") is None
        assert await kube.get("Secret", record_name(tb), "kdash-alice") is None
        expired = {s.labels["action"]: s.value for m in culler.metrics.registry.collect()
                   for s in m.samples if s.name == "kdash_culler_expired_instances_total"}
        assert expired == {"stop": 1.0, "delete": 1.0}
        # nothing left to do
        assert (await culler.run_once()).instances == []
    finally:
        await culler.hub.close()


async def test_kubernetes_unavailable_is_retried_then_reported(
        culler_hub, kube, local_cluster, instances):
    requires_emulator(local_cluster)
    pg, _ = instances
    clock = ManualClock(datetime.now(UTC) + timedelta(hours=1, minutes=5))
    delays: list[float] = []
    culler = make_culler(culler_hub, kube, clock, delays)
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
