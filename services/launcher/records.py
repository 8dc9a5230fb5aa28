"""The record of an instance: one Secret per instance, signed by the launcher.

The record keeps what stop/start, the list, the proxy and the culler need (template, the
objects made with their UIDs, which workload and port the proxy reaches, replicas before a
stop, lifetime and its cap) as one canonical JSON annotation, and an HMAC-SHA256 of it
(`signing.py`) in a second one. The Secret lives in the user's namespace, so the user can
edit it: a record whose signature doesn't verify, or whose content isn't exactly what the
launcher writes, raises `RecordInvalid` and is never acted on. The values of secret
variables stay in the Secret's data (never in a ConfigMap); the launcher never reads them
back. The record is created first, so its name is the lock that makes instance names
unique per user.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import label_value

from .signing import RecordSigner

RECORD_COMPONENT = "launcher-instance"
RECORD_PREFIX = "kdash-instance-"
A = "kdash-hub.io/"
ANN_RECORD = A + "instance-record"
ANN_SIGNATURE = A + "instance-record-signature"
SECRET_KEY = "secret-values.json"
FORMAT_VERSION = 1

RUNNING = "running"
STOPPED = "stopped"
# how far the launch got: `creating` from the record's write until every object is made,
# then `ready`; a record still `creating` with no launch running was cut short (a crash).
# `deleting`: a delete began (written before any object is deleted, the record deleted
# last), so a delete cut short is finished by the reconciler, never rolled forward
CREATING = "creating"
READY = "ready"
DELETING = "deleting"
PHASES = (CREATING, READY, DELETING)
EXPIRY_ACTIONS = ("stop", "delete")
# 1-40 lowercase letters, digits and '-', starting with a letter (always fullmatch)
INSTANCE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_MAX_SECONDS = 100 * 366 * 86400  # no lifetime of a record is longer than a century
_MAX_TEXT = 8192


class RecordInvalid(ValueError):
    """A record the launcher didn't write as it is: unsigned, edited or malformed."""


def is_instance_name(name: object) -> bool:
    return isinstance(name, str) and INSTANCE_NAME.fullmatch(name) is not None


def record_name(instance: str) -> str:
    return f"{RECORD_PREFIX}{instance}"


def record_selector(username: str | None = None) -> str:
    """Label selector of instance records: everyone's, or one user's."""
    if username is None:
        return f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.COMPONENT}={RECORD_COMPONENT}"
    return L.owner_selector(username, RECORD_COMPONENT)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else ""


def parse_timestamp(text: object) -> datetime:
    """A UTC timestamp exactly as `iso` writes it (raises RecordInvalid otherwise)."""
    if not isinstance(text, str) or not _TIMESTAMP.fullmatch(text):
        raise RecordInvalid(f"not a UTC timestamp: {str(text)[:40]!r}")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise RecordInvalid(f"not a UTC timestamp: {text!r}") from None


