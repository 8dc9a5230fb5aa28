"""The reconciler: launches cut short (a crash, a failed rollback) are finished or undone,
deletes cut short are finished.

A launch writes its signed record (phase `creating`) first, then the objects, then seals
the record (phase `ready`, every UID). A launcher killed in between leaves a record whose
objects are partly missing; nothing in the process that died can repair it, so every
launcher runs this at start-up and every `reconcile_interval` seconds:

- a record still `creating` (no launch of this process is making it) is rolled FORWARD
  when the template still renders exactly the objects the record signed (`objects_mac`):
  the missing objects are created, the UIDs recorded, the record sealed; otherwise it is
  rolled BACK: the objects it made are deleted, then the record;
- a `ready` record of a running instance whose objects are missing is rolled forward the
  same way; when it can't be, it is reported and left as it is (its data is never deleted);
- a `deleting` record (a delete began: the user's or the culler's) is never rolled
  forward: the delete is finished (its objects, then the record);
- a rollforward whose record changed meanwhile (a delete marked it, in this process or
  another) deletes again what it made and leaves the record to the next pass; in this
  process a delete and the reconciler never act on one instance at once (a lock);
- objects carrying the launcher's labels without a valid record naming them are reported
  (log + the admin view `GET api/reconcile`), never deleted;
- a record whose signature doesn't verify is never acted on (reported).

Each decision is a log line and a Kubernetes Event on the record Secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import api_error_message
from kdash_hub.naming import label_value
from kdash_hub.templating import RenderError

from . import lifecycle
from .records import (
    CREATING,
    DELETING,
    READY,
    RUNNING,
    InstanceRecord,
    RecordInvalid,
    iso,
    now_utc,
    objects_match,
    record_name,
    secret_values,
)

if TYPE_CHECKING:
    from .instances import InstanceManager

log = logging.getLogger("kdash_hub.launcher.reconcile")
OBJECT_SELECTOR = f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.COMPONENT}=launcher"
FORWARD, BACK, REPORT = "forward", "back", "report"


@dataclass
class Decision:
    """What the reconciler did about one record, and why."""

    namespace: str
    instance: str
    action: str  # forward | back | report
    reason: str
    done: bool = False
    error: str = ""


@dataclass
class Orphan:
    """An object with the launcher's labels that no valid record names."""

    namespace: str
    kind: str
    name: str
    instance: str
    reason: str


