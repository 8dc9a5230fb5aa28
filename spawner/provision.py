"""Ensure a user's namespace bundle with as few API requests as a later start allows.

First start: create the namespace (one POST, as KubeSpawner's own; a GET only on 409), then
the bundle objects concurrently, with the caller's home claim beside them. A hash of the
desired bundle is kept in an annotation on the Namespace. Later starts (a namespace this
process has seen): one GET of the namespace (it replaces KubeSpawner's own namespace create)
plus the drift watch's memory (see drift.py) say whether everything is in place; only what
is missing or changed is written. The hash is written last, in every mode, once every object
is in place (a caller may let it go beside its own next request: `finish_later`): a start
that failed (or a hub that died) half-way leaves no hash, and the next start checks and
finishes every object.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from functools import partial

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
        # with finish_later: the rest of the bundle and its mark, to run once the caller's
        # own next request is made (finish_soon), awaited by finish()
        self._later: Callable[[], Awaitable[None]] | None = None
        self.completion: asyncio.Future | None = None

    # namespaces this process has found or made: a start reads those first. Only a hint for
    # which request goes first; both orders end with the namespace in hand
    _seen: set[str] = set()

    async def ensure(self, spec: bundle.BundleSpec, report: Report, *,
                     alongside: Callable[[], Awaitable[object]] | None = None,
                     finish_later: bool = False,
                     pod_containers: list[dict] | None = None) -> str:
        """Make the bundle of `spec` exist; returns "created", "repaired" or "unchanged".

        `alongside`: the caller's own create in the namespace (the home claim), made with
        the bundle's objects instead of a round after them. `finish_later`: the completion
        mark is left to run beside the caller's next request; await `finish()` after it.
        `pod_containers`: the containers of that request's pod, when known: a LimitRange
        that would neither change nor judge them goes after the pod, with the quota.
        """
        objects = bundle.bundle_objects(spec)
        desired_hash = bundle.bundle_hash(spec, objects)
        if self.mode == "watch" and self.drift is not None:
            # warm the shared watches early: a first start does not wait for them
            warming = asyncio.ensure_future(self.drift.start())
            warming.add_done_callback(self._log_watch_failure)
        # asked once per client, beside the namespace's request (see _holds_rights)
        rights = None
        if bundle.bootstrap_count(spec) and self.resources.api_client not in self._cluster_wide:
            rights = asyncio.ensure_future(self._holds_rights())
        ns, fresh = await self._namespace(spec, report)
        self._check_namespace(ns, spec)
        self.namespace_object = ns
        self._seen.add(spec.namespace)

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
                todo = [o for o in objects if not self.drift.in_place(o, desired_hash)]
        # the namespace's own labels (its Pod Security level) are a guardrail too: an admin's
        # new level must judge this start's pod, so they go before it, not with the mark
        relabel = None if fresh else self._stale_labels(ns, spec)
        if not todo and hash_ok and relabel is None:
            if alongside is not None:
                await alongside()
            return "unchanged"
        if todo and not fresh:
            self.log.info("Namespace %s: ensuring %s", spec.namespace,
                          ", ".join(_ref(o) for o in todo))
        # the hub's own rights in the namespace come from its RoleBinding: that one first
        # (admission may not know a namespace made a moment ago), and the rest may meet a
        # 403 until the API server's RBAC cache has seen it. An identity holding those
        # rights cluster-wide (an admin's) makes it with the rest, in one round
        boot = [o for o in objects[:bundle.bootstrap_count(spec)] if o in todo]
        wait = bool(boot)
        if boot and (await rights if rights is not None
                     else self._cluster_wide.get(self.resources.api_client)):
            boot = []
        await asyncio.gather(*(self._ensure_one(o, report, fresh, wait_for_rbac=fresh)
                               for o in boot))
        # the other RoleBindings (the services', the user's ServiceAccount's) are the rights
        # the quota bounds: they are written only once the API server enforces it (a real
        # one ignores a quota until its controller has filled in its status). Neither is
        # needed to make the pod (the spawner checks the pod against the quota itself, and
        # a real API server would not count it against a quota made a moment before), so
        # with finish_later both go after the pod; the NetworkPolicy, ServiceAccount (the
        # pod's) and home claim go before it. So does the LimitRange, unless the caller's
        # pod is known to need none of its defaults and it has no bounds to judge it by:
        # then it goes with the quota, still before any right to make pods here
        late = [o for o in todo if o not in boot and o["kind"] == "RoleBinding"]
        limits_later = pod_containers is not None and not bundle.limit_range_shapes(
            spec.limit_range, pod_containers)
        bound = [o for o in todo if late and (o["kind"] == "ResourceQuota" or
                                              o["kind"] == "LimitRange" and limits_later)]
        now = [o for o in todo if o not in boot and o not in late
               and (o not in bound or not finish_later)]
        rest = [self._ensure_one(o, report, fresh, wait_for_rbac=wait) for o in now]
        if relabel is not None:
            rest.append(self._relabel(ns, spec, relabel))
        if alongside is not None:  # the caller's create needs the hub's rights there too
            rest.append(self._allowed(alongside, wait))
        await asyncio.gather(*rest)
        later = [o for o in bound if o not in now]
        quota_written = any(o["kind"] == "ResourceQuota" for o in bound)
        completion = partial(self._complete, later, quota_written, late, report, fresh, wait,
                             ns, spec, desired_hash)
        if finish_later:
            self._later = completion
        else:
            await completion()
        return "created" if fresh else "repaired"

    def finish_soon(self) -> None:
        """Start what `ensure(finish_later=True)` left (the late RoleBindings, then the
        completion mark): the caller calls this once its own next request (the pod) is made,
        so that request does not queue behind them."""
        later, self._later = self._later, None
        if later is not None:
            self.completion = asyncio.ensure_future(later())

    async def finish(self, wait: bool = True) -> None:
        """Wait for what `ensure(finish_later=True)` left (started here if it was not yet);
        its BundleError is raised here. `wait=False` (the start failed already): let it run
        on, its failure only logged."""
        self.finish_soon()
        completion, self.completion = self.completion, None
        if completion is None:
            return
        if wait:
            await completion
            return
        completion.add_done_callback(self._log_late_failure)

    async def _complete(self, quota: list[dict], quota_written: bool, late: list[dict],
                        report: Report, fresh: bool, wait: bool, ns: dict,
                        spec: bundle.BundleSpec, desired_hash: str) -> None:
        """The quota (unless it went already), the rights it bounds once it is enforced,
        then the completion mark."""
        await asyncio.gather(*(self._ensure_one(o, report, fresh, wait_for_rbac=wait)
                               for o in quota))
        if quota_written:
            await self._quota_enforced(spec)
        await asyncio.gather(*(self._ensure_one(o, report, fresh, wait_for_rbac=wait)
                               for o in late))
        await self._mark_complete(ns, spec, desired_hash)

    # how long a new quota's status is waited for: the quota controller fills it in within
    # milliseconds on an idle API server, seconds on a busy one
    QUOTA_WAIT_SECONDS = 30.0
    # how long the drift watch's copy of it is trusted to show that status before the API
    # is asked too (a watch that lags or broke)
    QUOTA_WATCH_SECONDS = 2.0
    # the longest pause between two reads of the quota from the API: they back off from
    # RBAC_PAUSES by doubling, so hundreds of starts waiting on a busy quota controller
    # do not ask the API server ten times a second each (the watch's copy, read between
    # them, costs no request)
    QUOTA_GET_MAX_PAUSE = 1.0

    def _quota_get_pause(self, reads: int) -> float:
        """The pause after the `reads`-th read of the quota from the API."""
        pauses = self.RBAC_PAUSES
        if reads < len(pauses):
            return pauses[reads]
        return min(self.QUOTA_GET_MAX_PAUSE, pauses[-1] * 2 ** (reads - len(pauses) + 1))

    async def _quota_enforced(self, spec: bundle.BundleSpec) -> None:
        """Return once the user's ResourceQuota has a status for every limit it sets: until
        then a real API server's admission ignores it, and the rights written next would be
        unbounded. A BundleError after QUOTA_WAIT_SECONDS (nothing is granted then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.QUOTA_WAIT_SECONDS
        # the drift watch's copy first (no request); the API too after a while, ever
        # less often
        watched = self.drift is not None and self.drift.ready
        next_read = loop.time() + (self.QUOTA_WATCH_SECONDS if watched else 0.0)
        quota: dict | None = None
        tries = reads = 0
        while quota is None or not bundle.quota_enforced(quota):
            if loop.time() > deadline:
                self.log.error("ResourceQuota %s in %s has no status after %.0f s: %s",
                               bundle.QUOTA_NAME, spec.namespace, self.QUOTA_WAIT_SECONDS,
                               (quota or {}).get("status"))
                raise BundleError(
                    f"Your namespace's quota is not in force yet ({spec.namespace}); try "
                    "starting again in a minute. If it keeps failing, an admin can find "
                    "details in the hub log.", 503)
            watched = self.drift is not None and self.drift.ready
            if tries:
                pause = self.RBAC_PAUSES[min(tries - 1, len(self.RBAC_PAUSES) - 1)]
                if not watched:  # nothing to look at before the next read
                    pause = max(0.0, next_read - loop.time())
                await asyncio.sleep(pause)
            tries += 1
            if loop.time() < next_read:
                if watched:
                    quota = self.drift.cached("ResourceQuota", spec.namespace,
                                              bundle.QUOTA_NAME)
                continue
            try:
                quota = await self.resources.get("ResourceQuota", bundle.QUOTA_NAME,
                                                 spec.namespace)
            except ApiException as e:
                raise self._fail(bundle.resource_quota(spec), e) from e
            next_read = loop.time() + self._quota_get_pause(reads)
            reads += 1

    def _log_late_failure(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.warning("Finishing a namespace bundle failed: %s", task.exception())

    # per API client (one identity): True when it holds the rights the hub's RoleBinding
    # gives in user namespaces cluster-wide already, so that binding need not go first
    _cluster_wide: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    # a namespace nobody makes: asked about it, only cluster-wide grants can answer yes
    RIGHTS_PROBE_NAMESPACE = "kdash-hub-rights-probe"

    async def _holds_rights(self) -> bool:
        client = self.resources.api_client
        known = self._cluster_wide.get(client)
        if known is None:
            try:
                answer = await self.resources.can_i("create", "serviceaccounts",
                                                    namespace=self.RIGHTS_PROBE_NAMESPACE)
            except Exception as e:  # only an optimisation: the binding goes first then
                self.log.warning("Could not review the hub's own rights (%s)", e)
                return False
            known = self._cluster_wide[client] = bool(answer)
        return known

    async def _namespace(self, spec: bundle.BundleSpec, report: Report) -> tuple[dict, bool]:
        """The user's Namespace, and True when this start made it. One request either way
        in the usual case: a namespace seen before (by this process, or by the drift watch)
        is read first, any other is created first and read only if it exists after all."""
        known = spec.namespace in self._seen or (
            self.drift is not None and self.drift.ready
            and self.drift.cached("ResourceQuota", spec.namespace, bundle.QUOTA_NAME))
        if known:
            ns = await self.resources.get("Namespace", spec.namespace)
            if ns is not None:
                return ns, False
        # no hash yet: it is written once the bundle is complete (_mark_complete)
        try:
            ns = await self.resources.create(bundle.namespace(spec))
            report(f"Creating namespace {spec.namespace}")
            return ns, True
        except ApiException as e:
            if e.status != 409:
                raise self._fail(bundle.namespace(spec), e) from e
        ns = await self.resources.get("Namespace", spec.namespace)
        if ns is None:  # deleted between the two requests
            raise BundleError(f"Your namespace {spec.namespace} is still being deleted; "
                              "try again in a minute.", 503)
        return ns, False

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

    # how long a 403 is waited out: the RBAC cache of a busy API server can lag seconds
    # behind (seen: > 5 s with 20 first starts at once on a loaded 2-core machine)
    RBAC_WAIT_SECONDS = 30.0
    # pauses between tries while a 403 is waited out: short first (the API server's RBAC
    # cache usually catches up within milliseconds), doubled up to the last
    RBAC_PAUSES = (0.005, 0.01, 0.02, 0.05, 0.1)

    async def _ensure_one(self, obj: dict, report: Report, fresh: bool,
                          wait_for_rbac: bool = False) -> None:
        title = bundle.STEP_TITLES.get(obj["kind"], obj["kind"])
        report(f"{'Creating' if fresh else 'Repairing'} {title} ({obj['metadata']['name']})")
        try:
            await self._allowed(lambda: self._ensure_once(obj, fresh), wait_for_rbac)
        except ApiException as e:
            raise self._fail(obj, e) from e

    async def _allowed(self, attempt: Callable[[], Awaitable[object]], wait: bool) -> None:
        """`attempt()`; with `wait`, a 403 is tried again for up to RBAC_WAIT_SECONDS (the
        hub's RoleBinding made a moment ago is not yet in the API server's RBAC cache)."""
        deadline = asyncio.get_running_loop().time() + self.RBAC_WAIT_SECONDS
        tries = 0
        while True:
            try:
                await attempt()
                return
            except ApiException as e:
                late = asyncio.get_running_loop().time() > deadline
                if not (wait and e.status == 403) or late:
                    raise
            await asyncio.sleep(self.RBAC_PAUSES[min(tries, len(self.RBAC_PAUSES) - 1)])
            tries += 1

    async def _ensure_once(self, obj: dict, fresh: bool) -> None:
        if fresh:
            try:
                await self.resources.create(obj)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
        await self.resources.ensure(obj)

    @staticmethod
    def _stale_labels(ns: dict, spec: bundle.BundleSpec) -> dict | None:
        """The namespace's desired labels when they differ from what it has, else None."""
        want = bundle.namespace(spec)["metadata"]["labels"]
        have = (ns.get("metadata") or {}).get("labels") or {}
        return None if matches(want, have) else want

    async def _relabel(self, ns: dict, spec: bundle.BundleSpec, labels: dict) -> None:
        try:
            patched = await self.resources.patch("Namespace", spec.namespace, None,
                                                 {"metadata": {"labels": labels}})
        except ApiException as e:
            raise self._fail(bundle.namespace(spec), e) from e
        ns.setdefault("metadata", {})["labels"] = (
            (patched or {}).get("metadata", {}).get("labels") or labels)

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
