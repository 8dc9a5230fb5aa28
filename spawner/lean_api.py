"""KubeSpawner's CoreV1Api, with the requests every start and stop makes sent as JSON.

KubeSpawner makes a start's pod and home claim, and deletes the pod on stop, through
kubernetes_asyncio's `call_api`, which turns each answer into models (a V1Pod: its whole
spec and status) that KubeSpawner never reads: it uses only whether the call raised. For a
pod that model is more of the hub's CPU than the rest of the request, and a hub at 200
spawns at once is bound by its CPU. Those three calls go through KubeResources (the same
REST client, credentials, default headers and ApiException as `call_api`'s); a call with
arguments other than the ones KubeSpawner passes today, and every other method, is
KubeSpawner's client unchanged. docs/upstream.md says why this is safe and what pins it.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client import CoreV1Api

from kdash_hub.kube import KubeResources, resource_for


class LeanCoreV1Api:
    """Wraps `api` (KubeSpawner's `self.api`); answers are dicts, never models."""

    def __init__(self, api: CoreV1Api):
        self._api = api
        self._resources = KubeResources(api.api_client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def _as_json(self, kind: str, namespace: str, body: Any) -> dict:
        obj = self._api.api_client.sanitize_for_serialization(body)
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("metadata", {})["namespace"] = namespace
        return obj

    async def create_namespaced_pod(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        if kwargs:
            return await self._api.create_namespaced_pod(namespace, body, **kwargs)
        return await self._resources.create(self._as_json("Pod", namespace, body))

    async def create_namespaced_persistent_volume_claim(self, namespace: str, body: Any,
                                                        **kwargs: Any) -> Any:
        if kwargs:
            return await self._api.create_namespaced_persistent_volume_claim(
                namespace=namespace, body=body, **kwargs)
        return await self._resources.create(
            self._as_json("PersistentVolumeClaim", namespace, body))

    async def delete_namespaced_pod(self, name: str, namespace: str, body: Any = None,
                                    grace_period_seconds: int | None = None,
                                    **kwargs: Any) -> Any:
        if kwargs:
            return await self._api.delete_namespaced_pod(
                name=name, namespace=namespace, body=body,
                grace_period_seconds=grace_period_seconds, **kwargs)
        options = self._api.api_client.sanitize_for_serialization(body)
        return await self._resources.request(
            "DELETE", resource_for("Pod").path(namespace, name), body=options,
            query={"gracePeriodSeconds": grace_period_seconds})
