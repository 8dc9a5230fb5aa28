"""S3 dataset settings: refused at hub start with a clear message, injective names, the
files and variables made from them (no cluster here; tests/integration/test_datasets.py
runs them against a real S3 server)."""

from __future__ import annotations

import base64
import configparser

import pytest
from hypothesis import given
from hypothesis import strategies as st
from traitlets import TraitError

from kdash_hub.spawner import datasets
from kdash_hub.spawner.datasets import S3DatasetSettings

OK = {"name": "climate", "bucket": "climate-data", "endpoint": "https://s3.example.org",
      "credentials": {"secret": "s3-keys"}}


def refusal(**change) -> str:
    entry = {**OK, **change}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(TraitError) as info:
        S3DatasetSettings(s3_datasets=[entry])
    return str(info.value)


@pytest.mark.parametrize("name", ["Climate", "a_b", "a--b", "-a", "a-", "../x", "a/b", "1a",
                                  "a b", "x" * 41, "", "climate$", "default"])
def test_forged_names_are_refused(name):
    message = refusal(name=name)
    assert message.startswith("KDashSpawner.s3_datasets: dataset")
    assert "name" in message


@pytest.mark.parametrize(("change", "words"), [
    ({"bucket": "UP"}, "is not an S3 bucket name"),
    ({"bucket": "a..b"}, "is not an S3 bucket name"),
    ({"endpoint": "ftp://x"}, "the endpoint must be an http(s) URL"),
    ({"endpoint": "https://user:pw@s3.example.org"}, "the endpoint must be an http(s) URL"),
    ({"endpoint": "https://s3.example.org/\n[evil]"}, "the endpoint must be an http(s) URL"),
    ({"endpoint": "https://s3.example.org/bucket"}, "the endpoint must be an http(s) URL"),
    ({"region": "us east"}, "is not a region name"),
    ({"credentials": None}, "`credentials` must name a Secret of the hub's namespace"),
    ({"credentials": {"secret": "other-ns/keys"}}, "other namespaces are not allowed"),
    ({"credentials": {"secret": "k", "access_key": "a b"}}, "`access_key` must be a key"),
    ({"credentials": {"secret": "k", "token": "x"}}, "credentials: unknown key(s) token"),
    ({"groups": "ml"}, "`groups` must be a list of group names"),
    ({"path_style": "yes"}, "`path_style` must be true or false"),
    ({"mount": "/x"}, "unknown key(s) mount"),
])
def test_bad_settings_are_refused_with_a_clear_message(change, words):
    message = refusal(**change)
    assert message.startswith("KDashSpawner.s3_datasets: dataset 'climate': "), message
    assert words in message


def test_a_name_used_twice_is_refused():
    with pytest.raises(TraitError) as info:
        S3DatasetSettings(s3_datasets=[OK, {**OK, "bucket": "other"}])
    assert str(info.value) == ("KDashSpawner.s3_datasets: dataset 'climate': the name is "
                               "used twice")


def test_the_spawner_refuses_them_when_configured():
    """KDashSpawner carries the setting: the hub's config is checked as it loads."""
    from kdash_hub.spawner import KDashSpawner

    assert "s3_datasets" in KDashSpawner.class_trait_names(config=True)
    with pytest.raises(TraitError):
        S3DatasetSettings(s3_datasets_dir="relative/dir")
    with pytest.raises(TraitError):
        S3DatasetSettings(s3_datasets_secret="Not_A_Name")


NAMES = st.from_regex(datasets.NAME_RE, fullmatch=True).filter(
    lambda n: len(n) <= datasets.MAX_NAME)


@given(st.lists(NAMES, min_size=2, max_size=6, unique=True))
def test_variable_names_are_injective(names):
    found = datasets.parse([{**OK, "name": n} for n in names if n != "default"])
    prefixes = [d.env_prefix for d in found]
    assert len(set(prefixes)) == len(prefixes)
    assert all(p.replace("_", "").isalnum() and p.isupper() for p in prefixes)


