"""Finding 8, property-based: no two hub users ever share a Kubernetes name.

Over arbitrary Unicode usernames (hypothesis), every per-user name the pack builds — the
namespace, the home directory on shared storage, the home PersistentVolume, the home
provisioning Job in the hub namespace, per-server object names — is a valid DNS-1123 label
of at most 63 characters, the same at every call, and different for different users. The
generic pairs hypothesis draws almost never collide by chance, so most strategies below
CRAFT the pairs an attacker would: one user's name equal to another's escaped or shortened
form (new and 0.1 scheme), long names sharing a 60-character prefix, case and Unicode
(NFKC) variants, and user+server splits of the same text. The last test runs the same
crafted pairs through the 0.1 rule and shows it collides: these tests can fail.
"""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from kdash_hub.authenticator.usernames import UsernameRule
from kdash_hub.naming import (
    ESCAPE_SEP,
    is_dns1123_label,
    name_part,
    readable_label,
    user_namespace,
    user_object_name,
)
from kdash_hub.spawner import homedir, storage

PREFIXES = ["kdash-", "", "u-", "jhub-user-", "x"]
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

usernames = st.text(max_size=120)
dns_ish = st.text(alphabet="abcz09-._", min_size=1, max_size=80)  # near-valid names
prefixes = st.sampled_from(PREFIXES)


def pv_name(username: str, prefix: str = "kdash-") -> str:
    """The PersistentVolume the `nfs` preset makes for the user (cluster-scoped)."""
    namespace = user_namespace(username, prefix)
    plan = storage.plan_home("nfs", {"server": "nfs.example.org", "path": "/export"},
                             username=username, namespace=namespace, pvc_name="claim",
                             uid=1000, gid=100, mount_path="/home/jovyan")
    return plan.pv["metadata"]["name"]


def every_name(username: str, prefix: str = "kdash-") -> dict[str, str]:
    """Every per-user name that is not inside the user's own namespace."""
    return {
        "namespace": user_namespace(username, prefix),
        "home_dir": storage.home_dir(username),
        "persistent_volume": pv_name(username, prefix),
        "home_job": homedir.job_name(username),
        "server_object": user_object_name("jupyter", username, "gpu"),
    }


def assert_apart(a: str, b: str, prefix: str = "kdash-") -> None:
    """Distinct users: every kind of name differs."""
    assert a != b
    names_a, names_b = every_name(a, prefix), every_name(b, prefix)
    for kind in names_a:
        assert names_a[kind] != names_b[kind], (kind, a, b, names_a[kind])


# -- validity and determinism ------------------------------------------------------------

@SETTINGS
@given(usernames | dns_ish, prefixes)
@example("a" * 63, "kdash-")
@example("", "")
@example("-", "")
@example("数据科学家", "kdash-")
def test_every_name_is_a_valid_label_and_stable(username, prefix):
    names = every_name(username, prefix)
    for kind, name in names.items():
        assert is_dns1123_label(name) and len(name) <= 63, (kind, username, name)
    assert every_name(username, prefix) == names  # deterministic


# -- distinct users, distinct names --------------------------------------------------------

@SETTINGS
@given(usernames | dns_ish, usernames | dns_ish, prefixes)
def test_any_two_users_are_apart(a, b, prefix):
    assume(a != b)
    assert_apart(a, b, prefix)


@SETTINGS
@given(usernames | dns_ish, prefixes, st.sampled_from(["namespace", "part", "old", "job"]))
@example("a.b", "kdash-", "namespace")
@example("a.b", "kdash-", "old")
@example("x" * 100, "kdash-", "namespace")
def test_a_user_named_like_anothers_escaped_form_is_apart(victim, prefix, form):
    """The attacker picks, as their username, what the victim's name became."""
    if form == "namespace":
        attacker = user_namespace(victim, prefix).removeprefix(prefix)
    elif form == "part":
        attacker = name_part(victim)
    elif form == "job":
        attacker = homedir.job_name(victim).removeprefix("kdash-home-")
    else:  # what 0.1 made of the victim's name, without the prefix
        attacker = readable_label(prefix + victim).removeprefix(prefix)
    assume(attacker != victim)
    assert_apart(victim, attacker, prefix)


@SETTINGS
@given(st.text(alphabet="abcdefghij", min_size=60, max_size=60),
       st.text(max_size=40), st.text(max_size=40), prefixes)
def test_long_names_sharing_a_60_character_prefix_are_apart(common, tail_a, tail_b, prefix):
    a, b = common + tail_a, common + tail_b
    assume(a != b)
    assert_apart(a, b, prefix)


@SETTINGS
@given(usernames, st.sampled_from(["upper", "lower", "casefold", "NFKC", "NFKD", "NFC",
                                   "strip", "title"]))
@example("ａlice", "NFKC")
@example("Alice", "lower")
@example("ﬁle", "NFKC")
def test_case_and_unicode_variants_are_apart(name, how):
    """Variants that are different hub usernames get different names; after the
    authenticator's normalisation (NFKC + lowercase) variants are ONE username."""
    variant = {"upper": str.upper, "lower": str.lower, "casefold": str.casefold,
               "strip": str.strip, "title": str.title}.get(how) or (
        lambda s: unicodedata.normalize(how, s))
    other = variant(name)
    if other != name:
        assert_apart(name, other)
    norm = UsernameRule().normalize
    if norm(other) != norm(name):
        assert_apart(norm(name), norm(other))


@SETTINGS
@given(dns_ish | usernames, dns_ish | usernames, dns_ish | usernames, dns_ish | usernames)
def test_user_and_server_pairs_are_apart(u1, s1, u2, s2):
    assume((u1, s1) != (u2, s2))
    assert user_object_name("jupyter", u1, s1) != user_object_name("jupyter", u2, s2)


@SETTINGS
@given(st.lists(st.sampled_from(["a", "b", "-", ".", "--", "x1"]), min_size=2, max_size=8),
       st.data())
def test_one_text_split_two_ways_into_user_and_server_is_apart(pieces, data):
    """`a-b` + `c` vs `a` + `b-c`: the same characters, split differently."""
    text = "".join(pieces)
    i = data.draw(st.integers(1, len(text) - 1)) if len(text) > 1 else 1
    j = data.draw(st.integers(1, len(text) - 1)) if len(text) > 1 else 1
    assume(i != j)
    first = user_object_name("jupyter", text[:i], text[i:])
    second = user_object_name("jupyter", text[:j], text[j:])
    assert first != second
    assert user_object_name("jupyter", text) not in (first, second)


def test_kept_and_escaped_names_can_never_meet():
    """The construction: kept names never contain `--`, escaped ones always `---`."""
    for name in ("alice", "a-b", "a.b", "a--b", "x" * 80, "Ünïcode"):
        part = name_part(name)
        assert ("--" not in part) if part == name else (ESCAPE_SEP in part)


# -- the same attacks against the 0.1 rule: they succeed there -----------------------------

def test_the_crafted_pairs_collide_under_the_0_1_rule():
    """Proof that the crafted strategies above can fail: with 0.1's rule the attacker's
    namespace equals the victim's (and, for long names, shortening merged them too)."""
    def old_namespace(name: str) -> str:
        return readable_label("kdash-" + name)

    collisions = 0
    for victim in ("a.b", "john.smith", "A_B", "x" * 100, "trail-", "Ünïcode"):
        attacker = old_namespace(victim).removeprefix("kdash-")
        if attacker != victim and old_namespace(attacker) == old_namespace(victim):
            collisions += 1
        assert user_namespace(attacker) != user_namespace(victim)
    assert collisions == 6
