"""A small, generic Kubernetes resource client on top of kubernetes_asyncio's ApiClient.

KubeSpawner already holds a configured kubernetes_asyncio ApiClient; this wraps that same
client (no second HTTP stack) so every part can create, read, patch and "ensure" objects
given as plain dicts, whatever their kind.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("v1", "namespaces", namespaced=False),
    "Node": Resource("v1", "nodes", namespaced=False),
    "PersistentVolume": Resource("v1", "persistentvolumes", namespaced=False),
    "Pod": Resource("v1", "pods"),
    "Service": Resource("v1", "services"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "Secret": Resource("v1", "secrets"),
    "ConfigMap": Resource("v1", "configmaps"),
    "ServiceAccount": Resource("v1", "serviceaccounts"),
    "Event": Resource("v1", "events"),
    "ResourceQuota": Resource("v1", "resourcequotas"),
    "LimitRange": Resource("v1", "limitranges"),
    "Deployment": Resource("apps/v1", "deployments"),
    "StatefulSet": Resource("apps/v1", "statefulsets"),
    "ReplicaSet": Resource("apps/v1", "replicasets"),
    "Job": Resource("batch/v1", "jobs"),
    "CronJob": Resource("batch/v1", "cronjobs"),
    # Argo Workflows' CRDs (served only where an admin installed Argo)
    "Workflow": Resource("argoproj.io/v1alpha1", "workflows"),
    "CronWorkflow": Resource("argoproj.io/v1alpha1", "cronworkflows"),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies"),
    "Ingress": Resource("networking.k8s.io/v1", "ingresses"),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": Resource("rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource(
        "rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False
    ),
    "SelfSubjectAccessReview": Resource(
        "authorization.k8s.io/v1", "selfsubjectaccessreviews", namespaced=False
    ),
}

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

# fields that are not the desired state of an object
_NOT_SPEC = {"apiVersion", "kind", "metadata", "status"}
# fields that can't change after creation: a difference means delete and recreate
_IMMUTABLE = {"RoleBinding": ("roleRef",), "ClusterRoleBinding": ("roleRef",)}


class _Serializer(ApiClient):
    """kubernetes_asyncio's model-to-JSON conversion alone: no configuration, no HTTP
    session (a throwaway ApiClient() opens an aiohttp session that is never closed)."""

    def __init__(self) -> None:
        pass


_SERIALIZER = _Serializer()


def to_json(value: Any) -> Any:
    """A kubernetes_asyncio model (or dicts and lists holding models) as the API's JSON."""
    return _SERIALIZER.sanitize_for_serialization(value)


def environment_routes_requests() -> bool:
    """True when this process's environment could change where or how a request goes: a
    proxy variable (HTTPS_PROXY, NO_PROXY...) or a netrc file (aiohttp reads one for
    credentials of hosts without an Authorization header)."""
    if urllib.request.getproxies():
        return True
    netrc = os.environ.get("NETRC")
    return Path(netrc).exists() if netrc else (Path.home() / ".netrc").exists()


def without_environment_lookups(api_client: ApiClient) -> bool:
    """Stop `api_client` from asking the environment for a proxy and a netrc entry on every
    request, when there is neither (True: it was changed, or was already).

    kubernetes_asyncio opens its aiohttp session with `trust_env=True`, so each request
    hands both lookups to a worker thread: about 1 ms a request on this 2-core machine,
    and the bundle's parallel creates queue behind the thread hops. With no proxy variable
    and no netrc file both lookups find nothing, so the requests go exactly where they went.
    The session is swapped for one over the same connection pool (same TLS context, same
    pool size) that skips them; where the environment has either, nothing changes."""
    rest = getattr(api_client, "rest_client", None)
    session = getattr(rest, "pool_manager", None)
    if not isinstance(session, aiohttp.ClientSession):  # not kubernetes_asyncio's client
        return False
    if not session.trust_env:
        return True
    if environment_routes_requests():
        return False
    rest.pool_manager = aiohttp.ClientSession(
        connector=session.connector, trust_env=False,
        read_bufsize=KUBERNETES_ASYNCIO_READ_BUFSIZE)
    session.detach()  # closed, without closing the connection pool it handed over
    return True


# kubernetes_asyncio's session reads in 2 MiB chunks: a watch event of a large object
# (etcd takes up to 1.5 MiB) must fit
KUBERNETES_ASYNCIO_READ_BUFSIZE = 2**21


def resource_for(kind: str) -> Resource:
    """The Resource of `kind`, or a ValueError naming the kinds we know."""
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(RESOURCES)}") from None


def api_error_message(exc: ApiException) -> str:
    """The human message of a Kubernetes Status error (falls back to the HTTP reason)."""
    try:
        body = json.loads(exc.body or "{}")
        return body.get("message") or exc.reason or str(exc.status)
    except (TypeError, ValueError):
        return str(exc.reason or exc.status)


def api_error_reason(exc: ApiException) -> str:
    """The machine reason of a Kubernetes Status error, e.g. 'AlreadyExists', 'Forbidden'."""
    try:
        return json.loads(exc.body or "{}").get("reason") or ""
    except (TypeError, ValueError):
        return ""


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field of `desired` has the same value in `actual` (lists exactly)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            is_subset(v, actual.get(k)) for k, v in desired.items()
        )
    return desired == actual