def test_files_hold_a_profile_and_a_remote_per_dataset():
    found = datasets.parse([OK, {**OK, "name": "gen-omes", "bucket": "genomes",
                                 "region": "eu-west-1", "path_style": False}])
    keys = {"climate": ("AK1", "s/1+"), "gen-omes": ("AK2", "s2")}
    out = datasets.files(found, keys)
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(out["aws-config"])
    assert config["profile gen-omes"]["region"] == "eu-west-1"
    assert config["profile climate"]["endpoint_url"] == "https://s3.example.org"
    assert "addressing_style = path" in config["profile climate"]["s3"]
    assert "default" not in config  # two datasets: no default profile
    creds = configparser.ConfigParser(interpolation=None)
    creds.read_string(out["aws-credentials"])
    assert creds["climate"]["aws_secret_access_key"] == "s/1+"
    rclone = configparser.ConfigParser(interpolation=None)
    rclone.read_string(out["rclone.conf"])
    assert rclone["gen-omes"]["force_path_style"] == "false"
    assert rclone["climate"]["env_auth"] == "false"
    env = datasets.env(found, "/etc/kdash/datasets")
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.org"
    assert env["KDASH_DATASET_GEN_OMES_BUCKET"] == "genomes"
    other = datasets.parse([OK, {**OK, "name": "b", "endpoint": "http://127.0.0.1:9000"}])
    assert "AWS_ENDPOINT_URL" not in datasets.env(other, "/d")  # two endpoints: none
    assert datasets.env([], "/d") == {}


@pytest.mark.parametrize("value", ["", "a b", "x\n[evil]", "é", "a" * 257])
def test_credentials_that_would_break_the_files_are_not_used(value):
    d = datasets.parse([OK])[0]
    data = {"AWS_ACCESS_KEY_ID": base64.b64encode(b"AK").decode(),
            "AWS_SECRET_ACCESS_KEY": base64.b64encode(value.encode()).decode()}
    found = datasets.read_keys({"data": data}, d)
    assert isinstance(found, str) and "AWS_SECRET_ACCESS_KEY" in found
    assert "not in the hub's namespace" in datasets.read_keys(None, d)


def test_groups_limit_who_gets_a_dataset():
    found = datasets.parse([OK, {**OK, "name": "ml-only", "groups": ["ml"]}])
    assert [d.name for d in datasets.for_groups(found, [])] == ["climate"]
    assert [d.name for d in datasets.for_groups(found, ["ml"])] == ["climate", "ml-only"]


def test_a_users_own_datasets_are_checked_like_the_admins():
    good = {"name": "mine", "bucket": "my-bucket", "endpoint": "https://s3.example.org",
            "access_key_id": "AK", "secret_access_key": "s/+"}
    entries = [good,
               {**good, "name": "climate"},  # the admin's name
               {**good, "name": "default"},
               {**good, "name": "mine"},  # twice
               {**good, "name": "Bad_Name"},
               {**good, "name": "x", "secret_access_key": "a\n[climate]"},
               {**good, "name": "y", "endpoint": "https://h/?q"},
               {**good, "name": "z", "credentials": {"secret": "hub-keys"}},  # hub's Secret
               "not a mapping"]
    import json

    found, keys, problems = datasets.parse_user(json.dumps(entries), {"climate"})
    assert [d.name for d in found] == ["mine"] and keys == {"mine": ("AK", "s/+")}
    assert len(problems) == len(entries) - 1
    assert any("unknown key(s) credentials" in p for p in problems)
    assert datasets.parse_user("{", set())[2] == ["datasets.json is not JSON"]
    many = [{**good, "name": f"d{i}"} for i in range(30)]
    found, _, problems = datasets.parse_user(json.dumps(many), set())
    assert len(found) == datasets.MAX_USER_DATASETS and problems


def test_the_users_secret_is_never_the_hubs_own():
    with pytest.raises(TraitError) as info:
        S3DatasetSettings(s3_datasets_user_secret="kdash-datasets-env")
    assert "is the hub's own Secret" in str(info.value)
    assert S3DatasetSettings(s3_datasets_user_secret="my-datasets").s3_datasets_user_secret
