"""Stop, start, delete and expire instances — the part the culler shares with the launcher.

Stop scales every Deployment/StatefulSet of an instance to zero (and suspends its Jobs,
CronJobs and Argo Workflows: `spec.suspend`),
remembering the replicas in the record, so start brings back exactly what was there:
the objects, their data and their definition stay (Kubeflow's model). Delete first marks
the record `deleting` (signed), then removes the objects the record lists, then the
record: a delete cut short (a crash) leaves a `deleting` record that the reconciler
finishes, and nothing ever makes a `deleting` instance's objects again. Which of the two
happens when an instance's TTL runs out is the template's `expiry` (default: stop, so no
data is lost).

Every record is verified (`records.py`): one that doesn't verify is skipped and logged by
the listings, and refused by the operations on one instance (`RecordInvalid`). An object
is only changed when its UID is the one the record signed, so an object the user deleted
and made again under the same name is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import RESOURCES, KubeResources, resource_for
from kdash_hub.naming import label_value

from .batch import SUSPENDABLE, suspend_patch
from .records import (
    DELETING,
    RUNNING,
    STOPPED,
    InstanceRecord,
    RecordInvalid,
    now_utc,
    record_name,
    record_selector,
)
from .signing import RecordSigner, default_signer

log = logging.getLogger("kdash_hub.launcher.records")
SCALABLE = ("Deployment", "StatefulSet")
# never touched through a record, whatever it says: the namespace's guardrails
GUARDRAIL_KINDS = {"ResourceQuota", "LimitRange", "Role", "RoleBinding", "NetworkPolicy",
                   "ServiceAccount"}


def may_touch(kind: str) -> bool:
    """Kinds a record may name: namespaced ones that aren't the namespace's guardrails."""
    resource = RESOURCES.get(kind)
    return resource is not None and resource.namespaced and kind not in GUARDRAIL_KINDS


def belongs_to(obj: dict | None, rec: InstanceRecord, kind: str = "", name: str = "") -> bool:
    """True when `obj` is the object the record made: the UID it signed (before the
    launch recorded UIDs: the instance's labels and owner)."""
    if obj is None:
        return False
    meta = obj.get("metadata") or {}
    uid = rec.uid_of(kind or obj.get("kind", ""), name or meta.get("name", ""))
    if uid:
        return meta.get("uid") == uid
    labels = meta.get("labels") or {}
    return labels.get(L.INSTANCE) == label_value(rec.name) and L.is_owned_by(obj, rec.owner)


class InstanceNotFound(LookupError):
    """No such instance (or not one of this user's)."""


class InstanceDeleting(InstanceNotFound):
    """The instance is being deleted: nothing but the delete acts on it any more."""


@dataclass(frozen=True)
class InstanceRef:
    """An instance whose TTL ran out, and what its template says to do about it."""

    namespace: str
    name: str
    owner: str
    template: str
    on_expiry: str  # "stop" | "delete"
    expires_at: datetime


@dataclass(frozen=True)
class InvalidRecord:
    """A record that didn't verify: shown to admins, never acted on."""

    namespace: str
    record: str
    claimed_owner: str  # from the Secret's annotation: the user may have written it
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"namespace": self.namespace, "record": self.record,
                "claimed_owner": self.claimed_owner, "reason": self.reason,
                "status": "tampered"}


def invalid_record(secret: dict, reason: str) -> InvalidRecord:
    meta = secret.get("metadata") if isinstance(secret, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    ann = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    owner = ann.get(L.OWNER_ANNOTATION)
    return InvalidRecord(str(meta.get("namespace", ""))[:253], str(meta.get("name", ""))[:253],
                         owner[:256] if isinstance(owner, str) else "", reason)


async def read_record(
    kube: KubeResources, namespace: str, name: str, signer: RecordSigner | None = None,
) -> tuple[dict, InstanceRecord]:
    """The record Secret of an instance and what it says (raises InstanceNotFound, or
    RecordInvalid for a record the launcher didn't write as it is)."""
    secret = await kube.get("Secret", record_name(name), namespace)
    if secret is None:
        raise InstanceNotFound(f"no instance {name!r} in {namespace}")
    try:
        rec = InstanceRecord.from_secret(secret, signer or default_signer())
    except RecordInvalid as e:
        log.warning("instance record %s/%s refused: %s", namespace, record_name(name), e)
        raise
    if rec.name != name:
        raise RecordInvalid("the record names another instance")
    return secret, rec


# the namespaces the pack made for users (the spawner's, or the launcher's when it makes one)
USER_NAMESPACE_SELECTOR = f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.OWNER}"
LIST_CONCURRENCY = 16


