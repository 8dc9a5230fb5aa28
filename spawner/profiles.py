"""Admin-declared flavors (CPU small/large, GPU A100, ...) as KubeSpawner profile_list entries.

A flavor is a dict::

    {"slug": "gpu-a100", "display_name": "GPU A100", "description": "...",
     "cpu_guarantee": 2, "cpu_limit": 8, "mem_guarantee": "8G", "mem_limit": "32G",
     "gpu": {"resource": "nvidia.com/gpu", "counts": [1, 2, 4]},
     "node_selector": {"gpu": "a100"}, "tolerations": [{...}],
     "images": {"pytorch": "quay.io/jupyter/pytorch-notebook:2024-12-02"},
     "custom_image": True,  # or {"registries": [...], "patterns": [...]}: see images.py
     "interfaces": ["lab", "vscode"],  # the first is the default: see interfaces.py
     "idle_timeout": 3600, "groups": ["ml"], "storage": {"preset": "local", ...},
     "default": False, "kubespawner_override": {...}}

Tolerations are *merged* with the spawner's defaults (not put in kubespawner_override,
where a list would replace them); storage is applied by KDashSpawner after the profile.

The chooser names GPU kinds by the admin's display names (`gpu_display_names`), marks the
GPU counts no node can give now as disabled (with the reason), shows each flavor's idle
timeout (the culler's rule) and says in one line why a hidden flavor is hidden.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kdash_hub.durations import format_duration, parse_duration

from . import interfaces
from .gpu_availability import GpuFree

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

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


def gpu_resource(flavor: Mapping[str, Any]) -> str:
    return str((flavor.get("gpu") or {}).get("resource", DEFAULT_GPU_RESOURCE))


def gpu_name(resource: str, names: Mapping[str, str] | None) -> str:
    """The admin's name for a GPU kind ("NVIDIA GPU"), else the resource name itself."""
    return str((names or {}).get(resource) or resource)


def gpu_amount(n: int, resource: str, names: Mapping[str, str] | None) -> str:
    """"1 NVIDIA GPU", "4 NVIDIA GPUs" (an unnamed kind: "4 × vendor.com/gpu")."""
    name = gpu_name(resource, names)
    if name == resource:
        return f"{n} × {resource}"
    return f"{n} {name}" + ("" if n == 1 or name.endswith("s") else "s")


def describe(flavor: Mapping[str, Any], free: GpuFree | None,
             names: Mapping[str, str] | None = None) -> str:
    text = str(flavor.get("description", ""))
    if flavor.get("gpu") and free is not None:
        note = f"{gpu_amount(free.total, gpu_resource(flavor), names)} free now"
        if free.largest_node != free.total:
            note += f", at most {free.largest_node} per server"
        text = f"{text} — {note}" if text else note
    return text


def unavailable_reason(n: int, free: GpuFree | None) -> str | None:
    """Why `n` GPUs can't be had now (None when they can, or nothing is known)."""
    if free is None or n <= free.largest_node:
        return None
    if free.largest_node == 0:
        return "none free now"
    return f"not free now: at most {free.largest_node} on one node"


def idle_timeout(flavor: Mapping[str, Any], rules: Mapping[str, Any] | None,
                 groups: Iterable[str]) -> tuple[bool, int | None]:
    """(known, seconds) of the idle timeout the culler gives a server of `flavor`.

    The same order as the culler (services/culler/rules.py) over the same settings
    (`culler_rules`, shared with CullerApp): the default rule, then the profile rule (the
    flavor's `idle_timeout` when the culler has none for it), then the most lenient group
    rule of the user's groups. Not known when neither the flavor nor the rules say."""
    rules = rules or {}
    slug = flavor_slug(flavor)
    known, idle = False, None
    default = rules.get("default_rule") or {}
    if "idle" in default:
        known, idle = True, parse_duration(default["idle"])
    profile = (rules.get("profile_rules") or {}).get(slug) or {}
    if "idle" in profile:
        known, idle = True, parse_duration(profile["idle"])
    elif flavor.get("idle_timeout") is not None:
        known, idle = True, parse_duration(flavor["idle_timeout"])
    group_rules = rules.get("group_rules") or {}
    found = [parse_duration(group_rules[g]["idle"]) for g in sorted(set(groups))
             if "idle" in (group_rules.get(g) or {})]
    if found:
        known, idle = True, None if None in found else max(v for v in found if v is not None)
    return known, idle


def idle_text(known: bool, seconds: int | None) -> str | None:
    """The chooser's line for an idle timeout."""
    if not known:
        return None
    if seconds is None:
        return "Never stopped for being idle"
    return f"Stopped after {format_duration(seconds)} idle"


