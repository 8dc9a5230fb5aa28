"""A user's rights in their namespace (the RoleBindings) are written only once their quota is
in force: a real API server ignores a ResourceQuota until its controller has filled in the
status, so rights written a moment after the quota would let a user's first objects past it.
The emulator fills the status in at once; a fake API here withholds it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.spawner import bundle
from kdash_hub.spawner.provision import BundleError, BundleProvisioner
from tests.unit.test_spawner_bundle import SERVICE_ROLES, spec


class QuotaControllerLate:
    """Create/get/patch of bundle objects in memory, as the admin (cluster-wide rights);
    the quota's status appears only after `polls` reads of it (None: never)."""

    def __init__(self, polls: int | None):
        self.polls = polls
        self.objects: dict[tuple[str, str], dict] = {}
        self.writes: list[str] = []
        self.api_client = object()

    async def can_i(self, *args, **kwargs) -> bool:
        return True

    async def create(self, obj: dict) -> dict:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.writes.append(obj["kind"])
        self.objects[key] = {**obj, "metadata": {**obj["metadata"]}}
        return self.objects[key]

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        obj = self.objects.get((kind, name))
        if kind == "ResourceQuota" and obj is not None and self.polls is not None:
            if self.polls == 0:
                hard = obj["spec"]["hard"]
                obj["status"] = {"hard": dict(hard), "used": {k: "0" for k in hard}}
            else:
                self.polls -= 1
        return obj

    async def patch(self, kind: str, name: str, namespace, patch: dict, **kw) -> dict:
        self.writes.append(f"PATCH {kind}")
        return self.objects.setdefault((kind, name), {"metadata": {}})


def provisioner(api: QuotaControllerLate) -> BundleProvisioner:
    p = BundleProvisioner(api, logging.getLogger("test"), mode="hash")  # type: ignore[arg-type]
    p.QUOTA_WAIT_SECONDS = 0.5
    return p


def user_spec():
    return spec("quinn", service_roles=SERVICE_ROLES, cluster_role="kdash-user")


async def test_the_rights_wait_for_the_quota_to_be_in_force():
    api = QuotaControllerLate(polls=5)
    p = provisioner(api)
    assert await p.ensure(user_spec(), lambda m: None, finish_later=True) == "created"
    # made before the pod: no quota and no rights yet
    assert "ResourceQuota" not in api.writes and "RoleBinding" not in api.writes, api.writes
    assert {"LimitRange", "NetworkPolicy", "ServiceAccount"} <= set(api.writes)
    await p.finish()
    quota = api.writes.index("ResourceQuota")
    bindings = [i for i, w in enumerate(api.writes) if w == "RoleBinding"]
    assert len(bindings) == 3 and min(bindings) > quota, api.writes
    assert api.polls == 0  # the rights went only after the status appeared
    assert api.writes[-1] == "PATCH Namespace"  # then the completion mark


FULL = [{"resources": {"limits": {"cpu": 1, "memory": 10**9}}}]


@pytest.mark.parametrize("containers, before_pod", [
    (None, True),  # unknown (a modify_pod_hook): before
    (FULL, False),
    (FULL + [{"name": "sidecar"}], True),
])
async def test_the_limit_range_waits_for_the_pod_only_when_the_pod_needs_none_of_it(
        containers, before_pod):
    api = QuotaControllerLate(polls=1)
    p = provisioner(api)
    await p.ensure(user_spec(), lambda m: None, finish_later=True, pod_containers=containers)
    assert ("LimitRange" in api.writes) is before_pod, api.writes
    await p.finish()
    # either way, in place before any right to make a pod in the namespace
    first_right = api.writes.index("RoleBinding")
    assert api.writes.index("LimitRange") < first_right, api.writes
    assert api.writes.index("ResourceQuota") < first_right and api.polls == 0