async def user_namespaces(kube: KubeResources) -> list[str]:
    """The users' live namespaces (labelled by the pack; users can't label namespaces). One
    being deleted is left out: its RoleBindings go first, so a listing there is refused."""
    found = await kube.list("Namespace", None, label_selector=USER_NAMESPACE_SELECTOR)
    return sorted(ns["metadata"]["name"] for ns in found
                  if not ns["metadata"].get("deletionTimestamp")
                  and (ns.get("status") or {}).get("phase") != "Terminating")


async def list_in_user_namespace(kube: KubeResources, kind: str, namespace: str,
                                 selector: str) -> list[dict]:
    """`kind` in one user namespace for a cross-namespace listing. A namespace where this
    service holds no rights (the spawner makes a namespace before its RoleBindings) or that
    is gone is skipped with a warning: one such namespace never fails the whole listing."""
    try:
        return await kube.list(kind, namespace, label_selector=selector)
    except ApiException as e:
        if e.status not in (403, 404):
            raise
        log.warning("%s in namespace %s skipped: %s", kind, namespace,
                    "no rights there (yet)" if e.status == 403 else "namespace gone")
        return []


async def record_secrets(kube: KubeResources, username: str | None = None,
                         namespace: str | None = None) -> list[dict]:
    """The record Secrets in `namespace`, or in every user namespace: Secrets are only
    ever listed namespace by namespace (nobody holds a cluster-wide list of Secrets)."""
    selector = record_selector(username)
    if namespace is not None:
        return await kube.list("Secret", namespace, label_selector=selector)
    limit = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(ns: str) -> list[dict]:
        async with limit:
            return await list_in_user_namespace(kube, "Secret", ns, selector)

    lists = await asyncio.gather(*(one(ns) for ns in await user_namespaces(kube)))
    return [secret for found in lists for secret in found]


async def list_records_checked(
    kube: KubeResources, username: str | None = None, namespace: str | None = None,
    signer: RecordSigner | None = None,
) -> tuple[list[InstanceRecord], list[InvalidRecord]]:
    """Every verified instance record (of `username` when given) and the ones that
    failed (one list request per namespace); a bad record never stops the others."""
    signer = signer or default_signer()
    secrets = await record_secrets(kube, username, namespace)
    records, invalid = [], []
    for secret in secrets:
        try:
            rec = InstanceRecord.from_secret(secret, signer)
        except RecordInvalid as e:
            bad = invalid_record(secret, str(e))
            log.warning("instance record %s/%s skipped: %s", bad.namespace, bad.record,
                        bad.reason)
            invalid.append(bad)
            continue
        if username is not None and rec.owner != username:
            continue  # label values can be hashed: the signed owner is exact
        records.append(rec)
    return records, invalid


async def list_records(kube: KubeResources, username: str | None = None,
                       namespace: str | None = None,
                       signer: RecordSigner | None = None) -> list[InstanceRecord]:
    """Every verified instance record (of `username` when given); bad ones are skipped."""
    return (await list_records_checked(kube, username, namespace, signer))[0]


async def expired_instances(kube: KubeResources, now: datetime,
                            signer: RecordSigner | None = None) -> list[InstanceRef]:
    """Running instances whose expiry time is at or before `now` (stopped ones that expire
    with `delete` too: a stopped instance still holds its storage). Records that don't
    verify are skipped (logged): their lifetime is unknown, and they are never acted on."""
    refs = []
    for rec in await list_records(kube, signer=signer):
        expires = rec.expires()
        if expires is None or expires > now:
            continue
        if rec.state == STOPPED and rec.expiry == "stop":
            continue
        if rec.phase == DELETING:  # going already: the delete (or reconciler) finishes it
            continue
        refs.append(InstanceRef(rec.namespace, rec.name, rec.owner, rec.template,
                                rec.expiry, expires))
    return refs


