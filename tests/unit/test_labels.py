"""Ownership labels: what one part writes, every other part reads the same way."""

from kdash_hub.labels import (
    MANAGED_BY,
    OWNER,
    is_owned_by,
    owner_annotations,
    owner_labels,
    owner_selector,
)


def _obj(username, **extra_labels):
    labels = {**owner_labels(username), **extra_labels}
    return {"metadata": {"labels": labels, "annotations": owner_annotations(username)}}


def test_owned_by_exactly_its_user():
    assert is_owned_by(_obj("alice"), "alice")
    assert not is_owned_by(_obj("alice"), "alice2")
    assert not is_owned_by(_obj("alice"), "Alice")


def test_not_owned_without_the_managed_label():
    obj = _obj("alice")
    del obj["metadata"]["labels"][MANAGED_BY]
    assert not is_owned_by(obj, "alice")


def test_hashed_label_values_are_checked_against_the_exact_username():
    long_name = "u" * 80
    obj = _obj(long_name)
    assert is_owned_by(obj, long_name)
    # same label value (forged) but a different exact username in the annotation
    obj["metadata"]["annotations"]["kdash-hub.io/owner-username"] = "mallory"
    assert not is_owned_by(obj, long_name)


def test_selector_matches_the_labels():
    sel = owner_selector("alice", "notebook")
    assert f"{OWNER}=alice" in sel and "kdash-hub.io/component=notebook" in sel
