"""Label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors.

Both parse into a predicate over an object dict; a malformed selector is a 400 BadRequest,
and a field label a real server doesn't support for that kind is rejected the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .status import bad_request

Predicate = Callable[[dict], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*(?:(in|notin)\s*\(([^)]*)\)\s*)?$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split at commas that are not inside the parentheses of `in (a,b)`."""
    terms, depth, cur = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    if not selector or not selector.strip():
        return lambda obj: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(selector):
        m = _EQ_RE.match(term)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                checks.append(lambda lb, k=key, v=value: lb.get(k) == v)
            continue
        m = _SET_RE.match(term)
        if not m:
            raise bad_request(f"unable to parse requirement: found '{term.strip()}', "
                              f"expected: valid label selector")
        neg, key, op, values = m.groups()
        if op:
            if neg:
                raise bad_request(f"unable to parse requirement: {term!r}")
            vals = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) in vs)
            else:
                checks.append(lambda lb, k=key, vs=vals: lb.get(k) not in vs)
        elif neg:
            checks.append(lambda lb, k=key: k not in lb)
        else:
            checks.append(lambda lb, k=key: k in lb)

    def match(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(c(labels) for c in checks)

    return match


# field labels a real API server accepts, per kind (metadata.name/namespace work for all)
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
            "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
            "status.podIPs", "status.nominatedNodeName"),
    "Event": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
              "involvedObject.uid", "involvedObject.apiVersion",
              "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
              "reportingComponent", "source", "type"),
    "Namespace": ("status.phase",),
    "Secret": ("type",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
    "PersistentVolume": ("name",),
    "ReplicaSet": ("status.replicas",),
}


def _field_value(obj: dict, path: str) -> str:
    if path == "source":
        return ((obj.get("source") or {}).get("component")) or ""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, list):  # status.podIPs
        return ",".join(str(x.get("ip", x)) if isinstance(x, dict) else str(x) for x in cur)
    return str(cur)


def parse_field_selector(selector: str | None, kind: str) -> Predicate:
    if not selector or not selector.strip():
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace", *FIELD_LABELS.get(kind, ())}
    checks: list[tuple[str, bool, str]] = []
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        key, op, value = m.groups()
        if key not in allowed:
            raise bad_request(f'field label not supported: {key}')
        checks.append((key, op == "!=", value))

    def match(obj: dict) -> bool:
        for key, negate, value in checks:
            if key == "name" and kind == "PersistentVolume":
                key = "metadata.name"
            if (_field_value(obj, key) == value) == negate:
                return False
        return True

    return match
