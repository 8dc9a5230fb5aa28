"""Refusing a spawn at once, in one plain sentence: what was asked, why it can't be had,
what to do. A profile the user may not use (403), one that does not exist (400), a choice a
profile does not offer (400), more GPUs than are free (400), more than the quota (403).

The error carries the sentence as `jupyterhub_message`, which JupyterHub shows unchanged on
the spawn form, on the spawn-pending page, in the progress stream's "Spawn failed" event and
as the REST API's `message` (without it the form shows "HTTP 400: error (...)", because the
hub sets the error's `reason` to "error"). Nothing is created before these checks run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tornado import web

from kdash_hub.quantities import parse_quantity

from . import profiles
from .gpu_availability import GpuFree

_CHOOSE = "Choose another profile"


def refusal(status: int, sentence: str) -> web.HTTPError:
    """An HTTPError whose every rendering by the hub is `sentence` alone."""
    error = web.HTTPError(status, log_message=sentence, reason="Refused")
    error.jupyterhub_message = sentence  # type: ignore[attr-defined]
    return error


def _quoted(text: Any) -> str:
    """A user-supplied value in a sentence: shortened, quoted, no repr."""
    value = str(text)
    return f"“{value[:40]}{'…' if len(value) > 40 else ''}”"


def _name(flavor: Mapping[str, Any]) -> str:
    return str(flavor.get("display_name") or profiles.flavor_slug(flavor))


def _listing(items: Iterable[str], last: str = "or") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def choose_flavor(flavors: list[dict], allowed: list[dict], slug: str | None) -> dict:
    """The flavor asked for (or the default of the allowed ones)."""
    if slug:
        flavor = profiles.find_flavor(flavors, slug)
        if flavor is None:
            raise refusal(400, f"There is no server profile {_quoted(slug)}; choose "
                          + (_listing(_name(f) for f in allowed) if allowed
                             else "one an admin has made available to you") + ".")
        if flavor not in allowed:
            groups = list(flavor.get("groups") or [])
            whom = ("the group " if len(groups) == 1 else "the groups ") + _listing(groups, "and")
            raise refusal(403, f"The profile {_name(flavor)} is for {whom}, and you are not "
                               f"a member: {_CHOOSE.lower()}, or ask an admin to add you.")
        return flavor
    if not allowed:
        raise refusal(403, "No server profile is available to you: ask an admin to add you "
                           "to a group that may start servers.")
    return next((f for f in allowed if f.get("default")), allowed[0])


def check_choices(flavor: Mapping[str, Any], profile: Mapping[str, Any] | None,
                  user_options: Mapping[str, Any]) -> None:
    """Each option asked for is one `profile` offers (GPU counts are checked by
    check_gpus_free, with the reason a count can't be had)."""
    if profile is None:
        return
    for key, option in (profile.get("profile_options") or {}).items():
        choice = user_options.get(key)
        if key == "gpus" or choice in (None, ""):
            continue
        choices = option.get("choices") or {}
        if str(choice) not in choices:
            label = str(option.get("display_name", key))
            raise refusal(400, f"{_quoted(choice)} is not one of the {label} choices of "
                               f"{_name(flavor)}; "
                               "choose " + _listing(
                                   str(c.get("display_name", k)) for k, c in choices.items())
                          + ".")


def check_gpu_count(flavor: Mapping[str, Any], user_options: Mapping[str, Any],
                    names: Mapping[str, str] | None) -> int:
    """The GPUs asked for, refused when `flavor` does not offer that count."""
    try:
        return profiles.chosen_gpus(flavor, user_options)
    except ValueError:
        resource = profiles.gpu_resource(flavor)
        counts = [profiles.gpu_amount(n, resource, names) for n in profiles.gpu_counts(flavor)]
        raise refusal(400, f"{_name(flavor)} does not offer {_quoted(user_options.get('gpus'))}"
                           f" GPUs; choose {_listing(counts)}.") from None


def check_gpus_free(flavor: Mapping[str, Any], gpus: int, free: GpuFree,
                    names: Mapping[str, str] | None = None) -> None:
    if gpus > free.largest_node:
        resource = profiles.gpu_resource(flavor)
        asked = profiles.gpu_amount(gpus, resource, names)
        if free.largest_node:
            why = (f"only {free.largest_node} are free on any one node right now "
                   f"({free.total} in all): choose fewer GPUs or try again later.")
        else:
            why = (f"no {profiles.gpu_name(resource, names)} is free right now: try again "
                   "later or choose another profile.")
        raise refusal(400, f"You asked for {asked} with {_name(flavor)}, but {why}")


def requested(cpu_guarantee: Any, cpu_limit: Any, mem_guarantee: Any, mem_limit: Any,
              gpu_resource: str | None, gpus: int) -> dict[str, Any]:
    """What a notebook pod will count against the ResourceQuota."""
    asked = {"requests.cpu": cpu_guarantee, "limits.cpu": cpu_limit,
             "requests.memory": mem_guarantee, "limits.memory": mem_limit}
    if gpu_resource and gpus:
        asked[f"requests.{gpu_resource}"] = gpus
    return {k: v for k, v in asked.items() if v}


def _quota_item(key: str, amount: Any, names: Mapping[str, str] | None) -> str:
    """What a quota key asks for, in words ("4 NVIDIA GPUs", "a CPU limit of 8")."""
    words = {"requests.cpu": f"{amount} guaranteed CPU", "limits.cpu": f"a CPU limit of {amount}",
             "requests.memory": f"{amount} guaranteed memory",
             "limits.memory": f"a memory limit of {amount}"}
    if key in words:
        return words[key]
    resource = key.removeprefix("requests.")
    if resource != key and names and resource in names:
        return profiles.gpu_amount(int(parse_quantity(amount)), resource, names)
    return f"{amount} {key}"


def check_quota(asked: Mapping[str, Any], hard: Mapping[str, Any],
                used: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
    problems = []
    for key, amount in asked.items():
        if key not in hard:
            continue
        have = parse_quantity(used.get(key, 0))
        if have + parse_quantity(amount) <= parse_quantity(hard[key]):
            continue
        in_use = f", {used[key]} already in use" if have else ""
        problems.append(f"{_quota_item(key, amount, names)} (your quota is {hard[key]}"
                        f"{in_use})")
    if problems:
        raise refusal(403, "This server would go over your quota: it asks for "
                           + _listing(problems, "and") + "; choose a smaller profile, stop "
                           "other things in your namespace, or ask an admin for more.")
