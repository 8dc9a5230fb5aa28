"""The chooser's idle timeouts come from the settings the culler culls by: with the chart's
values (helm-values/values.yaml + examples/gpu-profiles.yaml) and a group rule, the line
the chooser shows for each flavor and user says what the culler's own RuleSet decides."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from kdash_hub import z2jh
from kdash_hub.durations import format_duration
from kdash_hub.services.culler.rules import RuleSet
from tests.fixtures.spawner import build_spawner

HELM = Path(__file__).resolve().parents[2] / "helm-values"


@pytest.mark.parametrize("groups", [[], ["gpu-users"], ["gpu-users", "long-jobs"]])
async def test_chooser_shows_the_culler_s_idle_timeouts(tmp_path, gpu_cluster, groups):
    custom = z2jh.merged_custom([HELM / "values.yaml", HELM / "examples" / "gpu-profiles.yaml"])
    custom["culler"]["group_rules"] = {"long-jobs": {"idle": "1d"}}
    c = Config()
    z2jh.apply_custom_config(c, custom, service_config_dir=tmp_path)
    culler = c.CullerApp
    rules = RuleSet.from_config(culler.default_rule, culler.profile_rules,
                                culler.group_rules, culler.known_profiles)
    spawner = build_spawner(username="ann", groups=groups, **dict(c.KDashSpawner))
    shown = {p["slug"]: p.get("kdash_idle") for p in await spawner._flavor_profiles()}
    assert shown, "no flavor for this user"
    for slug, line in shown.items():
        idle = rules.for_server(slug, groups).idle
        assert line == (f"Stopped after {format_duration(idle)} idle" if idle
                        else "Never stopped for being idle"), (slug, line)
    if "long-jobs" in groups:
        assert set(shown.values()) == {"Stopped after 1d idle"}
    form = await spawner._chooser_form()
    for line in shown.values():
        assert line in form
