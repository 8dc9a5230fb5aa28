"""The Datasets page's pure checks (services/launcher/userdatasets.py): a new dataset passes
the spawner's own checks (parse_user) or is refused with one sentence, never naming a key."""

from __future__ import annotations

import json

import pytest

from kdash_hub.services.launcher.instances import LauncherError
from kdash_hub.services.launcher.settings import LauncherSettings
from kdash_hub.services.launcher.userdatasets import (
    check_new,
    launcher_settings_from_spawner,
    mask,
    usage,
)

SECRET = "s3cr3t/Key+never-shown"
GOOD = {"name": "mine", "bucket": "my-bucket", "endpoint": "https://s3.example.org",
        "access_key_id": "AKIAEXAMPLE0001", "secret_access_key": SECRET}


def refused(entry, admin=frozenset(), own=()) -> str:
    with pytest.raises(LauncherError) as e:
        check_new(entry, set(admin), list(own))
    assert e.value.status == 400
    assert SECRET not in e.value.message
    assert "\n" not in e.value.message  # one sentence
    return e.value.message


def test_a_good_entry_gets_the_defaults():
    entry = check_new(dict(GOOD), set(), [])
    assert entry["region"] == "us-east-1" and entry["path_style"] is True


@pytest.mark.parametrize("field,value,says", [
    ("name", "../etc", "name"), ("name", "Climate", "name"), ("name", "a\nb", "name"),
    ("name", "default", "taken"),
    ("endpoint", "javascript:alert(1)", "endpoint"),
    ("endpoint", "https://s3.example.org/\n[profile x]", "endpoint"),
    ("endpoint", "https://s3.example.org\n[profile x]", "endpoint"),  # urlsplit: ValueError
    ("endpoint", "http://[::1", "endpoint"),
    ("endpoint", "https://user:pw@s3.example.org", "endpoint"),
    ("bucket", "a/../b", "bucket"), ("region", "us-east-1\nx", "region"),
    ("access_key_id", "AK\n[default]", "printable"),
    ("secret_access_key", "with space", "printable"),
    ("secret_access_key", "", "printable"),
])
def test_crafted_values_are_refused(field, value, says):
    assert says in refused({**GOOD, field: value})


def test_names_of_the_admin_or_taken_and_the_limit():
    assert "administrator" in refused(dict(GOOD), admin={"mine"})
    assert "already" in refused(dict(GOOD), own=[{"name": "mine"}])
    full = [{"name": f"d{i}"} for i in range(20)]
    assert "20" in refused(dict(GOOD), own=full)


def test_forged_fields_are_refused():
    for forged in ({"user": "bob"}, {"namespace": "kdash-bob"}, {"groups": ["bio"]},
                   {"credentials": {"secret": "hub-keys"}}):
        assert "unknown field" in refused({**GOOD, **forged})
    with pytest.raises(LauncherError):
        check_new(["not", "a", "dict"], set(), [])


def test_keys_are_masked_and_usage_is_text():
    assert mask("AKIAEXAMPLE0001") == "****0001"
    assert mask("short") == "****"
    assert usage("mine", "my-bucket")["rclone"] == "rclone ls mine:my-bucket"


def test_settings_check_the_declared_list_like_the_spawner():
    from traitlets import TraitError

    with pytest.raises(TraitError, match="endpoint"):
        LauncherSettings(datasets_declared=[{"name": "x", "bucket": "bkt",
                                             "endpoint": "ftp://h", "credentials": {
                                                 "secret": "k"}}])
    with pytest.raises(TraitError):
        LauncherSettings(datasets_user_secret="kdash-datasets-env")
    spawner = {"s3_datasets": [], "s3_datasets_user_secret": "my-datasets", "flavors": []}
    assert launcher_settings_from_spawner(spawner) == {
        "datasets_declared": [], "datasets_user_secret": "my-datasets"}


def test_the_spawner_leaves_an_unparsable_endpoint_out_instead_of_failing_the_start():
    from kdash_hub.spawner.datasets import parse_user

    text = json.dumps([{**GOOD, "endpoint": "https://h\n[profile evil]"}])
    found, _keys, problems = parse_user(text, set())
    assert found == [] and "endpoint" in problems[0]