@dataclass
class InstanceRecord:
    """An instance as its (verified) record describes it."""

    namespace: str
    name: str
    owner: str
    template: str
    template_name: str = ""
    created_at: datetime | None = None
    # when the lifetime was last set (launch, extend, start): the cap counts from here
    renewed_at: datetime | None = None
    expires_at: datetime | None = None
    expiry: str = "stop"
    ttl: int | None = None
    max_ttl: int | None = None
    state: str = RUNNING
    phase: str = READY
    # HMAC of the rendered objects (`objects_digest`): the reconciler makes a missing object
    # again only when the template renders exactly what the launch made; "" never
    objects_mac: str = ""
    # {"kind", "name", "uid"}; uid "" until the launch has made the object
    objects: list[dict[str, str]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    # {"service", "service_port", "workload": {"kind", "name"} | None, "port", "http",
    #  "strip_prefix"}: the proxy reaches `port` on the ready pods of `workload`
    proxy: dict[str, Any] | None = None
    # the owner asked for this instance's connection details in their notebook's
    # environment (the launcher's kdash-notebook-env Secret); signed, so only they decide
    notebook_env: bool = False
    # ... or as files in its notebook (the kdash-notebook-files Secret, mounted); signed
    notebook_file: bool = False
    resource_version: str = ""

    @property
    def workloads(self) -> list[dict[str, str]]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]

    @property
    def sealed(self) -> bool:
        """True once the launch finished: phase ready, every object's UID recorded."""
        return self.phase == READY and all(o.get("uid") for o in self.objects)

    def uid_of(self, kind: str, name: str) -> str:
        for obj in self.objects:
            if obj["kind"] == kind and obj["name"] == name:
                return obj.get("uid", "")
        return ""

    def expires(self, max_ttl: int | None = None) -> datetime | None:
        """When the instance expires: the signed expiry, never later than the signed cap
        (or `max_ttl`, the cap in force now) counted from the last renewal."""
        limits = [t for t in (self.expires_at,) if t is not None]
        base = self.renewed_at or self.created_at
        for cap in (self.max_ttl, max_ttl):
            if cap and base is not None:
                limits.append(base + timedelta(seconds=cap))
        return min(limits) if limits else None

    # --- writing ----------------------------------------------------------------------
    def content(self) -> dict[str, Any]:
        """Everything the signature covers."""
        return {
            "v": FORMAT_VERSION, "namespace": self.namespace, "name": self.name,
            "owner": self.owner, "template": self.template,
            "template_name": self.template_name, "created_at": iso(self.created_at),
            "renewed_at": iso(self.renewed_at), "expires_at": iso(self.expires_at) or None,
            "expiry": self.expiry, "ttl": self.ttl, "max_ttl": self.max_ttl,
            "state": self.state, "phase": self.phase, "objects_mac": self.objects_mac,
            "objects": self.objects, "replicas": self.replicas,
            "values": self.values, "proxy": self.proxy,
            # only when on: records written before the field existed keep their text
            **({"notebook_env": True} if self.notebook_env else {}),
            **({"notebook_file": True} if self.notebook_file else {}),
        }

    def signed_annotations(self, signer: RecordSigner) -> dict[str, str]:
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True)
        return {ANN_RECORD: text, ANN_SIGNATURE: signer.sign(text.encode())}

    def to_secret(self, signer: RecordSigner,
                  secret_values: dict[str, str] | None = None) -> dict[str, Any]:
        labels = {
            **L.owner_labels(self.owner, RECORD_COMPONENT),
            L.INSTANCE: label_value(self.name), L.TEMPLATE: label_value(self.template),
        }
        secret: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": record_name(self.name), "namespace": self.namespace,
                "labels": labels,
                "annotations": {**L.owner_annotations(self.owner),
                                **self.signed_annotations(signer)},
            },
        }
        if secret_values:
            encoded = base64.b64encode(json.dumps(secret_values).encode()).decode()
            secret["data"] = {SECRET_KEY: encoded}
        return secret

    # --- reading ----------------------------------------------------------------------
    @classmethod
    def from_secret(cls, secret: Any, signer: RecordSigner) -> InstanceRecord:
        """The record a Secret holds; RecordInvalid unless the launcher wrote it as it is.

        Whatever the Secret contains (any bytes, any JSON), nothing but RecordInvalid is
        raised: a bad record is one to skip, never an error of the caller.
        """
        try:
            return cls._from_secret(secret, signer)
        except RecordInvalid:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError,
                RecursionError) as e:  # a malformed record, whatever the malformation
            raise RecordInvalid(f"malformed record ({type(e).__name__})") from None

    @classmethod
    def _from_secret(cls, secret: Any, signer: RecordSigner) -> InstanceRecord:
        meta = secret.get("metadata") if isinstance(secret, dict) else None
        if not isinstance(meta, dict):
            raise RecordInvalid("not a Secret")
        ann = meta.get("annotations")
        ann = ann if isinstance(ann, dict) else {}
        text, signature = ann.get(ANN_RECORD), ann.get(ANN_SIGNATURE)
        if not isinstance(text, str) or not text:
            raise RecordInvalid("unsigned record (no launcher record annotation)")
        if not signer.verify(text.encode("utf-8", "surrogatepass"), signature):
            raise RecordInvalid("the signature doesn't verify: changed outside the launcher")
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
            raise RecordInvalid("unknown record format")
        rec = cls(
            namespace=_text(data, "namespace"), name=_text(data, "name"),
            owner=_text(data, "owner"), template=_text(data, "template"),
            template_name=_text(data, "template_name", empty=True),
            created_at=parse_timestamp(data.get("created_at")),
            renewed_at=parse_timestamp(data.get("renewed_at")),
            expires_at=None if data.get("expires_at") is None
            else parse_timestamp(data["expires_at"]),
            expiry=_choice(data, "expiry", EXPIRY_ACTIONS),
            ttl=_seconds(data, "ttl"), max_ttl=_seconds(data, "max_ttl"),
            state=_choice(data, "state", (RUNNING, STOPPED)),
            phase=_phase(data), objects_mac=_text(data, "objects_mac", empty=True)
            if "objects_mac" in data else "",
            objects=_objects(data.get("objects")), replicas=_replicas(data.get("replicas")),
            values=_values(data.get("values")), proxy=_proxy(data.get("proxy")),
            notebook_env=_flag(data, "notebook_env"),
            notebook_file=_flag(data, "notebook_file"),
            resource_version=str(meta.get("resourceVersion") or ""),
        )
        # the signature covers where the record claims to be: it must be there
        if meta.get("namespace") != rec.namespace or meta.get("name") != record_name(rec.name):
            raise RecordInvalid("the record was moved or copied (name or namespace differ)")
        if not is_instance_name(rec.name):
            raise RecordInvalid("not an instance name")
        return rec