def hidden_notes(flavors: list[Mapping], groups: Iterable[str],
                 is_admin: bool = False) -> list[str]:
    """One line per group rule that hides flavors from this user: "GPU A100 and GPU H100
    are for the group ml." A flavor's `hidden_note` replaces the line (False: no line)."""
    groups = list(groups)
    custom: list[str] = []
    by_groups: dict[tuple[str, ...], list[str]] = {}
    for flavor in flavors:
        if allowed(flavor, groups, is_admin):
            continue
        note = flavor.get("hidden_note")
        if note is False:
            continue
        if note:
            if str(note) not in custom:
                custom.append(str(note))
            continue
        key = tuple(flavor.get("groups") or ())
        by_groups.setdefault(key, []).append(str(flavor.get("display_name",
                                                             flavor_slug(flavor))))
    lines = []
    for wanted, names in by_groups.items():
        subject = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        verb = "is" if len(names) == 1 else "are"
        whom = (f"the group {wanted[0]}" if len(wanted) == 1
                else "the groups " + ", ".join(wanted[:-1]) + " and " + wanted[-1])
        lines.append(f"{subject} {verb} for {whom}.")
    return custom + lines


def to_profile(flavor: Mapping[str, Any], free: GpuFree | None = None,
               names: Mapping[str, str] | None = None,
               idle: str | None = None, image_hint: str | None = None) -> dict[str, Any]:
    """The KubeSpawner profile for `flavor` (with the free-GPU note for GPU flavors).

    Extra keys the chooser reads (KubeSpawner ignores them): a choice's `disabled` and
    `disabled_reason`, the profile's `kdash_idle` and `kdash_unavailable`, the custom
    image field's `kdash_hint` (what may be typed: `image_hint`)."""
    override: dict[str, Any] = copy.deepcopy(dict(flavor.get("kubespawner_override") or {}))
    for key in _SIMPLE:
        if key in flavor:
            override[key] = flavor[key]
    if flavor.get("node_selector"):
        override["node_selector"] = dict(flavor["node_selector"])
    profile: dict[str, Any] = {
        "slug": flavor_slug(flavor),
        "display_name": flavor.get("display_name", flavor_slug(flavor)),
        "description": describe(flavor, free, names),
        "kubespawner_override": override,
    }
    if idle:
        profile["kdash_idle"] = idle
    if flavor.get("default"):
        profile["default"] = True
    options: dict[str, Any] = {}
    if flavor.get("gpu"):
        resource = gpu_resource(flavor)
        choices: dict[str, Any] = {}
        for n in gpu_counts(flavor):
            reason = unavailable_reason(n, free)
            choices[str(n)] = {
                "display_name": gpu_amount(n, resource, names),
                "kubespawner_override": {
                    "extra_resource_limits": {resource: str(n)},
                    "extra_resource_guarantees": {resource: str(n)},
                },
                **({"disabled": True, "disabled_reason": reason} if reason else {}),
            }
        usable = [k for k, c in choices.items() if not c.get("disabled")]
        choices[usable[0] if usable else next(iter(choices))]["default"] = True
        if not usable:
            profile["kdash_unavailable"] = (
                f"No {gpu_name(resource, names)} is free now; try again later.")
        options["gpus"] = {"display_name": "GPUs", "choices": choices}
    images = flavor.get("images") or {}
    custom = bool(flavor.get("custom_image"))
    if len(images) > 1 or custom:
        choices = {
            slug: {"display_name": spec.get("display_name", slug) if isinstance(spec, dict)
                   else slug,
                   "kubespawner_override": {
                       "image": spec["image"] if isinstance(spec, dict) else spec}}
            for slug, spec in images.items()
        } or {"default": {"display_name": "Default", "kubespawner_override": {}}}
        options["image"] = {"display_name": "Image", "choices": choices}
        if custom:  # checked by images.check before KubeSpawner sees it
            options["image"]["unlisted_choice"] = {
                "enabled": True, "display_name": "Or an image of your own",
                "kubespawner_override": {"image": "{value}"}}
            if image_hint:
                options["image"]["unlisted_choice"]["kdash_hint"] = image_hint
    elif len(images) == 1:
        spec = next(iter(images.values()))
        override["image"] = spec["image"] if isinstance(spec, dict) else spec
    interfaces.apply(flavor, override, options)
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
        n = None
    if n not in counts:
        raise ValueError(
            f"{str(choice)[:40]} is not a number of GPUs {flavor.get('display_name', '')} "
            "offers; choose " + " or ".join(str(c) for c in counts))
    return n
