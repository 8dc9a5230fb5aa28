"""kdash_hub.z2jh: custom.kdash applied to the hub config as the chart's hub runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from kdash_hub import z2jh

FLAVORS = [
    {"slug": "cpu", "display_name": "CPU", "idle_timeout": 28800},
    {"slug": "gpu", "display_name": "GPU", "idle_timeout": 3600,
     "gpu": {"resource": "nvidia.com/gpu", "counts": [1]}},
]


def chart_like_config() -> Config:
    """What the chart's jupyterhub_config.py has done before hub.extraConfig runs."""
    c = Config()
    c.KubeSpawner.profile_list = []
    c.JupyterHub.services = [
        {"name": "kdash-launcher", "url": "http://hub:10101",
         "command": ["python3", "-m", "kdash_hub.services.launcher", "--ip=0.0.0.0"]},
        {"name": "kdash-culler", "command": ["python3", "-m", "kdash_hub.services.culler"]},
    ]
    return c


def test_sections_go_to_their_classes_and_services_get_a_config_file(tmp_path):
    c = chart_like_config()
    z2jh.apply_custom_config(c, {
        "spawner": {"flavors": FLAVORS, "namespace_prefix": "u-"},
        "authenticator": {"admin_groups": ["admins"], "server_address": "ldap.example.org"},
        "launcher": {"default_ttl": "8h", "kubeconfig": ""},
        "culler": {"cull_every": "1m", "profile_rules": {"gpu": {"idle": "30m"}}},
    }, service_config_dir=tmp_path)
    assert c.KDashSpawner.namespace_prefix == "u-"
    assert c.KDashAuthenticator.admin_groups == ["admins"]
    assert c.LDAPBackend.server_address == "ldap.example.org"
    services = {s["name"]: s for s in c.JupyterHub.services}
    launcher_file = tmp_path / "kdash-config" / "kdash-launcher-config.json"
    assert services["kdash-launcher"]["command"][-1] == f"--config={launcher_file}"
    assert "--ip=0.0.0.0" in services["kdash-launcher"]["command"]
    launcher = json.loads(launcher_file.read_text())
    assert launcher == {"LauncherSettings": {"default_ttl": "8h"},
                        "LauncherApp": {"kubeconfig": ""}}
    culler = json.loads((tmp_path / "kdash-config" / "kdash-culler-config.json").read_text())
    # the flavors tell the culler which profiles exist and their idle time, unless set
    assert culler["CullerApp"]["known_profiles"] == ["cpu", "gpu"]
    assert culler["CullerApp"]["profile_rules"] == {"gpu": {"idle": "30m"},
                                                    "cpu": {"idle": 28800}}
    # the chart's empty profile_list would hide the flavors
    assert "profile_list" not in c.KubeSpawner


def test_the_launcher_learns_the_spawners_datasets_but_never_their_keys(tmp_path):
    """The launcher's Datasets page lists the admin's datasets and checks users' names
    against them: the chart copies the spawner's list (Secret names, no keys) to it."""
    datasets = [{"name": "climate", "bucket": "climate-2024", "endpoint": "https://s3.example.org",
                 "groups": ["geo"], "credentials": {"secret": "s3-climate-keys"}}]
    c = chart_like_config()
    z2jh.apply_custom_config(c, {
        "spawner": {"s3_datasets": datasets, "s3_datasets_user_secret": "my-datasets"},
        "launcher": {"default_ttl": "8h"},
    }, service_config_dir=tmp_path)
    launcher = json.loads((tmp_path / "kdash-config" / "kdash-launcher-config.json")
                          .read_text())["LauncherSettings"]
    assert launcher["datasets_declared"] == datasets
    assert launcher["datasets_user_secret"] == "my-datasets"
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(launcher)
    # what the launcher section sets itself wins
    c = chart_like_config()
    z2jh.apply_custom_config(c, {
        "spawner": {"s3_datasets": datasets, "s3_datasets_user_secret": "my-datasets"},
        "launcher": {"datasets_user_secret": ""},
    }, service_config_dir=tmp_path)
    launcher = json.loads((tmp_path / "kdash-config" / "kdash-launcher-config.json")
                          .read_text())["LauncherSettings"]
    assert launcher["datasets_user_secret"] == ""
    assert z2jh.service_config({"spawner": {"s3_datasets": datasets}, "launcher": {}},
                               "kdash-launcher").LauncherSettings.datasets_declared == datasets


