"""kdash-culler as the hub runs it: a managed service started with the config file that
kdash_hub.z2jh writes from `custom.kdash.culler`, its JSON logs in the hub's log, and its
Prometheus metrics under the service URL through the real proxy."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ports import free_port
from tests.fixtures.culler import CULLER_SCOPES, REPO_ROOT, HubDriver


async def test_managed_service_culls_logs_json_and_serves_metrics(tmp_path):
    port = free_port()
    culler_settings = {
        "cull_every": "1s", "known_profiles": ["gpu", "cpu"],
        "default_rule": {"idle": "never"}, "profile_rules": {"gpu": {"idle": "1s"}},
        "log_level": "DEBUG",
    }
    config = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
c.JupyterHub.spawner_class = "tests.fixtures.culler.InstantSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services.append({{
    "name": "kdash-culler", "url": "http://127.0.0.1:{port}",
    "command": [{sys.executable!r}, "-m", "kdash_hub.services.culler"],
}})
c.JupyterHub.load_roles.append({{
    "name": "kdash-culler", "scopes": {CULLER_SCOPES!r}, "services": ["kdash-culler"]}})
from kdash_hub.z2jh import apply_custom_config
apply_custom_config(c, {{"culler": {culler_settings!r}}},
                    service_config_dir={str(tmp_path)!r})
"""
    hub = await HubProcess(config, tmp_path / "hub").start()
    try:
        driver = HubDriver(hub, "")
        await driver.create_users("gina", "carl")
        await driver.spawn("gina", profile="gpu")
        await driver.spawn("carl", profile="cpu")
        for _ in range(300):
            if await driver.server("gina") is None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the culler did not stop gina's server:\n{hub.log_tail()}")
        assert await driver.server("carl") is not None

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{hub.url}/services/kdash-culler/metrics") as resp:
                assert resp.status == 200
                metrics = await resp.text()
        assert 'kdash_culler_culled_servers_total{profile="gpu",reason="idle"} 1.0' in metrics
        assert "kdash_culler_cycle_duration_seconds_count" in metrics

        lines = [json.loads(line) for line in hub.log_path.read_text().splitlines()
                 if line.startswith("{") and '"logger": "kdash_hub.services.culler"' in line]
        stopped = [x for x in lines if x.get("event") == "decision"
                   and x.get("outcome") == "stopped"]
        assert stopped and stopped[0]["user"] == "gina" and stopped[0]["profile"] == "gpu"
        assert stopped[0]["rule"] == "profile:gpu" and stopped[0]["idle_seconds"] >= 1
        kept = [x for x in lines if x.get("event") == "decision" and x.get("user") == "carl"]
        assert kept and kept[-1]["action"] == "keep"
    finally:
        await hub.stop()
