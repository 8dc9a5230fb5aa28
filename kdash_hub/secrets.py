"""Secret settings by reference: `env:NAME` or `file:PATH` instead of the secret itself.

Helm values end up in a Secret the whole hub pod can read, in `helm get values`, and in
whatever repository holds the overlay. So a setting whose name says it holds a secret (a
password, a client secret, a signing key, a token) may instead name where the secret is:

    lookup_dn_search_password: env:LDAP_BIND_PASSWORD          # hub.extraEnv, secretKeyRef
    client_secret: file:/etc/kdash-secrets/oidc-client-secret  # a mounted Kubernetes Secret

The reference is resolved when the configuration is applied (kdash_hub.z2jh), in the process
that uses it, so the value never sits in the values file. `value:` forces a literal (for a
secret that really starts with `env:`). Settings whose names are not secret-like are never
touched, so an ordinary value can't be mistaken for a reference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV = "env:"
FILE = "file:"
LITERAL = "value:"
# names of settings that hold secrets: ...password, ...secret(s), ..._key(s), ...token(s)
# (a bare `key` is not one: tolerations, selectors and the like have `key` fields)
SECRET_NAME = re.compile(r"(password|passwd|secret|secrets|token|tokens|_keys?)$", re.I)
# ...but not these, which only name, locate or switch one
NOT_SECRET = re.compile(r"(_file|_path|_dir|_env|_name|_id|_ids|_claim|pull_secrets"
                        r"|service_account_token)$", re.I)


class SecretReferenceError(ValueError):
    """A reference that can't be resolved: the setting's path and what is missing."""


def is_secret_name(name: str) -> bool:
    """True for setting names that hold secrets (`client_secret`, `record_signing_key`)."""
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET.search(name)


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith((ENV, FILE, LITERAL))


def resolve(value: str, where: str = "",
            environ: Mapping[str, str] | None = None) -> str:
    """The secret `value` names: an environment variable, a file's text (one trailing
    newline removed, as `kubectl create secret --from-file` keeps it), or `value` itself."""
    environ = os.environ if environ is None else environ
    label = f"{where}: " if where else ""
    if value.startswith(ENV):
        name = value[len(ENV):]
        if name not in environ:
            raise SecretReferenceError(
                f"{label}environment variable {name} is not set (the setting says {value!r}); "
                "set it in the pod, e.g. hub.extraEnv with valueFrom.secretKeyRef")
        return environ[name]
    if value.startswith(FILE):
        path = Path(value[len(FILE):])
        try:
            text = path.read_text()
        except OSError as e:
            raise SecretReferenceError(
                f"{label}can't read {path} ({e.strerror}); mount the Secret there, e.g. "
                "hub.extraVolumes + hub.extraVolumeMounts") from None
        return text[:-1] if text.endswith("\n") else text
    if value.startswith(LITERAL):
        return value[len(LITERAL):]
    return value


def resolve_secrets(tree: Any, path: str = "",
                    environ: Mapping[str, str] | None = None) -> Any:
    """A copy of `tree` (mappings and lists) with every secret-named setting's reference
    resolved; everything else as it is. Raises SecretReferenceError naming the setting."""
    if isinstance(tree, Mapping):
        out = {}
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_name(str(key)) and isinstance(value, str):
                out[key] = resolve(value, where, environ)
            elif is_secret_name(str(key)) and isinstance(value, list) and all(
                    isinstance(v, str) for v in value):
                out[key] = [resolve(v, f"{where}[{i}]", environ) for i, v in enumerate(value)]
            else:
                out[key] = resolve_secrets(value, where, environ)
        return out
    if isinstance(tree, list):
        return [resolve_secrets(v, f"{path}[{i}]", environ) for i, v in enumerate(tree)]
    return tree


def inline_secrets(tree: Any, path: str = "") -> list[str]:
    """Paths of secret-named settings that hold a secret itself instead of a reference
    (empty values don't count)."""
    found: list[str] = []
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            values = value if isinstance(value, list) else [value]
            if is_secret_name(str(key)) and all(isinstance(v, str) for v in values):
                if any(v and not (is_reference(v) and not v.startswith(LITERAL))
                       for v in values):
                    found.append(where)
            else:
                found += inline_secrets(value, where)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            found += inline_secrets(v, f"{path}[{i}]")
    return found
