"""Unit tests of the emulator's pure parts: patch formats, selectors, quantities."""

from __future__ import annotations

from fractions import Fraction

import pytest

from kdash_hub.localcluster.apiserver import resources
from kdash_hub.localcluster.apiserver.patch import (
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kdash_hub.localcluster.apiserver.quota import format_quantity, parse_quantity
from kdash_hub.localcluster.apiserver.selectors import (
    parse_field_selector,
    parse_label_selector,
)
from kdash_hub.localcluster.apiserver.status import APIError
from kdash_hub.localcluster.apiserver.validation import DEFAULT_KUBE_VERSION, patch_schema


def _pod_schema():
    return patch_schema(DEFAULT_KUBE_VERSION, resources.by_kind("Pod"))


def test_smp_uses_schema_merge_keys_for_fields_outside_the_table():
    pod = {"spec": {"topologySpreadConstraints": [
        {"topologyKey": "zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}}
    patch = {"spec": {"topologySpreadConstraints": [
        {"topologyKey": "host", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"}]}}
    out = strategic_merge_patch(pod, patch, _pod_schema())
    # merged in a real server's order: the patch's new items first
    assert [c["topologyKey"] for c in out["spec"]["topologySpreadConstraints"]] == [
        "host", "zone"]
    # without the schema the list is replaced (no table entry)
    out = strategic_merge_patch(pod, patch)
    assert [c["topologyKey"] for c in out["spec"]["topologySpreadConstraints"]] == ["host"]


def test_smp_containers_env_ports_tolerations_and_directives():
    pod = {"metadata": {"finalizers": ["a"]}, "spec": {
        "containers": [{"name": "c", "image": "x:1", "args": ["a", "b"],
                        "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                       {"name": "d", "image": "y:1"}],
        "tolerations": [{"key": "k1"}]}}
    patch = {"metadata": {"finalizers": ["b"]}, "spec": {
        "$setElementOrder/containers": [{"name": "d"}, {"name": "c"}],
        "containers": [{"name": "c", "args": ["z"], "ports": [{"containerPort": 81}],
                        "env": [{"name": "A", "$patch": "delete"}, {"name": "B", "value": "2"}]}],
        "tolerations": [{"key": "k2"}]}}
    for schema in (_pod_schema(), None):
        out = strategic_merge_patch(pod, patch, schema)
        assert out["metadata"]["finalizers"] == ["b", "a"]  # as strategicpatch orders it
        names = [c["name"] for c in out["spec"]["containers"]]
        assert names == ["d", "c"]
        c = out["spec"]["containers"][1]
        assert c["image"] == "x:1" and c["args"] == ["z"]  # args are atomic
        assert [p["containerPort"] for p in c["ports"]] == [81, 80]
        assert c["env"] == [{"name": "B", "value": "2"}]
        assert out["spec"]["tolerations"] == [{"key": "k2"}]  # atomic in Kubernetes
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # untouched


def test_smp_orders_merged_lists_like_strategicpatch():
    from kdash_hub.localcluster.apiserver.patch import normalize_order

    # server-only items slot in before the patch item they preceded on the server
    original = [{"n": "a"}, {"n": "b"}, {"n": "c"}]
    merged = [{"n": "a"}, {"n": "b"}, {"n": "c"}, {"n": "x"}]
    order = [{"n": "x"}, {"n": "c"}]
    assert [i["n"] for i in normalize_order(merged, order, original, "n")] == [
        "x", "a", "b", "c"]
    assert normalize_order(["a", "b"], ["b"], ["a", "b"], None) == ["a", "b"]
    assert normalize_order(["a", "b"], ["b"], ["a"], None) == ["b", "a"]


def test_smp_replace_and_delete_directives_on_maps():
    obj = {"spec": {"a": {"x": 1, "y": 2}, "b": {"z": 1}}}
    out = strategic_merge_patch(obj, {"spec": {"a": {"$patch": "replace", "x": 9},
                                               "b": {"$patch": "delete"}}})
    assert out == {"spec": {"a": {"x": 9}}}


def test_merge_patch_rfc7386():
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) \
        == {"a": {"c": 2, "d": 3}, "l": [2]}


def test_json_patch_rfc6902_and_errors():
    doc = {"a": [1, 2], "b": {"c~d": 1}}
    out = json_patch(doc, [{"op": "add", "path": "/a/1", "value": 9},
                           {"op": "add", "path": "/a/-", "value": 3},
                           {"op": "move", "from": "/b/c~0d", "path": "/e"}])
    assert out == {"a": [1, 9, 2, 3], "b": {}, "e": 1}
    with pytest.raises(APIError) as e:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert e.value.code == 422
    with pytest.raises(APIError) as e:
        json_patch(doc, {"op": "add"})
    assert e.value.code == 400


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("a=b", {"a": "b"}, True), ("a==b", {"a": "c"}, False), ("a!=b", {}, True),
    ("a in (x, y)", {"a": "y"}, True), ("a notin (x)", {"a": "x"}, False),
    ("a", {"a": ""}, True), ("!a", {"a": "1"}, False), ("a,b=c", {"a": "1", "b": "c"}, True),
    ("example.com/role=db", {"example.com/role": "db"}, True), ("", {}, True),
])
def test_label_selectors(selector, labels, expected):
    assert parse_label_selector(selector)({"metadata": {"labels": labels}}) is expected


def test_selector_errors_are_bad_requests():
    for bad in ("a in (b", "a=b=c", "!a in (b)"):
        with pytest.raises(APIError) as e:
            parse_label_selector(bad)
        assert e.value.code == 400
    with pytest.raises(APIError) as e:
        parse_field_selector("spec.unknown=1", "Pod")
    assert e.value.code == 400 and "field label not supported" in e.value.message
    ev = {"involvedObject": {"kind": "Pod", "name": "p"}, "metadata": {"name": "e"}}
    assert parse_field_selector("involvedObject.kind=Pod,involvedObject.name!=q", "Event")(ev)


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Fraction(1, 2)), ("2", 2), ("1Gi", 2**30), ("1G", 10**9), ("1e3", 1000),
    ("0.5", Fraction(1, 2)), (4, 4), ("128Mi", 128 * 2**20), ("100u", Fraction(1, 10**4)),
])
def test_quantities(text, value):
    assert parse_quantity(text) == value


def test_quantity_format_and_errors():
    assert format_quantity(Fraction(1, 2), "requests.cpu") == "500m"
    assert format_quantity(Fraction(2**30), "limits.memory") == "1Gi"
    assert format_quantity(Fraction(3), "pods") == "3"
    for bad in ("abc", "1Zi", "", True):
        with pytest.raises(ValueError):
            parse_quantity(bad)


def test_incremental_validation_checks_changed_fields_only():
    from kdash_hub.localcluster.apiserver.validation import Validator

    pods = resources.by_kind("Pod")
    v = Validator()
    old = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}, "status": {}}
    new = {**old, "status": {"phase": "Running", "podIP": "10.0.0.1"}}
    assert v.validate(pods, new, previous=old) == []
    bad = {**old, "status": {"phase": 5, "bogus": 1}}
    fields = {c["field"] for c in v.validate(pods, bad, previous=old)}
    assert fields == {"status.phase", "status.bogus"}
    # a new top-level field means a full validation
    extra = {**old, "nonsense": 1}
    assert [c["field"] for c in v.validate(pods, extra, previous=old)] == ["nonsense"]
