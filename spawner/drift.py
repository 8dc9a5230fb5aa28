"""Cheap drift detection for the namespace bundle: label-selected watches, one per kind.

Checking every bundle object on every start would cost a request per object. Instead the
hub keeps a watch (KubeSpawner's own ResourceReflector) on each bundle kind, selected by
kdash-hub's labels across all namespaces; a start compares the desired objects with that
local copy, which costs no request. The price: one long-lived watch per kind per hub, and
list/watch rights on those kinds cluster-wide (the hub already needs cluster-wide rights
for user namespaces).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubespawner.reflector import ResourceReflector
from traitlets import Unicode

from kdash_hub import labels as L

from .bundle import COMPONENT
from .quotas import parse_quantity

# kind -> (API class of kubernetes_asyncio, all-namespaces list method, component label).
# Not Secrets (copied pull secrets): the hub holds no cluster-wide right on Secrets, so
# those are ensured at every start instead.
WATCHED = {
    "ResourceQuota": ("CoreV1Api", "list_resource_quota_for_all_namespaces", COMPONENT),
    "LimitRange": ("CoreV1Api", "list_limit_range_for_all_namespaces", COMPONENT),
    "ServiceAccount": ("CoreV1Api", "list_service_account_for_all_namespaces", COMPONENT),
    "NetworkPolicy": ("NetworkingV1Api", "list_network_policy_for_all_namespaces", COMPONENT),
    "RoleBinding": ("RbacAuthorizationV1Api", "list_role_binding_for_all_namespaces",
                    COMPONENT),
}


class BundleReflector(ResourceReflector):
    """A watch on one bundle kind, across namespaces, label-selected."""

    kind = Unicode("bundle")
    omit_namespace = True


def _same_leaf(desired: Any, actual: Any) -> bool:
    if desired == actual:
        return True
    if isinstance(desired, str | int) and isinstance(actual, str | int):
        try:  # the API server may canonicalise quantities ("1000m" -> "1")
            return parse_quantity(desired) == parse_quantity(actual)
        except ValueError:
            return False
    return False


def matches(desired: Any, actual: Any) -> bool:
    """Every field of `desired` is in `actual` (lists element-wise, quantities by value)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(matches(v, actual.get(k))
                                                for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(actual, list) and len(desired) == len(actual)
                and all(matches(d, a) for d, a in zip(desired, actual, strict=True)))
    return _same_leaf(desired, actual)


def desired_fields(obj: dict) -> dict:
    """The part of `obj` that must be in place: spec-like fields, labels, annotations."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    out["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return out


class DriftWatch:
    """The shared watches of one event loop (one hub); `state(obj)` answers from memory."""

    _by_loop: dict[Any, DriftWatch] = {}

    def __init__(self, parent: Any, timeout_seconds: int = 240):
        self.parent = parent
        self.timeout_seconds = timeout_seconds
        self.reflectors: dict[str, BundleReflector] = {}
        self._started: asyncio.Future | None = None
        self._failed_at = float("-inf")
        # (kind, namespace, name) -> (resourceVersion, bundle hash) of a copy found in place
        self._matched: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._prune_at = self.PRUNE_MIN

    @classmethod
    def for_loop(cls, parent: Any, timeout_seconds: int = 240) -> DriftWatch:
        loop = asyncio.get_running_loop()
        watch = cls._by_loop.get(loop)
        if watch is None:
            watch = cls._by_loop[loop] = cls(parent, timeout_seconds)
        return watch

    RETRY_SECONDS = 60.0
    # the memory of matched copies is swept of objects no longer watched (deleted
    # namespaces) once it holds this many entries, then at twice what the sweep kept
    PRUNE_MIN = 1024

    async def start(self) -> None:
        """Start every watch once (concurrent callers wait for the same start); after a
        failed start (e.g. no list/watch rights) try again at most every RETRY_SECONDS."""
        failed = self._started is not None and self._started.done() and (
            self._started.cancelled() or self._started.exception() is not None)
        loop = asyncio.get_running_loop()
        if self._started is None or failed and loop.time() - self._failed_at > self.RETRY_SECONDS:
            for reflector in list(self.reflectors.values()):
                await reflector.stop()
            self.reflectors.clear()
            self._started = asyncio.ensure_future(self._start_all())
        try:
            await asyncio.shield(self._started)
        except Exception:
            self._failed_at = loop.time()
            raise

    async def _start_all(self) -> None:
        async def one(kind: str) -> None:
            api, method, component = WATCHED[kind]
            reflector = BundleReflector(
                parent=self.parent, kind=kind, api_group_name=api, list_method_name=method,
                labels={L.MANAGED_BY: L.MANAGED_BY_VALUE, L.COMPONENT: component},
                timeout_seconds=self.timeout_seconds,
                request_timeout=self.timeout_seconds + 60,
                restart_seconds=self.timeout_seconds * 4,
            )
            await reflector.start()
            await reflector.first_load_future
            self.reflectors[kind] = reflector

        await asyncio.gather(*(one(kind) for kind in WATCHED))

    @property
    def ready(self) -> bool:
        """All watches loaded and still running (a watch that gave up makes its copy stale,
        and then every start ensures every object, as in "always" mode)."""
        if self._started is None or not self._started.done():
            return False
        if self._started.cancelled() or self._started.exception():
            return False
        return all(r.watch_task is not None and not r.watch_task.done()
                   for r in self.reflectors.values())

    def cached(self, kind: str, namespace: str, name: str) -> dict | None:
        reflector = self.reflectors.get(kind)
        return None if reflector is None else reflector.resources.get(f"{namespace}/{name}")

    def in_place(self, obj: dict, desired_hash: str | None = None) -> bool:
        """True when the watched copy of `obj` exists and matches it.

        `desired_hash` (the bundle's hash, which `obj` is part of): a copy found matching
        is remembered by its resourceVersion, so the next start with the same settings
        compares nothing until the object changes (any change gives a new version)."""
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        current = self.cached(*key)
        if current is None:
            self._matched.pop(key, None)
            return False
        version = (current.get("metadata") or {}).get("resourceVersion")
        if desired_hash is not None and version and self._matched.get(key) == (
                version, desired_hash):
            return True
        if not matches(desired_fields(obj), current):
            return False
        if desired_hash is not None and version:
            self._matched[key] = (version, desired_hash)
            if len(self._matched) >= self._prune_at:
                self._prune()
        return True

    def _prune(self) -> None:
        """Forget matched copies the watches no longer hold (their namespace was deleted,
        and no start asked about them since): amortised O(1) per remembered match."""
        self._matched = {k: v for k, v in self._matched.items() if self.cached(*k) is not None}
        self._prune_at = max(self.PRUNE_MIN, 2 * len(self._matched))

    async def stop(self) -> None:
        for reflector in list(self.reflectors.values()):
            await reflector.stop()
        self.reflectors.clear()
        if self._started is not None and not self._started.done():
            self._started.cancel()

    @classmethod
    async def stop_all(cls) -> None:
        """Stop the watches of the running loop (tests, hub shutdown)."""
        watch = cls._by_loop.pop(asyncio.get_running_loop(), None)
        if watch is not None:
            await watch.stop()
