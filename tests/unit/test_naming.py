"""The naming rules every Kubernetes name of the pack goes through (examples; the
property-based tests are in tests/security/test_names_injective.py)."""

import re

import pytest

from kdash_hub.naming import (
    dns_label,
    home_dir_name,
    is_dns1123_label,
    is_kept,
    joined,
    label_value,
    moved_names,
    name_part,
    prefixed,
    readable_label,
    stable_hash,
    user_namespace,
    user_object_name,
    variant_name,
)

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ESCAPED = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?---[0-9a-f]{16}$")
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


def test_valid_names_without_double_dash_are_kept():
    assert user_namespace("alice") == "kdash-alice"
    assert user_namespace("alice", prefix="u-") == "u-alice"
    assert user_namespace("john-smith2") == "kdash-john-smith2"
    assert is_kept("a-b") and not is_kept("a--b") and not is_kept("A") and not is_kept("-a")


def test_everything_else_is_escaped_with_a_hash_of_the_full_name():
    for name in ("a.b", "A_B", "a--b", "trail-", "x" * 100, "Ünïcode", ""):
        part = name_part(name)
        assert ESCAPED.match(part), (name, part)
    assert name_part("a.b").startswith("a-b---")
    assert name_part("Ünïcode").startswith("unicode---")  # readable: accents folded
    assert name_part("数据科学家").startswith("x---")


def test_the_0_1_collision_is_gone():
    """0.1 gave `a.b` the namespace `kdash-a-b-<hash>`, and the user literally called
    `a-b-<hash>` the same one: whoever came first locked the other out."""
    victim = "a.b"
    old_escaped = readable_label("kdash-" + victim)
    attacker = old_escaped.removeprefix("kdash-")
    assert readable_label("kdash-" + attacker) == old_escaped  # the 0.1 collision
    assert user_namespace(attacker) == old_escaped  # the attacker's name is valid: kept
    assert user_namespace(victim) != user_namespace(attacker)
    # and the user named like the victim's NEW escaped form is escaped in turn
    squatter = user_namespace(victim).removeprefix("kdash-")
    assert user_namespace(squatter) not in (user_namespace(victim), "kdash-" + squatter)


def test_long_names_are_cut_with_a_hash_of_the_whole_name():
    a, b = "x" * 99 + "a", "x" * 99 + "b"
    assert len(user_namespace(a)) == 63
    assert user_namespace(a) != user_namespace(b)
    exact = "y" * 57  # 6 + 57 = 63: fits, kept
    assert user_namespace(exact) == "kdash-" + exact
    assert user_namespace(exact + "y") != user_namespace(exact)


def test_object_names_and_server_variants():
    assert user_object_name("home", "alice") == "home-alice"
    assert user_object_name("jupyter", "alice", "gpu") == "jupyter-alice--gpu"
    assert user_object_name("jupyter", "a-b", "c") != user_object_name("jupyter", "a", "b-c")
    assert user_object_name("jupyter", "a", "b") != user_object_name("jupyter", "a--b")
    assert user_object_name("jupyter", "a.b", "c") != user_object_name("jupyter", "a", "b.c")
    assert is_dns1123_label(user_object_name("home", "Ünïcode" * 20))
    assert joined("k-", "a", "b") == "k-a--b"
    assert dns_label("a", "b") == "a-b"  # a fixed prefix plus one text


def test_prefixes_are_checked():
    for bad in ("Kdash-", "-x", "a" * 50, "a_b-"):
        with pytest.raises(ValueError, match="prefix"):
            prefixed(bad, "alice")
    assert prefixed("", "alice") == "alice"


def test_home_dirs_pvs_and_variants():
    assert home_dir_name("alice") == "alice"
    assert home_dir_name("a.b") != home_dir_name("a-b")
    assert variant_name("claim-alice", "nfs") == "claim-alice-nfs"  # per-user namespace
    assert variant_name("claim-alice", "nfs", shared_namespace=True) == "claim-alice.nfs"


def test_moved_names_tell_admins_what_changed():
    assert moved_names("alice") == {}
    moved = moved_names("john.smith")
    old, new = moved["namespace"]
    assert old == f"kdash-john-smith-{stable_hash('kdash-john.smith')}"
    assert new == user_namespace("john.smith")
    assert moved["home_dir"] == (readable_label("john.smith"), home_dir_name("john.smith"))
    assert set(moved) == {"namespace", "home_dir", "persistent_volume", "home_job"}
    assert set(moved_names("a--b")) == {"namespace", "home_dir", "persistent_volume",
                                        "home_job"}


@pytest.mark.parametrize("text", AWKWARD)
def test_label_values_are_valid_and_distinct(text):
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value


def test_label_values_keep_valid_text_and_separate_the_rest():
    assert label_value("A_B") == "A_B"
    assert label_value("a.b") == "a.b"
    values = {label_value(t) for t in AWKWARD}
    assert len(values) == len(AWKWARD)
