"""Kubeconfig download, the fast tier: off until the admin sets the API server URL, and
closed to tokens without the launcher's scope (kubectl against the real control plane:
tests/realtier/test_kubeconfig_download.py)."""

from __future__ import annotations

from tests.fixtures.launcher import LauncherEnv


async def test_without_a_server_url_the_download_is_off_with_a_message(
        launcher_env: LauncherEnv):
    status, body = await launcher_env.call("GET", "kubeconfig", "alice")
    assert status == 501
    assert "kubeconfig_server_url" in body["message"]


async def test_a_token_without_the_launcher_scope_gets_a_403_json(launcher_env: LauncherEnv):
    noscope = {"Authorization": f"token {launcher_env.tokens['noscope']}"}
    status, body = await launcher_env.call("GET", "kubeconfig", None, headers=noscope)
    assert status == 403
    assert "access:services!service=kdash-launcher" in body["message"]
    status, body = await launcher_env.call("GET", "kubeconfig", None)
    assert status == 403 and "authentication required" in body["message"]


def test_a_token_lifetime_under_the_api_servers_minimum_is_refused_at_start():
    import pytest
    from traitlets import TraitError

    from kdash_hub.services.launcher.settings import LauncherSettings

    with pytest.raises(TraitError, match="at least 600"):
        LauncherSettings(kubeconfig_token_seconds=599)
    assert LauncherSettings(kubeconfig_token_seconds=600).kubeconfig_token_seconds == 600
