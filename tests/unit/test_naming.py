"""The naming rules every Kubernetes name of the pack goes through."""

import re

import pytest

from kdash_hub.naming import (
    dns_label,
    is_dns1123_label,
    label_value,
    user_namespace,
    user_object_name,
)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
AWKWARD = ["alice", "Ünïcode", "a.b", "A_B", "a_b", "a-b", "x" * 100, "-lead", "trail-",
           "bob@example.com", "数据科学家", "UPPER", "upper", "a" * 63, "a" * 64, "",
           "Dr. Who?", "a--b", "0day"]


@pytest.mark.parametrize("username", AWKWARD)
def test_user_namespace_is_a_dns1123_label(username):
    ns = user_namespace(username)
    assert is_dns1123_label(ns), ns
    assert len(ns) <= 63


def test_distinct_users_get_distinct_names():
    names = {u: user_namespace(u) for u in AWKWARD}
    assert len(set(names.values())) == len(AWKWARD), names
    # case and punctuation variants must not collapse onto one another
    assert user_namespace("A_B") != user_namespace("a_b") != user_namespace("a-b")
    assert user_namespace("a.b") != user_namespace("a-b")


def test_names_are_stable_and_readable():
    assert user_namespace("alice") == "kdash-alice"
    assert user_namespace("alice", prefix="u-") == "u-alice"
    assert user_namespace("Ünïcode") == user_namespace("Ünïcode")
    assert user_namespace("A_B").startswith("kdash-a-b-")


def test_long_names_are_cut_with_a_hash_that_keeps_them_apart():
    a, b = "x" * 99 + "a", "x" * 99 + "b"
    assert len(user_namespace(a)) == 63
    assert user_namespace(a) != user_namespace(b)


def test_object_names():
    assert user_object_name("home", "alice") == "home-alice"
    assert user_object_name("jupyter", "alice", "gpu") == "jupyter-alice-gpu"
    assert is_dns1123_label(user_object_name("home", "Ünïcode" * 20))
    assert dns_label("a", "b") == "a-b"


@pytest.mark.parametrize("text", AWKWARD)
def test_label_values_are_valid_and_distinct(text):
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value


def test_label_values_keep_valid_text_and_separate_the_rest():
    assert label_value("A_B") == "A_B"
    assert label_value("a.b") == "a.b"
    values = {label_value(t) for t in AWKWARD}
    assert len(values) == len(AWKWARD)