@dataclass
class Report:
    """One reconciler pass: for admins (`GET api/reconcile`) and the logs."""

    started_at: str = ""
    seconds: float = 0.0
    records: int = 0
    decisions: list[Decision] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    invalid_records: list[dict[str, str]] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reconciler:
    """Finishes or undoes cut-short launches of `manager`'s cluster (one pass at a time)."""

    def __init__(self, manager: InstanceManager, grace: float = 0.0,
                 logger: logging.Logger | None = None):
        global log
        if logger is not None:  # the app's log, where its operators look
            log = logger
        self.manager = manager
        self.kube = manager.kube
        self.signer = manager.signer
        self.grace = grace
        self.last: Report | None = None
        self.passes = 0
        self._lock = asyncio.Lock()

    # --- the loop ---------------------------------------------------------------------
    async def run_forever(self, interval: float) -> None:
        """A pass now, then every `interval` seconds (0: only the first); never raises."""
        while True:
            await self.run_once()
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    async def run_once(self) -> Report:
        async with self._lock:
            report = Report(started_at=iso(now_utc()))
            t0 = time.monotonic()
            try:
                await self._pass(report)
            except Exception as e:  # noqa: BLE001 - the next pass tries again
                report.error = (api_error_message(e) if isinstance(e, ApiException)
                                else f"{type(e).__name__}: {e}")
                log.error("reconcile pass failed (next pass tries again): %s", report.error)
            report.seconds = round(time.monotonic() - t0, 3)
            self.last, self.passes = report, self.passes + 1
            acted = [d for d in report.decisions if d.action != REPORT]
            if acted or report.orphans or report.invalid_records:
                log.info("reconcile pass: %d records, %d decisions, %d orphan objects, %d"
                         " invalid records, %.2fs", report.records, len(report.decisions),
                         len(report.orphans), len(report.invalid_records), report.seconds)
            return report

    async def _pass(self, report: Report) -> None:
        records, invalid = await lifecycle.list_records_checked(self.kube, signer=self.signer)
        report.records = len(records)
        report.invalid_records = [bad.as_dict() for bad in invalid]
        for rec in records:
            decision = await self._reconcile_record(rec)
            if decision is not None:
                report.decisions.append(decision)
        report.orphans = await self._orphans(records, invalid)
        for orphan in report.orphans:
            log.warning("orphan %s %s/%s (instance label %r): %s; reported, not deleted",
                        orphan.kind, orphan.namespace, orphan.name, orphan.instance,
                        orphan.reason)

    # --- one record -------------------------------------------------------------------
    def _busy(self, rec: InstanceRecord) -> bool:
        """This process is launching, deleting or reconciling it, or (other processes) a
        launch of it is too young to call cut short."""
        return self.manager.busy(rec.namespace, rec.name) or self._busy_grace(rec)

    async def _reconcile_record(self, rec: InstanceRecord) -> Decision | None:
        if self._busy(rec):
            return None
        if rec.phase == READY and not (await self._survey(rec))[1]:
            return None  # the common case: complete, nothing to do
        if self._busy(rec):  # a delete or launch began while we looked
            return None
        async with self.manager.acting_on(rec.namespace, rec.name):
            return await self._decide(rec)

    async def _decide(self, rec: InstanceRecord) -> Decision | None:
        """What to do about one record, decided on a fresh read of it (holding its lock)."""
        try:  # read again: a launch or a user may have changed it since the listing
            secret, rec = await lifecycle.read_record(self.kube, rec.namespace, rec.name,
                                                      self.signer)
        except (lifecycle.InstanceNotFound, RecordInvalid):
            return None
        if rec.phase == DELETING:  # never rolled forward: the delete is finished
            decision = Decision(rec.namespace, rec.name, BACK,
                                "a delete was cut short: finishing it (objects, then the"
                                " record)")
            await self._act(decision, lifecycle.delete_instance(
                self.kube, rec.namespace, rec.name, self.signer))
            await self._event(rec, "Normal" if decision.done else "Warning", "DeleteFinished",
                              decision.reason + (f" (failed: {decision.error})"
                                                 if decision.error else ""))
            return decision
        if self._busy_grace(rec):
            return None
        present, missing, foreign = await self._survey(rec)
        if rec.phase == READY and not missing:
            return None
        rendered, why_not = self._render(rec, secret)
        if foreign:
            why_not = f"{', '.join(foreign)} exist(s) but weren't made by this instance"
        elif rec.phase == READY and rec.state != RUNNING:
            why_not = "the instance is stopped"
        what_missing = ", ".join(f"{o['kind']} {o['name']}" for o in missing) or "nothing"
        if rendered is not None and not why_not:
            decision = Decision(rec.namespace, rec.name, FORWARD,
                                f"phase {rec.phase}, missing: {what_missing}")
            await self._act(decision, self._forward(rec, rendered))
        elif rec.phase == CREATING:
            decision = Decision(rec.namespace, rec.name, BACK,
                                f"launch cut short (missing: {what_missing}) and can't be"
                                f" finished: {why_not}")
            await self._act(decision, lifecycle.delete_instance(
                self.kube, rec.namespace, rec.name, self.signer))
        else:
            decision = Decision(rec.namespace, rec.name, REPORT,
                                f"missing: {what_missing}; not made again: {why_not}")
            log.warning("instance %s/%s: %s (left as it is)", rec.namespace, rec.name,
                        decision.reason)
            await self._event(rec, "Warning", "NotReconciled", decision.reason)
            return decision
        await self._event(rec, "Normal" if decision.done else "Warning",
                          "RolledForward" if decision.action == FORWARD else "RolledBack",
                          decision.reason + (f" (failed: {decision.error})"
                                             if decision.error else ""))
        return decision

    def _busy_grace(self, rec: InstanceRecord) -> bool:
        """A `creating` record younger than the grace: maybe another process's launch."""
        if rec.phase == CREATING and self.grace > 0 and rec.created_at is not None:
            return (now_utc() - rec.created_at).total_seconds() < self.grace
        return False

    async def _act(self, decision: Decision, work: Any) -> None:
        try:
            await work
            decision.done = True
            log.info("instance %s/%s rolled %s: %s", decision.namespace, decision.instance,
                     decision.action, decision.reason)
        except (ApiException, lifecycle.InstanceNotFound, RecordInvalid) as e:
            decision.error = (api_error_message(e) if isinstance(e, ApiException)
                              else str(e))
            log.error("instance %s/%s: rolling %s failed (next pass tries again): %s",
                      decision.namespace, decision.instance, decision.action, decision.error)

    async def _survey(self, rec: InstanceRecord
                      ) -> tuple[dict[tuple[str, str], dict], list[dict], list[str]]:
        """The record's objects that exist (its own), are missing, or are someone else's."""
        present: dict[tuple[str, str], dict] = {}
        missing: list[dict] = []
        foreign: list[str] = []
        for obj in rec.objects:
            if not lifecycle.may_touch(obj["kind"]):
                continue
            current = await self.kube.get(obj["kind"], obj["name"], rec.namespace)
            if current is None:
                missing.append(obj)
            elif lifecycle.belongs_to(current, rec, obj["kind"], obj["name"]):
                present[(obj["kind"], obj["name"])] = current
            else:
                foreign.append(f"{obj['kind']} {obj['name']}")
        return present, missing, foreign

    def _render(self, rec: InstanceRecord, secret: dict) -> tuple[list[dict] | None, str]:
        """The objects the launch made, rendered again, if they are exactly what the record
        signed (template, values, settings unchanged); else None and why not."""
        if not rec.objects_mac:
            return None, "the record doesn't hold a digest of its objects"
        template = self.manager.catalog.get(rec.template)
        if template is None:
            return None, f"template {rec.template!r} is no longer in the catalog"
        values = {**rec.values, **secret_values(secret)}
        try:
            objects, _ = self.manager.render(template, rec.owner, rec.name, values)
        except (RenderError, ValueError, TypeError) as e:
            return None, f"the template doesn't render: {e}"
        if not objects_match(objects, rec.objects_mac, self.signer):
            return None, "the template or settings changed since the launch"
        names = [(o["kind"], o["metadata"]["name"]) for o in objects]
        if names != [(o["kind"], o["name"]) for o in rec.objects]:
            return None, "the objects differ from the record's"
        return objects, ""

    async def _forward(self, rec: InstanceRecord, rendered: list[dict]) -> None:
        """Create what is missing, record every UID, seal the record (resourceVersion-checked).
        When the seal fails (a delete marked the record `deleting`, or deleted it, or anyone
        changed it meanwhile) what this made is deleted again: nothing is left that no
        record names; the next pass looks again."""
        made: list[tuple[str, str, str]] = []
        try:
            for entry, obj in zip(rec.objects, rendered, strict=True):
                current = await self.kube.get(entry["kind"], entry["name"], rec.namespace)
                if current is None:
                    try:
                        current = await self.kube.create(obj)
                        made.append((entry["kind"], entry["name"], current["metadata"]["uid"]))
                    except ApiException as e:
                        if e.status != 409:
                            raise
                        current = await self.kube.get(entry["kind"], entry["name"],
                                                      rec.namespace)
                        if not lifecycle.belongs_to(current, rec, entry["kind"], entry["name"]):
                            raise
                elif not lifecycle.belongs_to(current, rec, entry["kind"], entry["name"]):
                    raise RecordInvalid(f"{entry['kind']} {entry['name']} isn't this instance's")
                entry["uid"] = current["metadata"]["uid"]
            rec.phase = READY
            await lifecycle.save_record(self.kube, rec, self.signer)
        except BaseException:
            for kind, name, uid in reversed(made):
                try:
                    await lifecycle.delete_exact(self.kube, kind, name, rec.namespace, uid)
                except ApiException as e:  # the orphan report shows it on the next pass
                    log.error("%s %s/%s made by a rollforward that failed, not deleted: %s",
                              kind, rec.namespace, name, api_error_message(e))
            raise

    # --- objects without a record -----------------------------------------------------
    async def _orphans(self, records: list[InstanceRecord],
                       invalid: list[lifecycle.InvalidRecord]) -> list[Orphan]:
        kinds = {m.kind for t in self.manager.catalog.templates.values() for m in t.manifests}
        kinds |= {o["kind"] for r in records for o in r.objects}
        kinds = {k for k in kinds if lifecycle.may_touch(k)}
        named: dict[tuple[str, str], InstanceRecord] = {
            (r.namespace, label_value(r.name)): r for r in records}
        tampered = {(b.namespace, b.record) for b in invalid}
        busy = {(ns, label_value(n)) for ns, n in self.manager.busy_keys()}
        orphans: list[Orphan] = []
        for namespace in await lifecycle.user_namespaces(self.kube):
            for kind in sorted(kinds):
                for obj in await lifecycle.list_in_user_namespace(self.kube, kind, namespace,
                                                                   OBJECT_SELECTOR):
                    meta = obj.get("metadata") or {}
                    if meta.get("deletionTimestamp"):
                        continue  # going: a delete's or the garbage collector's
                    instance = (meta.get("labels") or {}).get(L.INSTANCE, "")
                    if (namespace, instance) in busy:
                        continue  # a launch or delete of this process is under way
                    rec = named.get((namespace, instance))
                    listed = {(o["kind"], o["name"]) for o in rec.objects} if rec else set()
                    if (kind, meta.get("name")) in listed or rec is not None and any(
                            ref.get("controller") and ref.get("uid") and ref.get("uid") ==
                            rec.uid_of(str(ref.get("kind")), str(ref.get("name")))
                            for ref in meta.get("ownerReferences") or []):
                        continue  # the record's, or made by one of its objects (a run)
                    if rec is not None:
                        reason = f"instance {rec.name!r}'s record doesn't list it"
                    elif any(ns == namespace and name.endswith(instance)
                             for ns, name in tampered):
                        reason = "its instance's record doesn't verify"
                    else:
                        reason = "no record of its instance"
                    orphans.append(Orphan(namespace, kind, str(meta.get("name", "")),
                                          instance, reason))
        return orphans

    # --- events -----------------------------------------------------------------------
    async def _event(self, rec: InstanceRecord, type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the record Secret (best effort: the log has it too)."""
        now = iso(now_utc())
        try:
            await self.kube.create({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{record_name(rec.name)}.",
                             "namespace": rec.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Secret",
                                   "name": record_name(rec.name),
                                   "namespace": rec.namespace},
                "reason": reason, "message": message[:1000], "type": type_,
                "source": {"component": "kdash-launcher"},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            })
        except (ApiException, ValueError) as e:
            log.info("event for %s/%s not written: %s", rec.namespace, rec.name, e)
