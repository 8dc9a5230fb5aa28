"""Render a template for one user: substitute, force the namespace, label every object."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from .. import labels as L
from ..naming import label_value
from .batch import BATCH_KINDS, batch_errors, pod_template_metadata
from .errors import RenderError
from .model import Template
from .parse import DEFAULT_ALLOWED_KINDS
from .substitute import substitute

COMPONENT = "launcher"
_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet"}


def instance_labels(username: str, template_id: str, instance: str) -> dict[str, str]:
    """The labels every object of an instance carries (its pods too)."""
    return {
        **L.owner_labels(username, COMPONENT),
        L.INSTANCE: label_value(instance),
        L.TEMPLATE: label_value(template_id),
    }


def _add_metadata(meta: dict[str, Any], labels: dict[str, str], username: str) -> None:
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **L.owner_annotations(username)}


def render_objects(
    template: Template, values: dict[str, str], *, namespace: str, username: str,
    instance: str, allowed_kinds: Iterable[str] = DEFAULT_ALLOWED_KINDS,
) -> list[dict[str, Any]]:
    """The objects of `template` for `username`, ready to create (raises RenderError)."""
    labels = instance_labels(username, template.id, instance)
    allowed = set(allowed_kinds)
    objects: list[dict[str, Any]] = []
    errors: list[str] = []
    for manifest in template.manifests:
        try:
            obj = substitute(copy.deepcopy(manifest.obj), values)
        except RenderError as e:
            errors.extend(f"{manifest.kind} (line {manifest.line}): {m}" for m in e.messages)
            continue
        if obj.get("kind") != manifest.kind or obj.get("kind") not in allowed:
            errors.append(f"line {manifest.line}: the kind of an object can't be changed")
            continue
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            errors.append(f"{manifest.kind} (line {manifest.line}): no name after rendering")
            continue
        meta["namespace"] = namespace
        meta.pop("generateName", None)
        _add_metadata(meta, labels, username)
        if obj["kind"] in _POD_TEMPLATE_KINDS:
            pod_template = (obj.get("spec") or {}).get("template")
            if isinstance(pod_template, dict):
                _add_metadata(pod_template.setdefault("metadata", {}), labels, username)
        if obj["kind"] in BATCH_KINDS:
            problems = batch_errors(obj)
            if problems:
                errors.extend(f"{manifest.kind} (line {manifest.line}): {m}" for m in problems)
                continue
            inner_meta = pod_template_metadata(obj)
            if not all(isinstance(m, dict) for m in inner_meta):
                errors.append(f"{manifest.kind} (line {manifest.line}): a template's metadata"
                              " must be a mapping")
                continue
            for inner in inner_meta:
                # the Jobs and pods it makes: the instance's labels, in its namespace
                inner.pop("namespace", None)
                _add_metadata(inner, labels, username)
        objects.append(obj)
    if errors:
        raise RenderError(errors)
    return objects