async def save_record(kube: KubeResources, rec: InstanceRecord, signer: RecordSigner) -> None:
    """Write `rec` back, signed; 409 (ApiException) when the record changed since it was
    read (its resourceVersion), so two writers never undo each other."""
    patch: dict = {"metadata": {"annotations": rec.signed_annotations(signer)}}
    if rec.resource_version:
        patch["metadata"]["resourceVersion"] = rec.resource_version
    saved = await kube.patch("Secret", record_name(rec.name), rec.namespace, patch)
    rec.resource_version = (saved.get("metadata") or {}).get("resourceVersion", "")


async def update_record(kube: KubeResources, namespace: str, name: str,
                        change: Callable[[InstanceRecord], None],
                        signer: RecordSigner | None = None) -> InstanceRecord:
    """Read, change and write back the record, again when someone wrote in between."""
    signer = signer or default_signer()
    for attempt in range(5):
        _, rec = await read_record(kube, namespace, name, signer)
        change(rec)
        try:
            await save_record(kube, rec, signer)
            return rec
        except ApiException as e:
            if e.status != 409 or attempt == 4:
                raise
    raise AssertionError("unreachable")


async def _scale(kube: KubeResources, kind: str, name: str, namespace: str,
                 replicas: int) -> None:
    await kube.patch(kind, name, namespace, {"spec": {"replicas": replicas}})


async def _recorded(kube: KubeResources, rec: InstanceRecord, obj: dict) -> dict | None:
    """The object the record names if it is still the one the launcher made."""
    current = await kube.get(obj["kind"], obj["name"], rec.namespace)
    if current is not None and not belongs_to(current, rec, obj["kind"], obj["name"]):
        log.warning("%s %s/%s is not the one instance %s made (UID differs): left alone",
                    obj["kind"], rec.namespace, obj["name"], rec.name)
        return None
    return current


async def stop_instance(kube: KubeResources, namespace: str, name: str,
                        signer: RecordSigner | None = None) -> InstanceRecord:
    """Scale the instance to zero, keeping its objects and definition (idempotent)."""
    signer = signer or default_signer()
    _, rec = await read_record(kube, namespace, name, signer)
    refuse_deleting(rec)
    if rec.state == STOPPED:
        return rec
    replicas = dict(rec.replicas)
    for obj in rec.objects:
        kind, obj_name = obj["kind"], obj["name"]
        if kind not in (*SCALABLE, *SUSPENDABLE):
            continue
        try:
            current = await _recorded(kube, rec, obj)
            if current is None:
                continue
            if kind in SCALABLE:
                count = (current.get("spec") or {}).get("replicas", 1)
                if isinstance(count, int) and 0 < count <= 100:
                    replicas[f"{kind}/{obj_name}"] = count
                await _scale(kube, kind, obj_name, namespace, 0)
            else:
                await kube.patch(kind, obj_name, namespace, suspend_patch(kind, True))
        except ApiException as e:
            if e.status != 404:
                raise

    def stopped(r: InstanceRecord) -> None:
        refuse_deleting(r)
        r.state, r.replicas = STOPPED, replicas

    return await update_record(kube, namespace, name, stopped, signer)


async def start_instance(kube: KubeResources, namespace: str, name: str,
                         now: datetime | None = None,
                         signer: RecordSigner | None = None) -> InstanceRecord:
    """Scale a stopped instance back to its replicas; an expired TTL starts again."""
    signer = signer or default_signer()
    _, rec = await read_record(kube, namespace, name, signer)
    refuse_deleting(rec)
    if rec.state == RUNNING:
        return rec
    for obj in rec.objects:
        kind, obj_name = obj["kind"], obj["name"]
        if kind not in (*SCALABLE, *SUSPENDABLE):
            continue
        try:
            if await _recorded(kube, rec, obj) is None:
                continue
            if kind in SCALABLE:
                await _scale(kube, kind, obj_name, namespace,
                             rec.replicas.get(f"{kind}/{obj_name}", 1))
            else:
                await kube.patch(kind, obj_name, namespace, suspend_patch(kind, False))
        except ApiException as e:
            if e.status != 404:
                raise
    now = now or now_utc()

    def started(r: InstanceRecord) -> None:
        refuse_deleting(r)
        r.state = RUNNING
        expires = r.expires()
        if r.ttl and (expires is None or expires <= now):
            r.renewed_at = now
            r.expires_at = now + timedelta(seconds=min(r.ttl, r.max_ttl or r.ttl))

    return await update_record(kube, namespace, name, started, signer)