def _text(data: dict, key: str, *, empty: bool = False) -> str:
    value = data.get(key)
    if not isinstance(value, str) or (not value and not empty) or len(value) > _MAX_TEXT:
        raise RecordInvalid(f"field {key} is not a text")
    return value


def _choice(data: dict, key: str, choices: tuple[str, ...]) -> str:
    value = data.get(key)
    if value not in choices:
        raise RecordInvalid(f"field {key} is not one of {', '.join(choices)}")
    return value


def _flag(data: dict, key: str) -> bool:
    value = data.get(key, False)
    if type(value) is not bool:
        raise RecordInvalid(f"field {key} is not true or false")
    return value


def _phase(data: dict) -> str:
    """The signed phase; records written before phases existed: ready once sealed."""
    if "phase" in data:
        return _choice(data, "phase", PHASES)
    objects = data.get("objects")
    done = isinstance(objects, list) and all(
        isinstance(o, dict) and o.get("uid") for o in objects)
    return READY if done else CREATING


def objects_digest(objects: list[dict[str, Any]], signer: RecordSigner) -> str:
    """An HMAC of rendered objects (canonical JSON): equal renders, equal digests; the
    secret values inside never show (a plain hash of a short password could be guessed)."""
    text = json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return signer.sign(b"objects:" + text.encode())


def _seconds(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= _MAX_SECONDS:
        raise RecordInvalid(f"field {key} is not a number of seconds")
    return value


def _objects(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise RecordInvalid("field objects is not a list")
    objects = []
    for obj in value:
        if not (isinstance(obj, dict) and set(obj) == {"kind", "name", "uid"}
                and all(isinstance(v, str) for v in obj.values()) and obj["kind"]
                and obj["name"]):
            raise RecordInvalid("field objects has a malformed entry")
        objects.append(dict(obj))
    return objects


def _replicas(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and type(v) is int and 0 <= v <= 100 for k, v in value.items()):
        raise RecordInvalid("field replicas is malformed")
    return dict(value)


def _values(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise RecordInvalid("field values is malformed")
    return dict(value)


def _proxy(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordInvalid("field proxy is malformed")
    port, service_port = value.get("port"), value.get("service_port")
    workload = value.get("workload")
    ok = (isinstance(value.get("service"), str)
          and (port is None or (type(port) is int and 0 < port < 65536))
          and type(service_port) is int and 0 < service_port < 65536
          and type(value.get("http")) is bool and type(value.get("strip_prefix")) is bool
          and (workload is None or (isinstance(workload, dict)
                                    and set(workload) == {"kind", "name"}
                                    and workload["kind"] in ("Deployment", "StatefulSet")
                                    and isinstance(workload["name"], str))))
    if not ok:
        raise RecordInvalid("field proxy is malformed")
    return dict(value)


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    """The secret variable values kept in a record's data (for people; never acted on)."""
    encoded = (secret.get("data") or {}).get(SECRET_KEY)
    if not encoded:
        return {}
    try:
        return json.loads(base64.b64decode(encoded))
    except ValueError:
        return {}


def objects_match(objects: list[dict[str, Any]], mac: str, signer: RecordSigner) -> bool:
    """True when `objects` are what a record's `objects_mac` was signed for (any key the
    signer still accepts)."""
    if not mac:
        return False
    text = json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return signer.verify(b"objects:" + text.encode(), mac)
