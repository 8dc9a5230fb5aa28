"""Custom images a user types in the chooser: allowed per flavor, checked against the admin's
registries and patterns before anything is made.

A flavor opts in with `custom_image: true` (the spawner's `custom_image_registries` and
`custom_image_patterns` decide what may be typed) or `custom_image: {"registries": [...],
"patterns": [...]}` (its own lists instead). KubeSpawner's `unlisted_choice` of the flavor's
`image` option carries the value (user_options key `image--unlisted-choice`); its own check is
a `re.match` (a prefix match), so the pack checks here first, strictly:

- the value is an image reference in canonical form: lowercase registry and path, no `..`,
  no whitespace or control characters, an optional tag and/or `@sha256:` digest, at most
  `MAX_LENGTH` characters (checked before any admin regex runs);
- then it starts with an allowed registry prefix (always ending in `/`, so `quay.io` never
  lets `quay.io.evil.com/x` in) or fully matches one of the admin's regexes (`re.fullmatch`:
  no trailing newline or suffix slips through).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .refusals import _name, _quoted, refusal

UNLISTED = "image--unlisted-choice"  # KubeSpawner's user_options key of a typed image
MAX_LENGTH = 255
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?"
_REFERENCE = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")


def allowed_in(flavor: Mapping[str, Any]) -> bool:
    """Does `flavor` let users type an image?"""
    return bool(flavor.get("custom_image"))


def rules_of(flavor: Mapping[str, Any], registries: Iterable[str],
             patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """(registry prefixes, regexes) for `flavor`: its own lists, else the spawner's."""
    own = flavor.get("custom_image")
    if isinstance(own, Mapping):
        registries = own.get("registries") or []
        patterns = own.get("patterns") or []
    prefixes = [p if p.endswith("/") else p + "/" for p in (str(r).strip() for r in registries)
                if p and p != "/"]
    return prefixes, [str(p) for p in patterns if str(p)]


def is_reference(image: str) -> bool:
    """Is `image` a canonical image reference (see the module docstring)?"""
    return len(image) <= MAX_LENGTH and _REFERENCE.fullmatch(image) is not None


def matches(image: str, prefixes: list[str], patterns: list[str]) -> bool:
    if not is_reference(image):
        return False
    return any(image.startswith(p) for p in prefixes) or any(
        re.fullmatch(p, image) for p in patterns)


def hint(prefixes: list[str], patterns: list[str]) -> str:
    """What may be typed, for the chooser and the refusal sentence."""
    parts = [f"{p}…" for p in prefixes]
    if patterns:
        parts.append("the patterns your admin set")
    return " or ".join(parts) if parts else "nothing (no registry is allowed yet)"


def check(flavor: Mapping[str, Any], user_options: Mapping[str, Any],
          registries: Iterable[str], patterns: Iterable[str]) -> str | None:
    """The typed image (None when none was typed), or refuse it with 400 and a sentence."""
    value = user_options.get(UNLISTED)
    if value is None or value == "":
        return None
    if not allowed_in(flavor):
        raise refusal(400, f"{_name(flavor)} does not let you choose your own image; "
                           "choose one of the images offered.")
    prefixes, regexes = rules_of(flavor, registries, patterns)
    if not isinstance(value, str):
        raise refusal(400, "The custom image must be written as text, like "
                           f"{hint(prefixes, regexes)}name:tag.")
    if not matches(value, prefixes, regexes):
        why = ("is not an image name (lowercase, no spaces, at most "
               f"{MAX_LENGTH} characters)" if not is_reference(value)
               else "is not from a registry allowed here")
        shown = "".join(c if c.isprintable() and not c.isspace() else "␣" for c in value)
        raise refusal(400, f"The image {_quoted(shown)} {why}: {_name(flavor)} accepts images "
                           f"from {hint(prefixes, regexes)}; choose one of those or one of "
                           "the images offered.")
    return value
