"""Lifetime bounds, choices, extensions and the culler's decision on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tornado import web

from kdash_hub.services.culler.decisions import Exemptions, decide_server, server_deadlines
from kdash_hub.services.culler.rules import RuleSet
from kdash_hub.spawner import chooser, lifetime, profiles

FLAVOR = {"slug": "t", "display_name": "Timed",
          "lifetime": {"min": "1h", "default": "8h", "max": "3d", "choices": ["8h", "1d", "9d"]}}


def test_bounds():
    b = lifetime.bounds(FLAVOR)
    assert (b.min, b.default, b.max) == (3600, 8 * 3600, 3 * 86400)
    assert b.choices == (8 * 3600, 86400, 3 * 86400)  # 9d is beyond max: dropped
    assert lifetime.bounds({"lifetime": {"max": "1d"}}).choices == (86400,)
    assert lifetime.bounds({"slug": "x"}) is None
    for bad in ({"max": "never"}, {"default": "1h"}, {"max": "1h", "default": "2h"},
                {"max": "1h", "min": "2h"}, "8h", {"max": "soon"}):
        with pytest.raises(lifetime.LifetimeError):
            lifetime.bounds({"slug": "x", "lifetime": bad})


def test_chosen():
    assert lifetime.chosen(FLAVOR, {}) == 8 * 3600
    assert lifetime.chosen(FLAVOR, {"lifetime": "1d"}) == 86400
    assert lifetime.chosen(FLAVOR, {"lifetime": 7200}) == 7200
    assert lifetime.chosen({"slug": "p"}, {}) is None
    assert lifetime.chosen(FLAVOR, {"lifetime": "1d 8h"}) == 32 * 3600  # the pack's grammar
    for bad in ("9999d", "4d", "59m", "never", "none", 0, "-1h", -5, 1.5, float("nan"),
                float("inf"), 1e308, True, [1], {"a": 1}, "x" * 41):
        with pytest.raises(web.HTTPError) as e:
            lifetime.chosen(FLAVOR, {"lifetime": bad})
        assert e.value.status_code == 400 and e.value.jupyterhub_message, bad


def test_extend_counts_from_the_start():
    now = 1_000_000.0
    life = lifetime.Lifetime("t", now - 3600, 8 * 3600)
    longer = lifetime.extend(life, FLAVOR, {"extend_by": "1d"}, now)
    assert longer.seconds == 8 * 3600 + 86400 and longer.started == life.started
    assert lifetime.extend(life, FLAVOR, {"lifetime": "3d"}, now).seconds == 3 * 86400
    steps = life
    for _ in range(64):  # many small steps end at max, not beyond
        try:
            steps = lifetime.extend(steps, FLAVOR, {"extend_by": "2h"}, now)
        except web.HTTPError as e:
            assert "can get 0s more" in e.jupyterhub_message
            break
    assert steps.seconds == 3 * 86400
    for body in ({"extend_by": "-1h"}, {"extend_by": "0"}, {"extend_by": "never"},
                 {"extend_by": "9999d"}, {"lifetime": "4d"}, {}, {"extend_by": "1h",
                                                                  "lifetime": "1d"},
                 {"lifetime": "30m"}):  # 30m from a start 1h ago: already past
        with pytest.raises(web.HTTPError) as e:
            lifetime.extend(life, FLAVOR, body, now)
        assert e.value.status_code == 400, body
    # the bound is the configuration's now: a flavor without a lifetime can't be extended
    with pytest.raises(web.HTTPError) as e:
        lifetime.extend(life, {"slug": "t"}, {"extend_by": "1h"}, now)
    assert e.value.status_code == 409


def test_state_round_trip_and_garbage():
    life = lifetime.Lifetime("t", 12.5, 3600)
    assert lifetime.Lifetime.from_state(life.to_state()) == life
    assert lifetime.Lifetime.from_state(None) is None
    assert lifetime.Lifetime.from_state({"flavor": "t"}) is None


def test_chooser_field():
    profile = profiles.to_profile(FLAVOR)
    profile["kdash_lifetime"] = lifetime.chooser_entry(FLAVOR)
    html = chooser.render([profile], [], {"profile": "t", "lifetime": "1d"})
    assert 'name="profile-option-t--lifetime"' in html
    assert '<option value="1d" selected>' in html
    html = chooser.render([profile], [], {"profile": "t", "lifetime": "9999d"})
    assert '<option value="8h" selected>' in html  # not offered: the default


def test_culler_stops_a_server_past_its_deadline_whatever_else_says():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rules = RuleSet.from_config({"idle": "never"}, {}, {}, None)
    user = {"name": "a", "admin": True, "groups": []}
    server = {"started": (now - timedelta(hours=2)).isoformat(), "ready": True,
              "last_activity": now.isoformat()}
    deadlines = server_deadlines([{"user": "a", "server": "", "deadline": "2026-01-01T00:00:00Z"},
                                  {"user": "b"}, "garbage"])
    assert list(deadlines) == [("a", "")]
    d = decide_server(user, "", server, rules, now, Exemptions(admins=True),
                      deadline=deadlines[("a", "")])
    assert (d.action, d.reason) == ("cull", "lifetime")
    d = decide_server(user, "", server, rules, now - timedelta(seconds=1), Exemptions(),
                      deadline=deadlines[("a", "")])
    assert (d.action, d.reason) == ("keep", "within-limits")
    assert d.extra["deadline"] == "2026-01-01T00:00:00+00:00"


def test_a_bad_lifetime_setting_fails_at_startup():
    from traitlets import TraitError

    from tests.fixtures.spawner import build_spawner

    with pytest.raises(TraitError, match=r"flavor t: lifetime.max must be a finite duration"):
        build_spawner(flavors=[{"slug": "t", "lifetime": {"max": "never"}}])
