"""Crafted objects against the emulator's compiled schema check (schemacheck.py): a "valid"
from it skips jsonschema, so a false yes would let a malformed object into the emulator.

Each object here is one a user (or a buggy client) could send: numbers written as floats,
booleans where integers go and integers where booleans go, nulls, huge lists with one bad
item at the end, deep nesting, and updates whose changed field Python's == calls unchanged
(True == 1, 0 == False). Found here and fixed: an update skipped the check of a top-level
field that == found unchanged, so `replicas: 1` -> `true` or `automountServiceAccountToken:
false` -> `0` was stored (validation.py now compares with schemacheck.same).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kdash_hub.localcluster.apiserver.schemacheck import SchemaCheck, same
from kdash_hub.localcluster.apiserver.validation import Validator
from tests.unit.test_schemacheck import DEPLOYMENT, POD, _rtype, fast_verdict, full_verdict


def _with(obj: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(obj)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"a": leaf}
    return leaf


REPLICAS = ("spec", "replicas")
GRACE = ("spec", "terminationGracePeriodSeconds")
AUTOMOUNT = ("spec", "automountServiceAccountToken")
PORT = ("spec", "containers", 0, "ports", 0, "containerPort")
PROTOCOL = ("spec", "containers", 0, "ports", 0, "protocol")

CRAFTED = [
    ("int as float 1.0", DEPLOYMENT, REPLICAS, 1.0),
    ("int as float 1.5", DEPLOYMENT, REPLICAS, 1.5),
    ("huge float", DEPLOYMENT, REPLICAS, 1e300),
    ("infinity", DEPLOYMENT, REPLICAS, float("inf")),
    ("nan", DEPLOYMENT, REPLICAS, float("nan")),
    ("true for an integer", DEPLOYMENT, REPLICAS, True),
    ("false for an integer", POD, GRACE, False),
    ("string of digits for an integer", POD, PORT, "8888"),
    ("integer for a boolean", POD, AUTOMOUNT, 0),
    ("1 for a boolean", POD, AUTOMOUNT, 1),
    ("string for a boolean", POD, AUTOMOUNT, "false"),
    ("null for a boolean", POD, AUTOMOUNT, None),
    ("null for a required list", POD, ("spec", "containers"), None),
    ("null for a map", POD, ("metadata", "labels"), None),
    ("null in a list of objects", POD, ("spec", "containers", 0, "ports"), [None]),
    ("null for an enum", POD, PROTOCOL, None),
    ("enum in another case", POD, PROTOCOL, "tcp"),
    ("enum as a list", POD, PROTOCOL, ["TCP"]),
    ("enum as 0", POD, PROTOCOL, 0),
    ("label value not a string", POD, ("metadata", "labels", "app"), 1),
    ("deep nesting at an unknown field", POD, ("spec", "surprise"), _deep(400, 1)),
    ("deep nesting where a string goes", POD, ("metadata", "annotations", "x"),
     _deep(400, "s")),
    ("deep nesting in a list of strings", POD, ("spec", "containers", 0, "args"),
     [_deep(400, "s")]),
]


@pytest.mark.parametrize("label,obj,path,value", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_value_gets_jsonschemas_verdict(label, obj, path, value):
    crafted = _with(obj, path, value)
    assert fast_verdict(crafted) == full_verdict(crafted)


def test_huge_lists_with_one_bad_item_last_are_invalid():
    pod = copy.deepcopy(POD)
    container = pod["spec"]["containers"][0]
    pod["spec"]["containers"] = [{**container, "name": f"c{i}"} for i in range(5000)]
    pod["metadata"]["labels"] = {f"k{i}": "v" for i in range(5000)}
    assert fast_verdict(pod) and full_verdict(pod)
    pod["spec"]["containers"][-1] = {**container, "ports": [{"containerPort": True}]}
    assert fast_verdict(pod) is False and full_verdict(pod) is False
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"][0]["args"] = ["x"] * 20000 + [1]
    assert fast_verdict(pod) is False and full_verdict(pod) is False


@pytest.mark.parametrize("obj,path,old,new,field", [
    (DEPLOYMENT, REPLICAS, 1, True, "spec.replicas"),
    (DEPLOYMENT, REPLICAS, 0, False, "spec.replicas"),
    (POD, AUTOMOUNT, False, 0, "spec.automountServiceAccountToken"),
    (POD, AUTOMOUNT, True, 1, "spec.automountServiceAccountToken"),
    (POD, GRACE, 1, True, "spec.terminationGracePeriodSeconds"),
    (POD, ("spec", "containers", 0, "readinessProbe", "periodSeconds"), 1, True,
     "spec.containers[0].readinessProbe.periodSeconds"),
])
def test_an_update_that_equals_the_old_object_by_python_is_still_checked(obj, path, old, new,
                                                                          field):
    """The stored object had `old`; an update writes `new`, which == calls equal."""
    v = Validator()
    previous = _with(obj, path, old)
    assert v.validate(_rtype(previous), copy.deepcopy(previous)) == []
    updated = _with(obj, path, new)
    assert new == old  # what made the old comparison skip the field
    causes = v.validate(_rtype(updated), updated, previous=previous)
    assert [c["field"] for c in causes] == [field], causes


def test_an_update_that_changed_nothing_is_still_valid_fast():
    v = Validator()
    previous = copy.deepcopy(POD)
    assert v.validate(_rtype(previous), copy.deepcopy(POD), previous=previous) == []
    assert v.validate(_rtype(DEPLOYMENT), _with(DEPLOYMENT, REPLICAS, 1.0),
                      previous=_with(DEPLOYMENT, REPLICAS, 1)) == []  # 1.0 is an integer


@pytest.mark.parametrize("a,b,equal", [
    (1, True, False), (0, False, False), (1, 1.0, False), ({"a": 1}, {"a": True}, False),
    ([0], [False], False), ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False), ([1, 2], [1], False), ("x", "x", True),
    (float("nan"), float("nan"), False),  # "changed": checked, never skipped
])
def test_same_is_json_equality(a, b, equal):
    assert same(a, b) is equal


def test_keywords_it_does_not_evaluate_never_pass_as_valid():
    """Assertions outside its list (maximum, pattern, minItems, const, ...) make the
    schema unsupported (None): jsonschema decides."""
    checks = SchemaCheck(lambda ref: {})
    for schema in ({"type": "integer", "maximum": 3}, {"type": "array", "minItems": 1},
                   {"const": 1}, {"type": "object", "patternProperties": {"^a": {}}},
                   {"type": "string", "maxLength": 2}, {"dependentRequired": {"a": ["b"]}},
                   {"items": [{"type": "string"}]}, {"type": "decimal"},
                   {"enum": [1, True]}):
        assert checks.check(schema) is None, schema
    # an enum of strings is a string's: 1 and True are not "1" and "true"
    enum = checks.check({"enum": ["1", "true", None]})
    assert [enum(v) for v in ("1", 1, "true", True, None, False)] == [
        True, False, True, False, True, False]
