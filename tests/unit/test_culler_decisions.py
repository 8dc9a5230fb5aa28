"""Decisions for one server or user, and what a server's own status says."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from kdash_hub.services.culler.activity import server_activity
from kdash_hub.services.culler.decisions import (
    Exemptions,
    decide_server,
    decide_user,
    opt_out_servers,
)
from kdash_hub.services.culler.logs import JSONFormatter
from kdash_hub.services.culler.rules import RuleSet

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RULES = RuleSet.from_config({"idle": "8h"}, {"gpu": {"idle": "1h", "max_age": "8h"}}, {},
                            ["gpu", "cpu"])


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def server(idle_min: float, age_min: float, **kw) -> dict:
    return {"last_activity": iso(NOW - timedelta(minutes=idle_min)),
            "started": iso(NOW - timedelta(minutes=age_min)), "ready": True,
            "pending": None, "url": "/user/a/", "user_options": {"profile": "gpu"}, **kw}


USER = {"name": "a", "admin": False, "groups": []}


def test_idle_age_and_keep():
    d = decide_server(USER, "", server(61, 90), RULES, NOW, Exemptions())
    assert (d.action, d.reason, d.profile, d.rule) == ("cull", "idle", "gpu", "profile:gpu")
    assert d.idle_seconds == 61 * 60 and d.age_seconds == 90 * 60
    d = decide_server(USER, "", server(5, 8 * 60 + 1), RULES, NOW, Exemptions())
    assert (d.action, d.reason) == ("cull", "max_age")
    d = decide_server(USER, "", server(59, 60), RULES, NOW, Exemptions())
    assert (d.action, d.reason) == ("keep", "within-limits")
    cpu = server(61, 90, user_options={"profile": "cpu"})
    assert decide_server(USER, "", cpu, RULES, NOW, Exemptions()).action == "keep"
    # a form's list value and a missing profile
    listed = server(61, 90, user_options={"profile": ["gpu"]})
    assert decide_server(USER, "", listed, RULES, NOW, Exemptions()).profile == "gpu"
    none = server(61, 90, user_options={})
    assert decide_server(USER, "", none, RULES, NOW, Exemptions()).profile == "none"


def test_pending_and_not_ready_are_skipped():
    d = decide_server(USER, "", server(600, 600, pending="stop"), RULES, NOW, Exemptions())
    assert (d.action, d.reason) == ("skip", "pending-stop")
    d = decide_server(USER, "", server(600, 600, ready=False), RULES, NOW, Exemptions())
    assert (d.action, d.reason) == ("skip", "not-ready")


def test_no_last_activity_uses_started():
    d = decide_server(USER, "", server(0, 70, last_activity=None), RULES, NOW, Exemptions())
    assert (d.action, d.idle_seconds) == ("cull", 70 * 60)


def test_server_activity_counts_when_newer():
    d = decide_server(USER, "", server(120, 130), RULES, NOW, Exemptions(),
                      last_activity=NOW - timedelta(minutes=10))
    assert d.action == "keep" and d.idle_seconds == 600
    # an older server activity doesn't make it idler
    d = decide_server(USER, "", server(10, 130), RULES, NOW, Exemptions(),
                      last_activity=NOW - timedelta(hours=5))
    assert d.idle_seconds == 600


def test_exemptions():
    admin = {**USER, "admin": True}
    idle = server(600, 600)
    assert decide_server(admin, "", idle, RULES, NOW, Exemptions()).action == "cull"
    assert decide_server(admin, "", idle, RULES, NOW, Exemptions(admins=True)).reason == \
        "exempt-admin"
    staff = {**USER, "groups": ["staff"]}
    assert decide_server(staff, "", idle, RULES, NOW,
                         Exemptions(groups=frozenset({"staff"}))).reason == "exempt-group"
    out = opt_out_servers({"properties": {"servers": ["a", "b/gpu"]}})
    assert out == frozenset({"a/", "b/gpu"})
    assert decide_server(USER, "", idle, RULES, NOW, Exemptions(servers=out)).reason == "opt-out"
    assert decide_server(USER, "x", idle, RULES, NOW, Exemptions(servers=out)).action == "cull"
    assert opt_out_servers(None) == frozenset()
    assert opt_out_servers({"properties": {"servers": "a"}}) == frozenset()


def test_users():
    old = {"name": "u", "admin": False, "groups": [], "servers": {},
           "last_activity": iso(NOW - timedelta(days=40)), "created": iso(NOW - timedelta(days=90))}
    assert decide_user(old, NOW, 30 * 86400, []).action == "cull"
    assert decide_user({**old, "admin": True}, NOW, 30 * 86400, []).reason == "admin"
    assert decide_user({**old, "groups": ["g"]}, NOW, 30 * 86400, ["g"]).reason == "exempt-group"
    assert decide_user(old, NOW, 60 * 86400, []).action == "keep"
    fresh = {**old, "last_activity": None, "created": iso(NOW - timedelta(days=1))}
    assert decide_user(fresh, NOW, 30 * 86400, []).action == "keep"
    running = {**old, "servers": {"": {"ready": True}}}
    assert decide_user(running, NOW, 30 * 86400, []).reason == "has-server"


def test_server_status_reading():
    status = {"last_activity": "2026-01-01T11:00:00.000000Z", "connections": 0, "kernels": 2,
              "started": "2026-01-01T08:00:00Z"}
    kernels = [{"execution_state": "idle", "last_activity": "2026-01-01T11:30:00Z"},
               {"execution_state": "busy", "last_activity": "2026-01-01T10:00:00Z"}]
    a = server_activity(status, kernels)
    assert a.last_activity == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    assert a.busy_kernels == 1 and a.in_use
    a = server_activity({**status, "connections": 1})
    assert a.in_use and a.last_activity == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert not server_activity({**status, "kernels": 0}).in_use


def test_json_log_line():
    record = logging.LogRecord("kdash_hub.services.culler", logging.INFO, __file__, 1,
                               "decision", None, None)
    record.event = "decision"
    record.fields = {"user": "a", "server": "", "profile": "gpu", "idle_seconds": 3660.0,
                     "action": "cull"}
    line = json.loads(JSONFormatter().format(record))
    assert line["event"] == "decision" and line["user"] == "a" and line["level"] == "info"
    assert line["idle_seconds"] == 3660.0 and "time" in line
