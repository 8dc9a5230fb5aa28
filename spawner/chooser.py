"""The profile chooser's HTML: KDashSpawner's own form, so a choice that can't be met now is
disabled with its reason, each flavor shows its idle timeout and hidden flavors are
explained. KubeSpawner's form has no place for any of these (and 7.0's differs from 7.1's).

The field names stay KubeSpawner's, so its `options_from_form` builds user_options as
before. The form preselects the user's last accepted options (KDashSpawner keeps those
after a refusal), falling back to defaults for anything no longer offered or free.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(default=True), trim_blocks=False)


def _default_choice(option: Mapping[str, Any]) -> str | None:
    choices = option.get("choices") or {}
    usable = [k for k, c in choices.items() if not c.get("disabled")]
    marked = [k for k in usable if choices[k].get("default")]
    return (marked or usable or [None])[0]


def selection(profiles: list[Mapping[str, Any]],
              user_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the form preselects: {"profile": slug, "options": {slug: {option: value}},
    "typed": {slug: {option: a typed (unlisted) value}}}."""
    user_options = user_options or {}
    usable = [p for p in profiles if not p.get("kdash_unavailable")]
    wanted = user_options.get("profile")
    slugs = [p["slug"] for p in usable]
    if wanted not in slugs:
        wanted = next((p["slug"] for p in usable if p.get("default")), slugs[0] if slugs else None)
    options: dict[str, dict[str, str | None]] = {}
    typed: dict[str, dict[str, str]] = {}
    for profile in profiles:
        chosen: dict[str, str | None] = {}
        for key, option in (profile.get("profile_options") or {}).items():
            value = str(user_options.get(key, "")) if profile["slug"] == wanted else ""
            choice = (option.get("choices") or {}).get(value)
            chosen[key] = value if choice and not choice.get("disabled") else \
                _default_choice(option)
            own = user_options.get(f"{key}--unlisted-choice")
            if profile["slug"] == wanted and (option.get("unlisted_choice") or {}).get(
                    "enabled") and isinstance(own, str) and own:
                typed.setdefault(profile["slug"], {})[key] = own
        life = profile.get("kdash_lifetime")
        if life:
            asked = str(user_options.get("lifetime", "")) if profile["slug"] == wanted else ""
            chosen["lifetime"] = asked if asked in [v for v, _ in life["choices"]] else \
                life["default"]
        options[profile["slug"]] = chosen
    return {"profile": wanted, "options": options, "typed": typed}


def render(profiles: list[Mapping[str, Any]], notes: list[str],
           user_options: Mapping[str, Any] | None) -> str:
    """The chooser for `profiles` (profiles.to_profile's) with the hidden-flavor `notes`."""
    return _ENV.get_template("chooser.html").render(
        profiles=profiles, notes=notes, selected=selection(profiles, user_options))
