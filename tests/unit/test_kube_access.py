"""KubeResources.can_i: what an identity may do, by the API server's own access review.

The provisioner asks it once per client whether the hub already holds, cluster-wide, the
rights its RoleBinding gives in a user namespace: only then may that binding go in the same
round as the rest of the bundle.
"""

from __future__ import annotations

import pytest

from kdash_hub.kube import KubeResources
from kdash_hub.spawner.provision import BundleProvisioner
from tests.fixtures.cluster import api_client_for, requires_emulator

PROBE = BundleProvisioner.RIGHTS_PROBE_NAMESPACE


async def test_the_admin_may_and_the_answer_is_a_bool(kube):
    # the emulator authorizes everything; a real server's admin is in system:masters
    assert await kube.can_i("create", "serviceaccounts", namespace=PROBE) is True
    assert await kube.can_i("create", "namespaces") is True
    assert await kube.can_i("list", "rolebindings", group="rbac.authorization.k8s.io") is True


@pytest.mark.parametrize("status", [403, 404, 405])
async def test_a_refused_or_missing_review_is_no_answer(local_cluster, kube, status):
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="POST", path_regex="selfsubjectaccessreviews",
                                 status=status, times=None)
    assert await kube.can_i("create", "serviceaccounts", namespace=PROBE) is None


async def test_a_server_error_is_raised(local_cluster, kube):
    requires_emulator(local_cluster)
    local_cluster.api.faults.add(method="POST", path_regex="selfsubjectaccessreviews",
                                 status=500)
    with pytest.raises(Exception) as e:
        await kube.can_i("create", "serviceaccounts", namespace=PROBE)
    assert getattr(e.value, "status", None) == 500


async def test_the_hubs_service_account_holds_no_rights_in_user_namespaces(real_control_plane):
    """With exactly what helm-values/rbac ships, the hub may make namespaces, but its rights
    inside one come only from the RoleBinding it makes there: its binding goes first."""
    async with api_client_for(real_control_plane.identity("hub")) as client:
        hub = KubeResources(client)
        assert await hub.can_i("create", "namespaces") is True
        for resource in ("serviceaccounts", "resourcequotas", "pods", "persistentvolumeclaims"):
            assert await hub.can_i("create", resource, namespace=PROBE) is False, resource
        assert await hub.can_i("create", "networkpolicies", group="networking.k8s.io",
                               namespace=PROBE) is False


async def test_the_provisioner_asks_once_per_client(local_cluster, kube):
    """The review is asked once per API client, and its answer remembered."""
    requires_emulator(local_cluster)
    log = local_cluster.api.request_log
    provisioner = BundleProvisioner(kube, log=None)
    n = len(log)
    assert await provisioner._holds_rights() is True
    assert await BundleProvisioner(kube, log=None)._holds_rights() is True
    reviews = [p for m, p, _ in list(log)[n:] if "selfsubjectaccessreviews" in p]
    assert len(reviews) == 1


async def test_to_json_converts_models_without_opening_a_client(recwarn):
    """The conversion of models to the API's JSON opens no HTTP session (a throwaway
    ApiClient() leaves an unclosed aiohttp session per call: one per restricted pod)."""
    import gc

    from kubernetes_asyncio.client import V1Capabilities, V1SecurityContext

    from kdash_hub.kube import to_json

    context = V1SecurityContext(run_as_user=1000, capabilities=V1Capabilities(drop=["ALL"]))
    assert to_json(context) == {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}
    assert to_json({"a": [context], "b": None}) == {"a": [to_json(context)], "b": None}
    gc.collect()
    assert not [w for w in recwarn if "Unclosed" in str(w.message)]
