"""KubeResources.ensure in a namespace whose ResourceQuota is full (both tiers).

A real API server's admission answers a create before its storage does, so creating an
object that exists where the quota is used up gets 403 "exceeded quota", not 409: the start
that re-ensures the bundle (its datasets Secrets, a claim) must still find it in place.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from kubernetes_asyncio.client.exceptions import ApiException


def secret(namespace: str, name: str, value: str = "YQ==") -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": {"k": value}}


async def full_namespace(kube) -> str:
    namespace = f"full-quota-{secrets.token_hex(3)}"
    await kube.create({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": namespace}})
    await kube.create({"apiVersion": "v1", "kind": "ResourceQuota",
                       "metadata": {"name": "q", "namespace": namespace},
                       "spec": {"hard": {"count/secrets": "1"}}})
    await until_quota(kube, namespace, lambda status: status.get("hard"))  # in force
    await kube.create(secret(namespace, "held"))  # counted by the quota's admission
    await until_quota(kube, namespace,
                      lambda status: (status.get("used") or {}).get("count/secrets") == "1")
    return namespace


async def until_quota(kube, namespace: str, ready) -> None:
    status: dict = {}
    for _ in range(300):
        status = (await kube.get("ResourceQuota", "q", namespace)).get("status") or {}
        if ready(status):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the quota is not as expected: {status}")


async def test_an_existing_object_is_reconciled_when_the_quota_is_full(local_cluster, kube):
    namespace = await full_namespace(kube)
    try:
        assert (await kube.ensure(secret(namespace, "held")))[0] == "unchanged"
        action, updated = await kube.ensure(secret(namespace, "held", "Yg=="))
        assert action == "updated" and updated["data"] == {"k": "Yg=="}
        # a new object still meets the quota, with the API server's own refusal
        with pytest.raises(ApiException) as refused:
            await kube.ensure(secret(namespace, "another"))
        assert refused.value.status == 403 and "quota" in refused.value.body
        assert await kube.get("Secret", "another", namespace) is None
    finally:
        await kube.delete("Namespace", namespace)
