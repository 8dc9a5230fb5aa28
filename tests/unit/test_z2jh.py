"""kdash_hub.z2jh: custom.kdash applied to the hub config as the chart's hub runs it."""

from __future__ import annotations

import json

import pytest
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
