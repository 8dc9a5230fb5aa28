"""Server-side apply of manifests through the API's own discovery, like `kubectl apply
--server-side`: each object's resource path comes from the server's discovery documents,
so any kind the server serves can be applied, or only dry-run (`dryRun=All`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..apiclient import ApiError, KubeHTTP

APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Resource:
    path: str  # /api/v1 or /apis/group/version
    plural: str
    namespaced: bool


class Discovery:
    """Kind -> resource path, read once per group version from the server."""

    def __init__(self, api: KubeHTTP):
        self.api = api
        self._known: dict[tuple[str, str], Resource] = {}
        self._read: set[str] = set()

    async def resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key not in self._known and api_version not in self._read:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listing = await self.api.request("GET", base)
            except ApiError as e:
                if e.status != 404:
                    raise
                listing = {}
            self._read.add(api_version)
            for item in listing.get("resources") or []:
                if "/" not in item["name"]:
                    self._known[(api_version, item["kind"])] = Resource(
                        base, item["name"], bool(item.get("namespaced")))
        if key not in self._known:
            raise LookupError(f"the server does not serve {kind} in {api_version}")
        return self._known[key]

    async def path_of(self, obj: dict, namespace: str | None = None) -> str:
        resource = await self.resource(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        if resource.namespaced:
            ns = meta.get("namespace") or namespace or "default"
            return f"{resource.path}/namespaces/{ns}/{resource.plural}/{meta['name']}"
        return f"{resource.path}/{resource.plural}/{meta['name']}"


async def apply_objects(api: KubeHTTP, objects: Iterable[dict], *, namespace: str | None = None,
                        dry_run: bool = False, field_manager: str = "kdash-hub") -> list[dict]:
    """Apply each object (server-side, forced ownership); returns what the server answered."""
    discovery = Discovery(api)
    answers = []
    for obj in objects:
        path = await discovery.path_of(obj, namespace)
        params = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        answers.append(await api.request("PATCH", path, body=obj, params=params,
                                         content_type=APPLY_PATCH))
    return answers