async def delete_objects(kube: KubeResources, namespace: str, objects: list[dict]) -> None:
    """Delete `objects` (kind/name dicts we just made) in reverse order; gone ones are fine."""
    for obj in reversed(objects):
        await kube.delete(obj["kind"], obj["name"], namespace)


def refuse_deleting(rec: InstanceRecord) -> None:
    """Stop, start, extend: not on an instance whose delete has begun."""
    if rec.phase == DELETING:
        raise InstanceDeleting(f"instance {rec.name!r} is being deleted")


async def delete_exact(kube: KubeResources, kind: str, name: str, namespace: str,
                       uid: str) -> bool:
    """Delete the object if it is still the one with `uid` (a precondition the API server
    checks, so one made again under the same name in between is never deleted); True
    when deleted, False when gone or another object."""
    try:
        await kube.request("DELETE", resource_for(kind).path(namespace, name), body={
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
            "preconditions": {"uid": uid}})
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        if e.status == 409:
            log.warning("%s %s/%s is another object now (UID differs): left alone", kind,
                        namespace, name)
            return False
        raise


def _mark_deleting(rec: InstanceRecord) -> None:
    rec.phase = DELETING


async def delete_instance(kube: KubeResources, namespace: str, name: str,
                          signer: RecordSigner | None = None) -> None:
    """Delete the instance (raises InstanceNotFound or RecordInvalid): mark its record
    `deleting`, delete every object the record made (same UID), then the record.

    Idempotent, and safe to cut short anywhere: once marked, the reconciler finishes it;
    before, nothing has changed. A PersistentVolumeClaim the template made is one of the
    instance's objects and goes with it (a delete, not a stop, was asked for)."""
    signer = signer or default_signer()
    secret, rec = await read_record(kube, namespace, name, signer)
    record_uid = (secret.get("metadata") or {}).get("uid", "")
    if rec.phase != DELETING:
        # written before anything is deleted, resourceVersion-checked: a rollforward that
        # read the record before this can't seal it any more (it undoes what it made)
        rec = await update_record(kube, namespace, name, _mark_deleting, signer)
    for obj in reversed(rec.objects):
        if not may_touch(obj["kind"]):
            continue
        current = await _recorded(kube, rec, obj)
        if current is not None:
            await delete_exact(kube, obj["kind"], obj["name"], namespace,
                               current["metadata"]["uid"])
    # last: while the record is there, a crash leaves a delete the reconciler finishes
    if record_uid:
        await delete_exact(kube, "Secret", record_name(name), namespace, record_uid)
    else:
        await kube.delete("Secret", record_name(name), namespace)


async def extend_instance(kube: KubeResources, namespace: str, name: str, seconds: int,
                          max_ttl: int | None = None, now: datetime | None = None,
                          signer: RecordSigner | None = None) -> InstanceRecord:
    """Move the expiry `seconds` later (from now if it already passed), capped at
    `max_ttl` from now (and at the cap the record was made with)."""
    now = now or now_utc()

    def extended(r: InstanceRecord) -> None:
        refuse_deleting(r)
        current = r.expires(max_ttl)
        base = current if current and current > now else now
        expires = base + timedelta(seconds=seconds)
        caps = [c for c in (max_ttl, r.max_ttl) if c]
        if caps:
            expires = min(expires, now + timedelta(seconds=min(caps)))
        r.expires_at, r.renewed_at = expires, now
        if max_ttl:
            r.max_ttl = min(caps)

    return await update_record(kube, namespace, name, extended, signer)
