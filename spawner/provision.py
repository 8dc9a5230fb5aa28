"""Ensure a user's namespace bundle with as few API requests as a later start allows.

First start: GET the namespace (404), create it, create the bundle objects concurrently.
A hash of the desired bundle is kept in an annotation on the Namespace. Later starts: one
GET of the namespace (it replaces KubeSpawner's own namespace create) plus the drift
watch's memory (see drift.py) say whether everything is in place; only what is missing or
changed is written. The hash is written last, in every mode, once every object is in
place: a start that failed (or a hub that died) half-way leaves no hash, and the next start
checks and finishes every object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources, api_error_message

from . import bundle
from .drift import DriftWatch, matches

Report = Callable[[str], None]


class BundleError(Exception):
    """A bundle step failed; `message` is for the user, the cause is in the log."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message = message
        self.status = status


def _ref(obj: dict) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


class BundleProvisioner:
    """Ensures one user's bundle; `mode` is KDashSpawner.bundle_drift_check."""

    def __init__(self, resources: KubeResources, log, mode: str = "watch",
                 drift: DriftWatch | None = None):
        self.resources = resources
        self.log = log
        self.mode = mode
        self.drift = drift
        self.namespace_object: dict = {}  # the user's Namespace as last read or written

    async def ensure(self, spec: bundle.BundleSpec, report: Report) -> str:
        """Make the bundle of `spec` exist; returns "created", "repaired" or "unchanged"."""
        desired_hash = bundle.bundle_hash(spec)
        if self.mode == "watch" and self.drift is not None:
            # warm the shared watches early: a first start does not wait for them
            warming = asyncio.ensure_future(self.drift.start())
            warming.add_done_callback(self._log_watch_failure)
        ns = await self.resources.get("Namespace", spec.namespace)
        fresh = ns is None
        if fresh:
            report(f"Creating namespace {spec.namespace}")
            # no hash yet: it is written once the bundle is complete (_mark_complete)
            try:
                ns = await self.resources.create(bundle.namespace(spec))
            except ApiException as e:
                if e.status != 409:
                    raise self._fail(bundle.namespace(spec), e) from e
                ns = await self.resources.get("Namespace", spec.namespace)
                fresh = False
        self._check_namespace(ns, spec)
        self.namespace_object = ns

        objects = bundle.bundle_objects(spec)
        annotations = (ns.get("metadata") or {}).get("annotations") or {}
        hash_ok = annotations.get(bundle.BUNDLE_HASH_ANNOTATION) == desired_hash
        if fresh:
            todo = objects
        elif self.mode == "always" or not hash_ok and self.mode == "hash":
            todo = objects
        elif self.mode == "hash":
            todo = []
        else:  # watch: only what the watched copies say is missing or different
            if self.drift is not None:
                try:
                    await self.drift.start()
                except Exception as e:  # the watches are an optimisation: fall back
                    self.log.warning("Bundle drift watches unavailable (%s); ensuring every "
                                     "object of %s", e, spec.namespace)
            if self.drift is None or not self.drift.ready:
                todo = objects
            else:
                todo = [o for o in objects if not self.drift.in_place(o)]
        if not todo and hash_ok:
            return "unchanged"
        if todo and not fresh:
            self.log.info("Namespace %s: ensuring %s", spec.namespace,
                          ", ".join(_ref(o) for o in todo))
        # the hub's own rights in the namespace come from its RoleBinding: that one first
        # (admission may not know a namespace made a moment ago), and the rest may meet a
        # 403 until the API server's RBAC cache has seen it
        boot = [o for o in objects[:bundle.bootstrap_count(spec)] if o in todo]
        await asyncio.gather(*(self._ensure_one(o, report, fresh, wait_for_rbac=fresh)
                               for o in boot))
        await asyncio.gather(*(self._ensure_one(o, report, fresh, wait_for_rbac=bool(boot))
                               for o in todo if o not in boot))
        await self._mark_complete(ns, spec, desired_hash)
        return "created" if fresh else "repaired"

    def _log_watch_failure(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.warning("Bundle drift watches did not start (%s); every start will "
                             "ensure every bundle object", task.exception())

    def _check_namespace(self, ns: dict, spec: bundle.BundleSpec) -> None:
        meta = ns.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or (ns.get("status") or {}).get("phase") == "Terminating":
            raise BundleError(
                f"Your namespace {spec.namespace} is still being deleted; "
                "try again in a minute.", 503)
        if labels.get(L.MANAGED_BY) == L.MANAGED_BY_VALUE and not L.is_owned_by(ns, spec.username):
            raise BundleError(
                f"Namespace {spec.namespace} belongs to another user; ask an admin to "
                "check the namespace prefix and naming.", 409)

    RBAC_WAIT_SECONDS = 5.0

    async def _ensure_one(self, obj: dict, report: Report, fresh: bool,
                          wait_for_rbac: bool = False) -> None:
        title = bundle.STEP_TITLES.get(obj["kind"], obj["kind"])
        report(f"{'Creating' if fresh else 'Repairing'} {title} ({obj['metadata']['name']})")
        deadline = asyncio.get_running_loop().time() + self.RBAC_WAIT_SECONDS
        while True:
            try:
                return await self._ensure_once(obj, fresh)
            except ApiException as e:
                late = asyncio.get_running_loop().time() > deadline
                if not (wait_for_rbac and e.status == 403) or late:
                    raise self._fail(obj, e) from e
                await asyncio.sleep(0.1)

    async def _ensure_once(self, obj: dict, fresh: bool) -> None:
        if fresh:
            try:
                await self.resources.create(obj)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
        await self.resources.ensure(obj)

    async def _mark_complete(self, ns: dict, spec: bundle.BundleSpec, desired_hash: str) -> None:
        want = bundle.namespace(spec, desired_hash)["metadata"]
        meta = ns.get("metadata") or {}
        current = {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}
        patch = {k: want[k] for k in ("labels", "annotations")}
        if matches(patch, current):
            return
        try:
            await self.resources.patch("Namespace", spec.namespace, None, {"metadata": patch})
        except ApiException as e:
            raise self._fail(bundle.namespace(spec), e) from e

    def _fail(self, obj: dict, e: ApiException) -> BundleError:
        self.log.error("Could not ensure %s in %s: %s %s", _ref(obj),
                       obj["metadata"].get("namespace", "-"), e.status, e.body)
        return BundleError(
            f"Could not prepare your namespace ({_ref(obj)}: {api_error_message(e)}). "
            "Try starting again; if it keeps failing, an admin can find details in the hub log.",
            403 if e.status == 403 else 500)