def test_applying_twice_does_not_stack_config_arguments(tmp_path):
    c = chart_like_config()
    for _ in range(2):
        z2jh.apply_custom_config(c, {"culler": {"dry_run": True}}, service_config_dir=tmp_path)
    command = [s for s in c.JupyterHub.services if s["name"] == "kdash-culler"][0]["command"]
    assert sum(a.startswith("--config=") for a in command) == 1


def test_an_explicit_profile_list_is_kept(tmp_path):
    c = chart_like_config()
    c.KubeSpawner.profile_list = [{"display_name": "mine"}]
    z2jh.apply_custom_config(c, {"spawner": {"flavors": FLAVORS}}, service_config_dir=tmp_path)
    assert c.KubeSpawner.profile_list == [{"display_name": "mine"}]


def test_nothing_is_applied_when_a_setting_is_wrong(tmp_path):
    c = chart_like_config()
    with pytest.raises(z2jh.CustomConfigError) as info:
        z2jh.apply_custom_config(c, {"launcher": {"default_ttl": "8h", "ttl": "1h"},
                                     "culler": {"cull_every": []}}, service_config_dir=tmp_path)
    problems = info.value.problems
    assert problems[0].startswith("custom.kdash.launcher.ttl: unknown setting")
    assert "default_ttl" in problems[0] and "max_ttl" in problems[0]
    assert problems[1].startswith("custom.kdash.culler.cull_every:")
    assert "LauncherSettings" not in c
    assert not (tmp_path / "kdash-config").exists()


def test_null_means_not_set_and_empty_custom_is_fine(tmp_path):
    c = chart_like_config()
    z2jh.apply_custom_config(c, {"spawner": {"namespace_prefix": None}, "culler": None},
                             service_config_dir=tmp_path)
    z2jh.apply_custom_config(c, {}, service_config_dir=tmp_path)
    z2jh.apply_custom_config(c, None, service_config_dir=tmp_path)
    assert "namespace_prefix" not in c.KDashSpawner


