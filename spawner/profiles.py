"""Admin-declared flavors (CPU small/large, GPU A100, ...) as KubeSpawner profile_list entries.

A flavor is a dict::

    {"slug": "gpu-a100", "display_name": "GPU A100", "description": "...",
     "cpu_guarantee": 2, "cpu_limit": 8, "mem_guarantee": "8G", "mem_limit": "32G",
     "gpu": {"resource": "nvidia.com/gpu", "counts": [1, 2, 4]},
     "node_selector": {"gpu": "a100"}, "tolerations": [{...}],
     "images": {"pytorch": "quay.io/jupyter/pytorch-notebook:2024-12-02"},
     "idle_timeout": 3600, "groups": ["ml"], "storage": {"preset": "local", ...},
     "default": False, "kubespawner_override": {...}}

Tolerations are *merged* with the spawner's defaults (not put in kubespawner_override,
where a list would replace them); storage is applied by KDashSpawner after the profile.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .gpu_availability import GpuFree

_SIMPLE = ("cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit", "image")


def flavor_slug(flavor: Mapping[str, Any]) -> str:
    if flavor.get("slug"):
        return str(flavor["slug"])
    return re.sub(r"[^a-z0-9]+", "-", str(flavor["display_name"]).lower()).strip("-")


def allowed(flavor: Mapping[str, Any], groups: Iterable[str], is_admin: bool = False) -> bool:
    """May a user in `groups` use `flavor`? No `groups` means everyone."""
    wanted = flavor.get("groups")
    return not wanted or is_admin and flavor.get("admins_allowed", True) or bool(
        set(wanted) & set(groups))


def allowed_flavors(flavors: list[Mapping], groups: Iterable[str],
                    is_admin: bool = False) -> list[Mapping]:
    groups = list(groups)
    return [f for f in flavors if allowed(f, groups, is_admin)]


def find_flavor(flavors: list[Mapping], slug: str | None) -> Mapping | None:
    for f in flavors:
        if flavor_slug(f) == slug:
            return f
    return None


def gpu_counts(flavor: Mapping[str, Any]) -> list[int]:
    gpu = flavor.get("gpu") or {}
    return [int(c) for c in gpu.get("counts") or ([gpu["count"]] if "count" in gpu else [1])]


def merge_tolerations(base: list[dict], extra: list[dict]) -> list[dict]:
    """`base` then the `extra` tolerations not already in it (order kept, no duplicates)."""
    merged: list[dict] = []
    for t in [*base, *extra]:
        if t not in merged:
            merged.append(copy.deepcopy(t))
    return merged


def describe(flavor: Mapping[str, Any], free: GpuFree | None) -> str:
    text = str(flavor.get("description", ""))
    if flavor.get("gpu") and free is not None:
        resource = flavor["gpu"].get("resource", "nvidia.com/gpu")
        note = f"{free.total} GPU{'s' if free.total != 1 else ''} free now ({resource})"
        if free.largest_node != free.total:
            note += f", at most {free.largest_node} per server"
        text = f"{text} — {note}" if text else note
    return text


def to_profile(flavor: Mapping[str, Any], free: GpuFree | None = None) -> dict[str, Any]:
    """The KubeSpawner profile for `flavor` (with the free-GPU note for GPU flavors)."""
    override: dict[str, Any] = copy.deepcopy(dict(flavor.get("kubespawner_override") or {}))
    for key in _SIMPLE:
        if key in flavor:
            override[key] = flavor[key]
    if flavor.get("node_selector"):
        override["node_selector"] = dict(flavor["node_selector"])
    profile: dict[str, Any] = {
        "slug": flavor_slug(flavor),
        "display_name": flavor.get("display_name", flavor_slug(flavor)),
        "description": describe(flavor, free),
        "kubespawner_override": override,
    }
    if flavor.get("default"):
        profile["default"] = True
    options: dict[str, Any] = {}
    if flavor.get("gpu"):
        resource = flavor["gpu"].get("resource", "nvidia.com/gpu")
        options["gpus"] = {
            "display_name": "GPUs",
            "choices": {
                str(n): {
                    "display_name": f"{n} × {resource}"
                    + ("" if free is None or n <= free.largest_node else " (not free now)"),
                    "kubespawner_override": {
                        "extra_resource_limits": {resource: str(n)},
                        "extra_resource_guarantees": {resource: str(n)},
                    },
                }
                for n in gpu_counts(flavor)
            },
        }
    images = flavor.get("images") or {}
    if len(images) > 1:
        options["image"] = {
            "display_name": "Image",
            "choices": {
                slug: {"display_name": spec.get("display_name", slug) if isinstance(spec, dict)
                       else slug,
                       "kubespawner_override": {
                           "image": spec["image"] if isinstance(spec, dict) else spec}}
                for slug, spec in images.items()
            },
        }
    elif len(images) == 1:
        spec = next(iter(images.values()))
        override["image"] = spec["image"] if isinstance(spec, dict) else spec
    if options:
        profile["profile_options"] = options
    return profile


def chosen_gpus(flavor: Mapping[str, Any], user_options: Mapping[str, Any]) -> int:
    """GPUs a spawn of `flavor` asks for (the chosen count, else the first choice)."""
    if not flavor.get("gpu"):
        return 0
    counts = gpu_counts(flavor)
    choice = user_options.get("gpus")
    if choice in (None, ""):
        return counts[0]
    try:
        n = int(str(choice))
    except ValueError:
        raise ValueError(f"GPUs must be a number, not {choice!r}") from None
    if n not in counts:
        raise ValueError(
            f"{n} GPUs is not a choice of {flavor_slug(flavor)}; choose one of "
            + ", ".join(str(c) for c in counts))
    return n
