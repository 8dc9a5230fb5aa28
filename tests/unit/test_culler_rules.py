"""Durations, rules and the startup check of kdash-culler's settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdash_hub.services.culler.app import ConfigError, CullerApp
from kdash_hub.services.culler.rules import RuleError, RuleSet


def rules(**kw) -> RuleSet:
    return RuleSet.from_config(
        kw.get("default", {"idle": "8h"}),
        kw.get("profiles", {"gpu": {"idle": "1h", "max_age": "8h"}, "cpu": {"idle": "8h"}}),
        kw.get("groups", {"long": {"idle": "4h"}, "longer": {"idle": "12h", "max_age": "1d"},
                          "forever": {"max_age": "never"}}),
        kw.get("known", ["gpu", "cpu", "tiny"]),
    )


def test_rule_resolution_profile_then_most_lenient_group():
    rs = rules()
    r = rs.for_server("gpu", [])
    assert (r.name, r.idle, r.max_age) == ("profile:gpu", 3600, 28800)
    r = rs.for_server("tiny", [])  # known profile without a rule: the default
    assert (r.name, r.idle, r.max_age) == ("default", 28800, None)
    r = rs.for_server(None, ["other"])
    assert r.name == "default"
    r = rs.for_server("gpu", ["long"])
    assert (r.name, r.idle, r.max_age) == ("profile:gpu+group:long", 14400, 28800)
    r = rs.for_server("gpu", ["long", "longer"])
    assert (r.idle, r.max_age) == (43200, 86400)
    r = rs.for_server("gpu", ["longer", "forever"])  # "never" is the most lenient max_age
    assert (r.idle, r.max_age) == (43200, None)


@pytest.mark.parametrize("kw, message", [
    ({"profiles": {"gpux": {"idle": "1h"}}},
     "CullerApp.profile_rules['gpux']: unknown profile 'gpux'"),
    ({"profiles": {"gpu": {"idle": "-1h"}}},
     "CullerApp.profile_rules['gpu'].idle: a duration can't be negative"),
    ({"groups": {"g": {"max_age": "soon"}}}, "CullerApp.group_rules['g'].max_age: not a duration"),
    ({"groups": {"g": {"idle_timeout": "1h"}}}, "CullerApp.group_rules['g']: unknown key"),
    ({"default": {"idle": "x"}}, "CullerApp.default_rule.idle: not a duration"),
    ({"profiles": {"gpu": "1h"}}, "CullerApp.profile_rules['gpu']: must be a mapping"),
])
def test_bad_rules_name_the_setting(kw, message):
    with pytest.raises(RuleError) as e:
        rules(**kw)
    assert message in str(e.value)


def test_app_check_names_the_setting():
    app = CullerApp(api_token="t", known_profiles=["cpu"], profile_rules={"gpu": {"idle": "1h"}})
    with pytest.raises(ConfigError, match=r"CullerApp.profile_rules\['gpu'\]: unknown profile"):
        app.check()
    with pytest.raises(ConfigError, match="CullerApp.api_token"):
        CullerApp(api_token="").check()
    with pytest.raises(ConfigError, match="CullerApp.concurrency"):
        CullerApp(api_token="t", concurrency=0).check()
    with pytest.raises(Exception, match="CullerApp.cull_every: a duration can't be negative"):
        CullerApp(api_token="t", cull_every="-5m")


def test_command_line_fails_at_startup_with_the_setting(tmp_path):
    config = tmp_path / "culler.json"
    config.write_text('{"CullerApp": {"api_token": "t", "known_profiles": ["cpu", "gpu"], '
                      '"profile_rules": {"gpu": {"idle": "1h", "max_age": "-8h"}}}}')
    proc = subprocess.run(
        [sys.executable, "-m", "kdash_hub.services.culler", f"--config={config}", "--once"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "CullerApp.profile_rules['gpu'].max_age: a duration can't be negative" in proc.stderr
    # a rule naming an unknown profile: the same, at startup
    config.write_text('{"CullerApp": {"api_token": "t", "known_profiles": ["cpu"], '
                      '"profile_rules": {"gpu": {"idle": "1h"}}}}')
    proc = subprocess.run(
        [sys.executable, "-m", "kdash_hub.services.culler", f"--config={config}", "--once"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "CullerApp.profile_rules['gpu']: unknown profile 'gpu'" in proc.stderr


def test_kdash_hub_culler_subcommand_parses():
    from kdash_hub.cli import build_parser
    from kdash_hub.services.culler.cli import argv_of

    args = build_parser().parse_args(
        ["culler", "--config", "c.json", "--dry-run", "--once", "--set", "cull_every=10m"])
    assert argv_of(args) == ["--config=c.json", "--dry-run", "--once",
                             "--CullerApp.cull_every=10m"]


def test_config_file_and_options():
    app = CullerApp(api_token="t", hub_api_url="http://hub:8081/hub/api",
                    cull_users_after="30d", exempt_groups=["staff"])
    options = app.options()
    assert options.server_base_url == "http://hub:8081"
    assert options.cull_users_after == 30 * 86400
    assert options.exempt_groups == frozenset({"staff"})
    assert options.opt_out_group == "kdash-cull-opt-out"
