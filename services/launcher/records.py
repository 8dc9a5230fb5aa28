"""The record of an instance: one Secret per instance holding its definition.

The record keeps what stop/start, the list and the culler need (template, values, the
objects made, replicas before a stop, expiry) in annotations, and the values of secret
variables in its data — never in a ConfigMap. It is created first, so its name is the
lock that makes instance names unique per user.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import label_value

RECORD_COMPONENT = "launcher-instance"
RECORD_PREFIX = "kdash-instance-"
A = "kdash-hub.io/"
ANN_INSTANCE = A + "instance-name"
ANN_TEMPLATE = A + "template-id"
ANN_TEMPLATE_NAME = A + "template-name"
ANN_CREATED = A + "created-at"
ANN_EXPIRES = A + "expires-at"
ANN_EXPIRY = A + "expiry"
ANN_TTL = A + "ttl-seconds"
ANN_STATE = A + "state"
ANN_OBJECTS = A + "objects"
ANN_REPLICAS = A + "replicas"
ANN_VALUES = A + "values"
ANN_PROXY = A + "proxy"
SECRET_KEY = "secret-values.json"

RUNNING = "running"
STOPPED = "stopped"


def record_name(instance: str) -> str:
    return f"{RECORD_PREFIX}{instance}"


def record_selector(username: str | None = None) -> str:
    """Label selector of instance records: everyone's, or one user's."""
    if username is None:
        return f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.COMPONENT}={RECORD_COMPONENT}"
    return L.owner_selector(username, RECORD_COMPONENT)


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else ""


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class InstanceRecord:
    """An instance as its record describes it."""

    namespace: str
    name: str
    owner: str
    template: str
    template_name: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    expiry: str = "stop"
    ttl: int | None = None
    state: str = RUNNING
    objects: list[dict[str, str]] = field(default_factory=list)
    replicas: dict[str, int] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    proxy: dict[str, Any] | None = None
    resource_version: str = ""

    @property
    def workloads(self) -> list[dict[str, str]]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]

    def to_secret(self, secret_values: dict[str, str] | None = None) -> dict[str, Any]:
        labels = {
            **L.owner_labels(self.owner, RECORD_COMPONENT),
            L.INSTANCE: label_value(self.name), L.TEMPLATE: label_value(self.template),
        }
        secret: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": record_name(self.name), "namespace": self.namespace,
                "labels": labels,
                "annotations": {**L.owner_annotations(self.owner), **self.annotations()},
            },
        }
        if secret_values:
            encoded = base64.b64encode(json.dumps(secret_values).encode()).decode()
            secret["data"] = {SECRET_KEY: encoded}
        return secret

    def annotations(self) -> dict[str, str]:
        return {
            ANN_INSTANCE: self.name, ANN_TEMPLATE: self.template,
            ANN_TEMPLATE_NAME: self.template_name, ANN_CREATED: iso(self.created_at),
            ANN_EXPIRES: iso(self.expires_at), ANN_EXPIRY: self.expiry,
            ANN_TTL: str(self.ttl or ""), ANN_STATE: self.state,
            ANN_OBJECTS: json.dumps(self.objects), ANN_REPLICAS: json.dumps(self.replicas),
            ANN_VALUES: json.dumps(self.values),
            ANN_PROXY: json.dumps(self.proxy) if self.proxy else "",
        }

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> InstanceRecord:
        meta = secret.get("metadata") or {}
        ann = meta.get("annotations") or {}

        def load(key: str, default: Any) -> Any:  # a user may have edited the record
            try:
                value = json.loads(ann.get(key) or "null")
            except ValueError:
                return default
            return value if isinstance(value, type(default)) else default

        ttl = ann.get(ANN_TTL) or ""
        objects = [o for o in load(ANN_OBJECTS, []) if isinstance(o, dict)
                   and isinstance(o.get("kind"), str) and isinstance(o.get("name"), str)]
        replicas = {k: v for k, v in load(ANN_REPLICAS, {}).items()
                    if isinstance(v, int) and 0 <= v <= 100}
        return cls(
            namespace=meta.get("namespace", ""),
            name=ann.get(ANN_INSTANCE) or meta.get("name", "").removeprefix(RECORD_PREFIX),
            owner=ann.get(L.OWNER_ANNOTATION, ""), template=ann.get(ANN_TEMPLATE, ""),
            template_name=ann.get(ANN_TEMPLATE_NAME, ""),
            created_at=parse_iso(ann.get(ANN_CREATED) or meta.get("creationTimestamp")),
            expires_at=parse_iso(ann.get(ANN_EXPIRES)), expiry=ann.get(ANN_EXPIRY) or "stop",
            ttl=int(ttl) if ttl.isdigit() else None, state=ann.get(ANN_STATE) or RUNNING,
            objects=objects, replicas=replicas,
            values=load(ANN_VALUES, {}), proxy=load(ANN_PROXY, {}) or None,
            resource_version=meta.get("resourceVersion", ""),
        )


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    """The secret variable values kept in a record's data."""
    encoded = (secret.get("data") or {}).get(SECRET_KEY)
    if not encoded:
        return {}
    try:
        return json.loads(base64.b64decode(encoded))
    except ValueError:
        return {}
