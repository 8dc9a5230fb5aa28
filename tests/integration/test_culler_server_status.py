"""check_server_status with a real jupyterhub-singleuser server behind the real proxy: the
server's own activity (an open terminal) keeps a server the hub thinks is idle."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta

import aiohttp
import pytest

from kdash_hub.dev.hub import HubProcess
from kdash_hub.services.culler.activity import parse_time
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from tests.fixtures.culler import CULLER_SCOPES, HubDriver


@pytest.fixture
async def singleuser_hub(tmp_path):
    token = secrets.token_hex(16)
    config = f"""
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp_path / "home-{username}")!r}
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "3600"}}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.last_activity_interval = 86400
c.JupyterHub.services.append({{"name": "kdash-culler", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{
    "name": "kdash-culler", "scopes": {CULLER_SCOPES!r}, "services": ["kdash-culler"]}})
"""
    hub = await HubProcess(config, tmp_path / "hub").start()
    try:
        yield HubDriver(hub, token)
    finally:
        await hub.stop()


async def test_open_terminal_keeps_a_server_the_hub_thinks_idle(singleuser_hub):
    hub = singleuser_hub
    await hub.create_users("sam")
    await hub.call("POST", "/users/sam/server", {"profile": "gpu"})
    for _ in range(600):
        model = await hub.server("sam")
        if model and model.get("ready"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"server did not start:\n{hub.hub.log_tail()}")
    hub_activity = parse_time((await hub.server("sam"))["last_activity"])

    # someone opens a terminal: the server knows, the hub doesn't (yet)
    async with aiohttp.ClientSession(headers=hub.hub.auth_headers()) as session:
        async with session.post(f"{hub.hub.url}/user/sam/api/terminals") as resp:
            assert resp.status == 200, await resp.text()
            terminal = await resp.json()
    terminal_activity = parse_time(terminal["last_activity"])
    assert parse_time((await hub.server("sam"))["last_activity"]) == hub_activity
    assert terminal_activity > hub_activity

    # at this moment the hub's record is 30 min old, the terminal's not quite
    clock = ManualClock(hub_activity + timedelta(minutes=30)
                        + (terminal_activity - hub_activity) / 2)
    app = CullerApp(hub_api_url=hub.api_url, api_token=hub.culler_token, opt_out_group="",
                    default_rule={"idle": "30m"}, check_server_status=True)
    culler = app.make_culler(clock=clock)
    try:
        app_without = CullerApp(hub_api_url=hub.api_url, api_token=hub.culler_token,
                                opt_out_group="", default_rule={"idle": "30m"}, dry_run=True)
        blind = app_without.make_culler(clock=clock)
        assert (await blind.run_once()).to_cull == ["sam/"]  # the hub alone: idle
        await blind.hub.close()

        report = await culler.run_once()
        (decision,) = report.decisions
        assert (decision.action, decision.activity_source) == ("keep", "server")
        assert decision.idle_seconds < 30 * 60 and report.stopped == []
        assert decision.extra["connections"] == 0

        # later, the terminal idle too: culled
        clock.set(terminal_activity + timedelta(minutes=31))
        report = await culler.run_once()
        # a busy machine's hub may answer the stop 202 (pending): then it must end stopped
        assert report.stopped + report.pending == ["sam/"], report.decisions
        assert report.decisions[0].activity_source == "server"
        for _ in range(600):
            if not await hub.server("sam"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the culled server still runs: {await hub.server('sam')}")
    finally:
        await culler.hub.close()
