"""Stop, start, delete and expire instances — the part the culler shares with the launcher.

Stop scales every Deployment/StatefulSet of an instance to zero (and suspends its Jobs),
remembering the replicas in the record, so start brings back exactly what was there:
the objects, their data and their definition stay (Kubeflow's model). Delete removes the
objects the record lists and then the record. Which of the two happens when an instance's
TTL runs out is the template's `expiry` (default: stop, so no data is lost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import RESOURCES, KubeResources
from kdash_hub.naming import label_value

from .records import (
    ANN_EXPIRES,
    ANN_REPLICAS,
    ANN_STATE,
    RUNNING,
    STOPPED,
    InstanceRecord,
    iso,
    now_utc,
    record_name,
    record_selector,
)

SCALABLE = ("Deployment", "StatefulSet")
# never touched through a record, whatever it says: the namespace's guardrails
GUARDRAIL_KINDS = {"ResourceQuota", "LimitRange", "Role", "RoleBinding", "NetworkPolicy",
                   "ServiceAccount"}


def may_touch(kind: str) -> bool:
    """Kinds a record may name: namespaced ones that aren't the namespace's guardrails.

    Records live in the user's namespace, where a user may be able to edit them; so what a
    record lists is checked here and against each object's labels before any change.
    """
    resource = RESOURCES.get(kind)
    return resource is not None and resource.namespaced and kind not in GUARDRAIL_KINDS


def belongs_to(obj: dict | None, rec: InstanceRecord) -> bool:
    """True when `obj` carries this instance's labels and owner."""
    if obj is None:
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(L.INSTANCE) == label_value(rec.name) and L.is_owned_by(obj, rec.owner)


class InstanceNotFound(LookupError):
    """No such instance (or not one of this user's)."""


@dataclass(frozen=True)
class InstanceRef:
    """An instance whose TTL ran out, and what its template says to do about it."""

    namespace: str
    name: str
    owner: str
    template: str
    on_expiry: str  # "stop" | "delete"
    expires_at: datetime


async def read_record(
    kube: KubeResources, namespace: str, name: str,
) -> tuple[dict, InstanceRecord]:
    """The record Secret of an instance and what it says (raises InstanceNotFound)."""
    secret = await kube.get("Secret", record_name(name), namespace)
    if secret is None:
        raise InstanceNotFound(f"no instance {name!r} in {namespace}")
    return secret, InstanceRecord.from_secret(secret)


async def list_records(kube: KubeResources, username: str | None = None,
                       namespace: str | None = None) -> list[InstanceRecord]:
    """Every instance record (of `username` when given) — one list request."""
    secrets = await kube.list("Secret", namespace, label_selector=record_selector(username))
    records = [InstanceRecord.from_secret(s) for s in secrets]
    if username is not None:  # label values can be hashed: the annotation is exact
        records = [r for r in records if r.owner == username]
    return records


async def expired_instances(kube: KubeResources, now: datetime) -> list[InstanceRef]:
    """Running instances whose expiry time is at or before `now` (stopped ones that expire
    with `delete` too: a stopped instance still holds its storage)."""
    refs = []
    for rec in await list_records(kube):
        if rec.expires_at is None or rec.expires_at > now:
            continue
        if rec.state == STOPPED and rec.expiry == "stop":
            continue
        refs.append(InstanceRef(rec.namespace, rec.name, rec.owner, rec.template,
                                rec.expiry, rec.expires_at))
    return refs


async def _scale(kube: KubeResources, kind: str, name: str, namespace: str,
                 replicas: int) -> None:
    await kube.patch(kind, name, namespace, {"spec": {"replicas": replicas}})