def test_services_in_the_hub_pod_get_the_in_cluster_api_address(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = chart_like_config()
    z2jh.apply_custom_config(c, {"launcher": {}}, service_config_dir=tmp_path)
    for service in c.JupyterHub.services:
        assert service["environment"] == {"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                          "KUBERNETES_SERVICE_PORT": "443"}


# --- secrets by reference ---------------------------------------------------------------


def test_secret_settings_come_from_the_environment_or_a_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "s3cret-ldap")
    monkeypatch.setenv("KDASH_RECORD_SIGNING_KEY", "k" * 40)
    secret_file = tmp_path / "oidc-secret"
    secret_file.write_text("s3cret-oidc\n")  # as `kubectl create secret --from-file` keeps it
    c = chart_like_config()
    z2jh.apply_custom_config(c, {
        "authenticator": {"lookup_dn_search_password": "env:LDAP_BIND_PASSWORD",
                          "oidc_providers": {"sso": {
                              "issuer": "https://sso.example.org", "client_id": "hub",
                              "client_secret": f"file:{secret_file}"}}},
        "launcher": {"record_signing_key": "env:KDASH_RECORD_SIGNING_KEY",
                     # not a secret setting: a value that looks like a reference stays
                     "registry": "env:REGISTRY"},
    }, service_config_dir=tmp_path)
    assert c.LDAPBackend.lookup_dn_search_password == "s3cret-ldap"
    assert c.KDashAuthenticator.oidc_providers["sso"]["client_secret"] == "s3cret-oidc"
    launcher = json.loads((tmp_path / "kdash-config" / "kdash-launcher-config.json").read_text())
    assert launcher["LauncherSettings"]["record_signing_key"] == "k" * 40
    assert launcher["LauncherSettings"]["registry"] == "env:REGISTRY"
    assert oct((tmp_path / "kdash-config" / "kdash-launcher-config.json").stat().st_mode)[-3:] \
        == "600"
    # the culler reads the signing key from its environment: the hub passes it on
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["kdash-culler"]["environment"]["KDASH_RECORD_SIGNING_KEY"] == "k" * 40
    assert "inline" not in caplog.text


def test_a_missing_secret_stops_the_hub_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    c = chart_like_config()
    with pytest.raises(z2jh.CustomConfigError) as info:
        z2jh.apply_custom_config(c, {"authenticator": {
            "lookup_dn_search_password": "env:NOPE"}}, service_config_dir=tmp_path)
    assert "custom.kdash.authenticator.lookup_dn_search_password" in str(info.value)
    assert "NOPE is not set" in str(info.value)
    with pytest.raises(z2jh.CustomConfigError, match="can't read /no/such/file"):
        z2jh.apply_custom_config(c, {"authenticator": {
            "lookup_dn_search_password": "file:/no/such/file"}}, service_config_dir=tmp_path)
    assert "LDAPBackend" not in c


def test_an_inline_secret_still_works_but_is_logged(tmp_path, caplog):
    c = chart_like_config()
    z2jh.apply_custom_config(c, {"authenticator": {
        "lookup_dn_search_password": "value:env:literally"}}, service_config_dir=tmp_path)
    assert c.LDAPBackend.lookup_dn_search_password == "env:literally"
    z2jh.apply_custom_config(c, {"authenticator": {
        "lookup_dn_search_password": "hunter2"}}, service_config_dir=tmp_path)
    assert c.LDAPBackend.lookup_dn_search_password == "hunter2"
    assert "custom.kdash.authenticator.lookup_dn_search_password holds a secret inline" \
        in caplog.text


def test_secret_names_are_recognised_and_ordinary_ones_left_alone():
    from kdash_hub.secrets import inline_secrets, is_secret_name

    for name in ("lookup_dn_search_password", "client_secret", "record_signing_key",
                 "record_previous_signing_keys", "api_token", "cookie_secret"):
        assert is_secret_name(name), name
    for name in ("key", "image_pull_secrets", "automount_service_account_token",
                 "record_signing_key_file", "secret_name", "client_id", "groups_claim"):
        assert not is_secret_name(name), name
    tree = {"a": {"client_secret": "x", "tolerations": [{"key": "gpu"}]},
            "b": [{"api_token": "env:T"}, {"record_previous_signing_keys": ["file:/k", "y"]}]}
    assert inline_secrets(tree) == ["a.client_secret", "b[1].record_previous_signing_keys"]


# --- the services as Deployments ---------------------------------------------------------


def write_values(tmp_path, name, values) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_custom_prints_merged_values_and_refuses_inline_secrets(tmp_path, capsys):
    base = write_values(tmp_path, "values.yaml", {"custom": {"kdash": {
        "spawner": {"flavors": FLAVORS}, "culler": {"cull_every": "5m"}}}})
    site = write_values(tmp_path, "site.yaml", {"custom": {"kdash": {
        "culler": {"cull_every": "1m"},
        "authenticator": {"lookup_dn_search_password": "env:LDAP_BIND_PASSWORD"}}}})
    assert z2jh.main(["custom", "-f", base, "-f", site]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["culler"] == {"cull_every": "1m"}
    assert printed["spawner"]["flavors"] == FLAVORS
    assert printed["authenticator"]["lookup_dn_search_password"] == "env:LDAP_BIND_PASSWORD"
    leaky = write_values(tmp_path, "leaky.yaml", {"custom": {"kdash": {"authenticator": {
        "lookup_dn_search_password": "hunter2"}}}})
    assert z2jh.main(["custom", "-f", base, "-f", leaky]) == 2
    out = capsys.readouterr()
    assert "hunter2" not in out.out + out.err
    assert "custom.kdash.authenticator.lookup_dn_search_password" in out.err
    wrong = write_values(tmp_path, "wrong.yaml", {"custom": {"kdash": {"culler": {"cul": 1}}}})
    assert z2jh.main(["custom", "-f", wrong]) == 2
    assert "custom.kdash.culler.cul: unknown setting" in capsys.readouterr().err


def test_serve_writes_the_services_section_and_runs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KDASH_TEST_KEY", "q" * 40)
    monkeypatch.delenv("LDAP_BIND_PASSWORD", raising=False)
    custom = write_values(tmp_path, "custom.yaml", {
        "spawner": {"flavors": FLAVORS},
        # the hub's secrets are not in the services' pods: not resolved there
        "authenticator": {"lookup_dn_search_password": "env:LDAP_BIND_PASSWORD"},
        "launcher": {"default_ttl": "8h", "record_signing_key": "env:KDASH_TEST_KEY"},
        "culler": {"cull_every": "1m"}})
    ran = []

    def fake_exec(path, argv):
        ran.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(z2jh.os, "execv", fake_exec)
    for service, section in (("kdash-launcher", "LauncherSettings"),
                             ("kdash-culler", "CullerApp")):
        with pytest.raises(SystemExit):
            z2jh.main(["serve", service, "--custom", custom, "--config-dir",
                       str(tmp_path / service), "--", "--port=10101"])
        argv = ran[-1]
        assert argv[1:3] == ["-m", z2jh.SERVICE_MODULES[service]] and argv[-1] == "--port=10101"
        config = json.loads(Path(argv[3].removeprefix("--config=")).read_text())
        assert section in config
    launcher = json.loads(Path(ran[0][3].removeprefix("--config=")).read_text())
    assert launcher["LauncherSettings"] == {"default_ttl": "8h", "record_signing_key": "q" * 40}
    culler = json.loads(Path(ran[1][3].removeprefix("--config=")).read_text())
    assert culler["CullerApp"]["known_profiles"] == ["cpu", "gpu"]  # as in the hub pod


def test_serve_really_starts_the_service_process(tmp_path):
    custom = write_values(tmp_path, "custom.yaml", {"culler": {"cull_every": "1m"}})
    result = subprocess.run(
        [sys.executable, "-m", "kdash_hub.z2jh", "serve", "kdash-culler", "--custom", custom,
         "--config-dir", str(tmp_path / "cfg"), "--", "--help"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CullerApp" in result.stdout
    assert json.loads((tmp_path / "cfg" / "kdash-culler-config.json").read_text()) == {
        "CullerApp": {"cull_every": "1m"}}


def test_external_services_are_left_to_their_own_deployments(tmp_path, monkeypatch):
    """With the services as Deployments (values.yaml), the hub neither runs them nor needs
    their secrets."""
    monkeypatch.delenv("KDASH_RECORD_SIGNING_KEY", raising=False)
    c = Config()
    c.JupyterHub.services = [{"name": "kdash-launcher", "url": "http://kdash-launcher:10101"},
                             {"name": "kdash-culler"}]
    z2jh.apply_custom_config(c, {
        "launcher": {"record_signing_key": "env:KDASH_RECORD_SIGNING_KEY"},
        "culler": {"cull_every": "1m"}}, service_config_dir=tmp_path)
    for service in c.JupyterHub.services:
        assert "command" not in service and "environment" not in service
    assert not (tmp_path / "kdash-config").exists()
    assert c.LauncherSettings.record_signing_key == "env:KDASH_RECORD_SIGNING_KEY"
