"""Turn a request's variable values into the checked strings a template is rendered with.

Unknown variables are refused (a typo must not silently fall back to a default), automatic
ones can't be overridden, each typed variable is checked, and secrets without a value get a
generated one.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from .errors import RenderError
from .model import Template, Variable

MAX_VALUE_LENGTH = 8192
YAML11_TRUE = {"y", "yes", "true", "on", "1"}
YAML11_FALSE = {"n", "no", "false", "off", "0"}
_SECRET_ALPHABET = string.ascii_letters + string.digits


@dataclass
class ResolvedValues:
    """String values per variable; `secret_names` are the ones never shown or stored plainly."""

    values: dict[str, str]
    secret_names: set[str] = field(default_factory=set)

    @property
    def public(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k not in self.secret_names}

    @property
    def secret(self) -> dict[str, str]:
        return {k: v for k, v in self.values.items() if k in self.secret_names}


def parse_bool(value: Any) -> bool:
    """YAML 1.1 spellings of a boolean; ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in YAML11_TRUE:
        return True
    if text in YAML11_FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean (use true/false, yes/no)")


def generate_secret(length: int = 24) -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def _as_string(var: Variable, value: Any) -> str:
    if isinstance(value, dict | list | tuple | set) or value is None:
        raise ValueError("must be a single value (text, number or boolean)")
    if var.type == "integer":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        try:
            return str(int(str(value).strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
    if var.type == "boolean":
        return "true" if parse_bool(value) else "false"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if len(text) > MAX_VALUE_LENGTH:
        raise ValueError(f"longer than {MAX_VALUE_LENGTH} characters")
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if var.type == "choice" and text not in var.choices:
        raise ValueError(f"{text!r} is not one of {', '.join(var.choices)}")
    return text


def resolve_values(
    template: Template, requested: dict[str, Any] | None, automatic: dict[str, str],
) -> ResolvedValues:
    """Checked values for every variable of `template` (plus the automatic ones).

    `requested` holds what the user asked for; raises RenderError listing every problem.
    """
    requested = dict(requested or {})
    if not isinstance(requested, dict):
        raise RenderError("values must be an object of variable names to values")
    errors: list[str] = []
    settable = {v.name: v for v in template.user_variables if v.name != "NAME"}
    for key in requested:
        if key in automatic or key == "NAME" or (
            template.variable(key) and template.variable(key).automatic
        ):
            errors.append(f"{key} is set by the launcher and can't be chosen")
        elif key not in settable:
            known = ", ".join(sorted(settable)) or "none"
            errors.append(f"unknown variable {key!r} for template {template.id} "
                          f"(its variables: {known})")
    values: dict[str, str] = {}
    secret_names: set[str] = set()
    for var in settable.values():
        raw = requested.get(var.name)
        if var.type == "secret":
            secret_names.add(var.name)
            if raw in (None, ""):
                raw = var.default if var.default not in (None, "") else generate_secret(
                    var.length)
        elif raw is None:
            raw = var.default
        try:
            values[var.name] = _as_string(var, raw)
        except ValueError as e:
            errors.append(f"variable {var.name}: {e}")
    if errors:
        raise RenderError(errors)
    values.update(automatic)
    return ResolvedValues(values, secret_names)