async def stop_instance(kube: KubeResources, namespace: str, name: str) -> InstanceRecord:
    """Scale the instance to zero, keeping its objects and definition (idempotent)."""
    secret, rec = await read_record(kube, namespace, name)
    if rec.state == STOPPED:
        return rec
    replicas = dict(rec.replicas)
    for obj in rec.objects:
        kind, obj_name = obj["kind"], obj["name"]
        try:
            if kind in SCALABLE:
                current = await kube.get(kind, obj_name, namespace)
                if not belongs_to(current, rec):
                    continue
                count = (current.get("spec") or {}).get("replicas", 1)
                if count:
                    replicas[f"{kind}/{obj_name}"] = count
                await _scale(kube, kind, obj_name, namespace, 0)
            elif kind == "Job":
                await kube.patch(kind, obj_name, namespace, {"spec": {"suspend": True}})
        except ApiException as e:
            if e.status != 404:
                raise
    rec.state, rec.replicas = STOPPED, replicas
    await kube.patch("Secret", record_name(name), namespace, {"metadata": {"annotations": {
        ANN_STATE: STOPPED, ANN_REPLICAS: json.dumps(replicas)}}})
    return rec


async def start_instance(kube: KubeResources, namespace: str, name: str,
                         now: datetime | None = None) -> InstanceRecord:
    """Scale a stopped instance back to its replicas; an expired TTL starts again."""
    secret, rec = await read_record(kube, namespace, name)
    if rec.state == RUNNING:
        return rec
    for obj in rec.objects:
        kind, obj_name = obj["kind"], obj["name"]
        try:
            if kind in SCALABLE:
                if not belongs_to(await kube.get(kind, obj_name, namespace), rec):
                    continue
                await _scale(kube, kind, obj_name, namespace,
                             int(rec.replicas.get(f"{kind}/{obj_name}", 1)))
            elif kind == "Job":
                await kube.patch(kind, obj_name, namespace, {"spec": {"suspend": False}})
        except ApiException as e:
            if e.status != 404:
                raise
    now = now or now_utc()
    annotations = {ANN_STATE: RUNNING}
    if rec.ttl and (rec.expires_at is None or rec.expires_at <= now):
        rec.expires_at = now + timedelta(seconds=rec.ttl)
        annotations[ANN_EXPIRES] = iso(rec.expires_at)
    rec.state = RUNNING
    await kube.patch("Secret", record_name(name), namespace,
                     {"metadata": {"annotations": annotations}})
    return rec


async def delete_objects(kube: KubeResources, namespace: str, objects: list[dict]) -> None:
    """Delete `objects` (kind/name dicts we just made) in reverse order; gone ones are fine."""
    for obj in reversed(objects):
        await kube.delete(obj["kind"], obj["name"], namespace)


async def delete_instance(kube: KubeResources, namespace: str, name: str) -> None:
    """Delete every object of the instance, then its record (raises InstanceNotFound).

    Only objects that still carry the instance's labels are deleted: a record edited to
    name something else in the namespace (or elsewhere) deletes nothing extra.
    """
    secret, rec = await read_record(kube, namespace, name)
    for obj in reversed(rec.objects):
        if not may_touch(obj["kind"]):
            continue
        if belongs_to(await kube.get(obj["kind"], obj["name"], namespace), rec):
            await kube.delete(obj["kind"], obj["name"], namespace)
    await kube.delete("Secret", record_name(name), namespace)


async def extend_instance(kube: KubeResources, namespace: str, name: str, seconds: int,
                          max_ttl: int | None = None,
                          now: datetime | None = None) -> InstanceRecord:
    """Move the expiry `seconds` later (from now if it already passed), capped at
    `max_ttl` from now."""
    secret, rec = await read_record(kube, namespace, name)
    now = now or now_utc()
    base = rec.expires_at if rec.expires_at and rec.expires_at > now else now
    expires = base + timedelta(seconds=seconds)
    if max_ttl:
        expires = min(expires, now + timedelta(seconds=max_ttl))
    rec.expires_at = expires
    await kube.patch("Secret", record_name(name), namespace,
                     {"metadata": {"annotations": {ANN_EXPIRES: iso(expires)}}})
    return rec