async def test_without_finish_later_the_quota_still_goes_before_the_rights():
    api = QuotaControllerLate(polls=3)
    await provisioner(api).ensure(user_spec(), lambda m: None)
    bindings = [i for i, w in enumerate(api.writes) if w == "RoleBinding"]
    assert min(bindings) > api.writes.index("ResourceQuota") and api.polls == 0, api.writes


async def test_a_quota_never_in_force_grants_nothing():
    """Attack: with the quota controller stalled, no right is written at all, the start fails
    with a sentence, and the namespace is not marked complete (the next start finishes)."""
    api = QuotaControllerLate(polls=None)
    p = provisioner(api)
    await p.ensure(user_spec(), lambda m: None, finish_later=True)
    with pytest.raises(BundleError) as e:
        await p.finish()
    assert e.value.status == 503 and "quota is not in force" in e.value.message
    assert "RoleBinding" not in api.writes and "PATCH Namespace" not in api.writes, api.writes


def test_a_quota_is_in_force_only_with_a_status_for_each_limit():
    quota = bundle.resource_quota(user_spec())
    assert not bundle.quota_enforced(quota)
    hard = quota["spec"]["hard"]
    quota["status"] = {"hard": dict(hard), "used": {}}
    assert not bundle.quota_enforced(quota)  # admission refuses all ("status unknown")
    quota["status"]["used"] = {k: "0" for k in list(hard)[:-1]}
    assert not bundle.quota_enforced(quota)
    quota["status"]["used"] = {k: "0" for k in hard}
    assert bundle.quota_enforced(quota)


async def test_an_admin_without_a_quota_waits_for_nothing():
    api = QuotaControllerLate(polls=None)
    p = provisioner(api)
    await asyncio.wait_for(p.ensure(spec("quinn", quota={}, service_roles=SERVICE_ROLES),
                                    lambda m: None), 5)
    assert "RoleBinding" in api.writes


class WatchCopy:
    """A stand-in for the drift watch: running, its copy of the quota given (or none)."""

    ready = True

    def __init__(self, quota: dict | None):
        self.quota = quota

    def cached(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.quota if kind == "ResourceQuota" else None


class CountedReads(QuotaControllerLate):
    def __init__(self, polls: int | None):
        super().__init__(polls)
        self.reads = 0

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        self.reads += kind == "ResourceQuota"
        return await super().get(kind, name, namespace)


async def test_a_quota_the_watch_shows_in_force_costs_no_read():
    api = CountedReads(polls=None)
    quota = bundle.resource_quota(user_spec())
    await api.create(quota)
    p = provisioner(api)
    hard = quota["spec"]["hard"]
    p.drift = WatchCopy({**quota, "status": {"hard": hard, "used": {k: "0" for k in hard}}})
    await p._quota_enforced(user_spec())
    assert api.reads == 0


async def test_a_quota_controller_that_lags_is_asked_ever_less_often():
    """Hundreds of starts wait on one busy quota controller: each reads the quota from the
    API only after the watch's copy had its time, then at doubling pauses (the copy between
    them), not ten times a second until the deadline; and still grants nothing."""
    api = CountedReads(polls=None)
    await api.create(bundle.resource_quota(user_spec()))
    p = provisioner(api)
    p.drift = WatchCopy(None)  # the watch has not seen the status either
    p.QUOTA_WATCH_SECONDS, p.QUOTA_WAIT_SECONDS = 0.2, 2.5
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(BundleError):
        await p._quota_enforced(user_spec())
    assert asyncio.get_running_loop().time() - t0 >= 2.5
    # 0.2 s of the copy, then pauses of 5, 10, 20, 50, 100, 200, 400, 800 ms, 1 s: 10 reads
    # (every 100 ms it was 24)
    assert 5 <= api.reads <= 12, api.reads
    # the status appears: found by the next read, though the copy still lags
    api.polls, before = 0, api.reads
    p.QUOTA_WAIT_SECONDS = 5.0
    await p._quota_enforced(user_spec())
    assert api.reads == before + 1
