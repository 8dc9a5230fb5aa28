"""The labels and annotations that mark what kdash-hub made and for whom.

Ownership checks (deleting a namespace, listing a user's side services) go through these
helpers, so a label written by one part is read the same way by every other.
"""

from __future__ import annotations

from .naming import label_value

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kdash-hub"
OWNER = "kdash-hub.io/owner"
OWNER_ANNOTATION = "kdash-hub.io/owner-username"
COMPONENT = "kdash-hub.io/component"
# side services of the launcher: which instance and template an object belongs to
INSTANCE = "kdash-hub.io/instance"
TEMPLATE = "kdash-hub.io/template"
# on a user namespace: the hash of its bundle, written last by the spawner (the bundle is complete)
BUNDLE_HASH = "kdash-hub.io/bundle-hash"


def owner_labels(username: str, component: str | None = None) -> dict[str, str]:
    """Labels for an object kdash-hub manages on behalf of `username`."""
    labels = {MANAGED_BY: MANAGED_BY_VALUE, OWNER: label_value(username)}
    if component:
        labels[COMPONENT] = component
    return labels


def owner_annotations(username: str) -> dict[str, str]:
    """Annotations keeping the exact username (label values may be hashed)."""
    return {OWNER_ANNOTATION: username}


def owner_selector(username: str, component: str | None = None) -> str:
    """A label selector matching the objects `owner_labels` marks."""
    return ",".join(f"{k}={v}" for k, v in owner_labels(username, component).items())


def is_owned_by(obj: dict, username: str) -> bool:
    """True when `obj` is managed by kdash-hub and belongs to exactly `username`."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY) != MANAGED_BY_VALUE:
        return False
    if labels.get(OWNER) != label_value(username):
        return False
    # the annotation, when present, must match exactly (label values can be hashed)
    return annotations.get(OWNER_ANNOTATION, username) == username
