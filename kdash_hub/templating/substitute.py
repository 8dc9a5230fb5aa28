"""Substitute variables inside parsed YAML values — never in the text.

Karvdash replaced `$VAR` in the file text and parsed the result, so a value could inject
YAML. Here the template is parsed first and only string scalars (and mapping keys) are
rewritten, with `string.Template` rules: `$VAR` and `${VAR}` are replaced when VAR is
known, `$$` becomes `$`, anything else (`${HOME}`, `$1`) stays. A substituted value is one
string whatever it contains (newlines, colons, quotes, braces).

Fields Kubernetes types as integers or booleans are converted after substitution (a value
that doesn't convert is an error naming the variable), so `replicas: $REPLICAS` works as it
did with text substitution.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import RenderError
from .values import parse_bool

REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)\}|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*))"
)

# Kubernetes fields of type integer (by key name, as in the core/apps/batch APIs)
INTEGER_FIELDS = frozenset({
    "replicas", "containerPort", "hostPort", "nodePort", "revisionHistoryLimit",
    "minReadySeconds", "progressDeadlineSeconds", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "backoffLimit", "completions", "parallelism",
    "ttlSecondsAfterFinished", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
    "successThreshold", "failureThreshold", "runAsUser", "runAsGroup", "fsGroup",
    "defaultMode", "mode", "weight", "priority", "maxRetries", "partition",
    "startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit",
})
# integer-or-string fields: digits become an integer, a name stays a string
INT_OR_STRING_FIELDS = frozenset({
    "targetPort", "maxSurge", "maxUnavailable", "port",
})
BOOLEAN_FIELDS = frozenset({
    "readOnly", "privileged", "runAsNonRoot", "allowPrivilegeEscalation", "stdin", "tty",
    "readOnlyRootFilesystem", "automountServiceAccountToken", "hostNetwork", "hostPID",
    "hostIPC", "suspend", "optional", "immutable", "publishNotReadyAddresses",
    "enableServiceLinks", "shareProcessNamespace", "setHostnameAsFQDN",
})


def substitute_text(text: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with known references replaced, and the names that were used."""
    used: list[str] = []

    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        if name in values:
            used.append(name)
            return values[name]
        return match.group(0)

    return REFERENCE.sub(replace, text), used


def _convert(key: str | None, text: str, used: list[str], path: str) -> Any:
    if not used or key is None:
        return text
    names = ", ".join(sorted(set(used)))
    if key in INTEGER_FIELDS:
        if re.fullmatch(r"-?\d+", text.strip()):
            return int(text)
        raise RenderError(f"variable {names}: {text!r} is not an integer (needed by {path})")
    if key in INT_OR_STRING_FIELDS:
        return int(text) if re.fullmatch(r"\d+", text.strip()) else text
    if key in BOOLEAN_FIELDS:
        try:
            return parse_bool(text)
        except ValueError:
            raise RenderError(
                f"variable {names}: {text!r} is not a boolean (needed by {path})") from None
    return text


def substitute(obj: Any, values: dict[str, str], *, key: str | None = None,
               path: str = "") -> Any:
    """A deep copy of the parsed `obj` with every string scalar substituted."""
    if isinstance(obj, dict):
        result = {}
        for k, v in obj.items():
            new_key = substitute_text(k, values)[0] if isinstance(k, str) else k
            result[new_key] = substitute(v, values, key=str(new_key),
                                         path=f"{path}.{new_key}" if path else str(new_key))
        return result
    if isinstance(obj, list):
        return [substitute(v, values, key=None, path=f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        text, used = substitute_text(obj, values)
        return _convert(key, text, used, path)
    return obj
