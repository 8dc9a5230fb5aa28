"""Refusing a spawn at once, with the reason: a profile the user may not use (403), one
that does not exist (400), more GPUs than are free (400), more than the quota (403).

JupyterHub relays a `web.HTTPError` raised in `Spawner.start` as the REST API's status and
shows its message on the spawn page, instead of a pod sitting Pending until start_timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tornado import web

from . import profiles, quotas
from .gpu_availability import GpuFree


def choose_flavor(flavors: list[dict], allowed: list[dict], slug: str | None) -> dict:
    """The flavor asked for (or the default of the allowed ones)."""
    if slug:
        flavor = profiles.find_flavor(flavors, slug)
        if flavor is None:
            raise web.HTTPError(400, f"There is no server profile {slug!r}. Choose one of: "
                                + ", ".join(profiles.flavor_slug(f) for f in allowed))
        if flavor not in allowed:
            raise web.HTTPError(
                403, f"The profile {flavor.get('display_name', slug)!r} is not available "
                f"to you (it is for the groups {', '.join(flavor.get('groups') or [])}).")
        return flavor
    if not allowed:
        raise web.HTTPError(403, "No server profile is available to you; "
                            "ask an admin to add you to a group that may start servers.")
    return next((f for f in allowed if f.get("default")), allowed[0])


def check_gpus_free(flavor: Mapping[str, Any], gpus: int, free: GpuFree) -> None:
    if gpus > free.largest_node:
        resource = flavor["gpu"].get("resource", "nvidia.com/gpu")
        raise web.HTTPError(
            400, f"{gpus} × {resource} asked for, but only {free.largest_node} are free on "
            f"any one node right now ({free.total} in all). Choose fewer GPUs or try "
            "again later.")


def requested(cpu_guarantee: Any, cpu_limit: Any, mem_guarantee: Any, mem_limit: Any,
              gpu_resource: str | None, gpus: int) -> dict[str, Any]:
    """What a notebook pod will count against the ResourceQuota."""
    asked = {"requests.cpu": cpu_guarantee, "limits.cpu": cpu_limit,
             "requests.memory": mem_guarantee, "limits.memory": mem_limit}
    if gpu_resource and gpus:
        asked[f"requests.{gpu_resource}"] = gpus
    return {k: v for k, v in asked.items() if v}


def check_quota(asked: Mapping[str, Any], hard: Mapping[str, Any],
                used: Mapping[str, Any]) -> None:
    problems = quotas.exceeds(asked, hard, used)
    if problems:
        raise web.HTTPError(
            403, "This server would exceed your quota (" + "; ".join(problems)
            + "). Choose a smaller profile, stop other things in your namespace, "
            "or ask an admin for a larger quota.")