def _desired_patch(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    patch: dict[str, Any] = {k: v for k, v in obj.items() if k not in _NOT_SPEC}
    patch["metadata"] = {
        k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta
    }
    return patch


class KubeResources:
    """Create / get / list / patch / delete / ensure objects of any known kind as dicts."""

    def __init__(self, api_client: ApiClient):
        self.api_client = api_client

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request through the ApiClient's own REST client, headers and credentials,
        answered as parsed JSON (None for a status other than 200, 201 and 202).

        Not through `call_api`: bodies here are JSON values already (models are converted
        by `to_json` where they are built) and answers stay dicts, so its walk of every
        header and body through `sanitize_for_serialization` and of every answer through
        its deserializer is pure cost: 10 to 17 % of a request's CPU in the client.
        Errors are `call_api`'s: an ApiException whose `body` is text."""
        client = self.api_client
        headers = {"Accept": "application/json", "Content-Type": content_type,
                   **client.default_headers}
        if client.cookie:
            headers["Cookie"] = client.cookie
        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        await client.update_params_for_auth(headers, query_params, ["BearerToken"])
        try:
            response = await client.rest_client.request(
                method, client.configuration.host + path, query_params=query_params,
                headers=headers, body=body)
        except ApiException as e:
            if isinstance(e.body, bytes):
                e.body = e.body.decode("utf-8", "replace")
            raise
        if response.status not in (200, 201, 202):
            return None
        try:
            return json.loads(response.data)
        except ValueError:
            return response.data.decode("utf-8", "replace")

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", resource_for(kind).path(namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        """Items of `kind` (in `namespace`, or everywhere when it is None), each with its
        `kind` and `apiVersion`: a real API server leaves both out of a list's items."""
        resource = resource_for(kind)
        result = await self.request(
            "GET",
            resource.path(namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        items = list(result.get("items") or [])
        for item in items:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", resource.api_version)
        return items

    async def create(self, obj: dict) -> dict:
        """Create `obj` (raises ApiException, e.g. 409 when it exists)."""
        meta = obj.get("metadata") or {}
        path = resource_for(obj["kind"]).path(meta.get("namespace"))
        return await self.request("POST", path, body=obj)

    async def replace(self, obj: dict) -> dict:
        meta = obj["metadata"]
        path = resource_for(obj["kind"]).path(meta.get("namespace"), meta["name"])
        return await self.request("PUT", path, body=obj)

    async def patch(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> dict:
        path = resource_for(kind).path(namespace, name)
        if subresource:
            path += f"/{subresource}"
        return await self.request("PATCH", path, body=patch, content_type=content_type)

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete; True when something was deleted, False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                resource_for(kind).path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1",
                      "propagationPolicy": propagation},
            )
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    async def can_i(self, verb: str, resource: str, *, group: str = "",
                    namespace: str | None = None) -> bool | None:
        """Whether this client's identity may `verb` `resource` (in `namespace`, or
        cluster-wide), by a SelfSubjectAccessReview; None when the server can't tell (it
        serves no such API, or refuses the review)."""
        attributes = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}
        try:
            answer = await self.create(review)
        except ApiException as e:
            if e.status in (403, 404, 405):
                return None
            raise
        return bool((answer.get("status") or {}).get("allowed"))

    async def ensure(self, obj: dict) -> tuple[str, dict]:
        """Make the object exist as described: create it, or reconcile a drifted one.

        Returns (action, object) with action one of "created", "unchanged", "updated",
        "recreated". An existing object is reconciled whether the create met 409 or a
        quota's 403 (a missing one then raises that 403). Labels, annotations and every
        top-level field but status are reconciled with a merge patch; a change to an
        immutable field (a binding's roleRef) deletes and recreates the object.
        """
        meta = obj["metadata"]
        try:
            return "created", await self.create(obj)
        except ApiException as e:
            if e.status not in (409, 403):
                raise
            # a real API server's admission (a full ResourceQuota) answers a create before
            # its storage does: an object that exists gets 403, not 409
            existing = await self.get(obj["kind"], meta["name"], meta.get("namespace"))
            if existing is None and e.status == 403:
                raise
        if existing is None:  # deleted between our create and get: try once more
            return "created", await self.create(obj)
        return await self.reconcile(obj, existing)

    async def reconcile(self, obj: dict, existing: dict) -> tuple[str, dict]:
        """Bring `existing` in line with `obj` (see `ensure`); no request when it matches."""
        desired = _desired_patch(obj)
        if is_subset(desired, existing):
            return "unchanged", existing
        meta = obj["metadata"]
        immutable = _IMMUTABLE.get(obj["kind"], ())
        if any(not is_subset(obj.get(f), existing.get(f)) for f in immutable):
            await self.delete(obj["kind"], meta["name"], meta.get("namespace"))
            return "recreated", await self.create(obj)
        updated = await self.patch(obj["kind"], meta["name"], meta.get("namespace"), desired)
        return "updated", updated
