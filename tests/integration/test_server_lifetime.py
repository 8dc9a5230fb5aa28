"""Server lifetimes on a real JupyterHub (+ proxy) with KDashSpawner, the pack's lifetime API
and home page, a local cluster in process mode, the culler and Chromium.

The user picks a lifetime within the flavor's bounds (anything else: 400, one sentence,
nothing created); the hub keeps the deadline; the owner extends it through the hub (never
beyond the flavor's `max`, counted from the start), nobody else can; the culler stops the
server once it is past, whatever the pod's labels and annotations say; dry-run stops nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.clock import ManualClock
from kdash_hub.services.culler.logs import LOGGER
from tests.fixtures.cluster import api_client_for
from tests.fixtures.culler import CULLER_SCOPES
from tests.fixtures.spawner import flavor_hub
from tests.integration.test_chooser_hub import call, default_server, login, stop, token_of
from tests.integration.test_spawner_hub import CHROMIUM_ARGS, START_TIMEOUT, wait_ready

CULLER_TOKEN = "kdash-lifetime-test-culler-token-0123456789"
FLAVORS = [
    {"slug": "timed", "display_name": "Timed", "default": True, "cpu_limit": 1,
     "lifetime": {"min": "1h", "default": "2h", "max": "4h", "choices": ["1h", "2h", "4h"]}},
    {"slug": "plain", "display_name": "Plain", "cpu_limit": 1},
]
EXTRA = f'''
from kdash_hub.spawner import lifetime_api
lifetime_api.install(c)
c.JupyterHub.services.append({{"name": "kdash-culler", "api_token": {CULLER_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "kdash-culler", "scopes": {CULLER_SCOPES!r},
                                "services": ["kdash-culler"]}})
'''
OUT_OF_BOUNDS = ("A lifetime of “{}” is out of bounds for Timed: it must be between 1h and "
                 "4h; choose 1h, 2h or 4h.")
NOT_A_LIFETIME = "“{}” is not a lifetime: choose 1h, 2h or 4h (or any duration between 1h and 4h)."


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with flavor_hub(tmp_path_factory.mktemp("kdash-lifetime-hub"), FLAVORS,
                    start_timeout=START_TIMEOUT, extra=EXTRA) as hub:
        yield hub


async def namespace_exists(hub, name: str) -> bool:
    async with api_client_for(hub.admin_kubeconfig) as client:
        return await KubeResources(client).get("Namespace", user_namespace(name, "kdash-")) \
            is not None


def culler(hub, clock, **settings):
    app = CullerApp(hub_api_url=hub.api_url, api_token=CULLER_TOKEN, retries=1,
                    backoff_base=0.01, opt_out_group="", default_rule={"idle": "never"},
                    **settings)
    return app.make_culler(clock=clock)


async def test_a_lifetime_out_of_bounds_is_refused_and_creates_nothing(hub):
    token = await token_of(hub, "olga")
    cases = [("9999d", OUT_OF_BOUNDS.format("9999d")), ("5h", OUT_OF_BOUNDS.format("5h")),
             ("30m", OUT_OF_BOUNDS.format("30m")), ("never", OUT_OF_BOUNDS.format("never")),
             (0, OUT_OF_BOUNDS.format("0")), (1.5, OUT_OF_BOUNDS.format("1.5")),
             (1e308, OUT_OF_BOUNDS.format("1e+308")),
             ("-2h", NOT_A_LIFETIME.format("-2h")), (-7200, NOT_A_LIFETIME.format("-7200")),
             ("2 hours please", NOT_A_LIFETIME.format("2 hours please")),
             ("1" * 60, NOT_A_LIFETIME.format("1" * 40 + "…")),
             ({"h": 2}, NOT_A_LIFETIME.format("{'h': 2}")),
             (True, NOT_A_LIFETIME.format("True"))]
    for value, sentence in cases:
        status, body = await call(hub, "POST", "/users/olga/server",
                                  {"profile": "timed", "lifetime": value}, token)
        assert (status, body["message"]) == (400, sentence), (value, body)
    status, body = await call(hub, "POST", "/users/olga/server",
                              {"profile": "plain", "lifetime": "2h"}, token)
    assert (status, body["message"]) == (
        400, "Plain has no lifetime to choose; start it without one."), body
    assert not await namespace_exists(hub, "olga")
    assert (await default_server(hub, "olga")).get("user_options", {}) == {}


async def test_extend_within_the_bound_only_by_the_owner_and_the_culler_enforces_it(
        hub, caplog):
    token = await token_of(hub, "lena")
    intruder = await token_of(hub, "mallory")
    status, body = await call(hub, "POST", "/users/lena/server",
                              {"profile": "timed", "lifetime": "1h"}, token)
    assert status in (201, 202), body
    server = await wait_ready(hub, "lena")
    started = datetime.now(UTC)
    status, life = await call(hub, "GET", "/kdash/lifetime/lena", token=token)
    assert status == 200, life
    assert life["lifetime_seconds"] == 3600 and life["max_seconds"] == 4 * 3600
    deadline = datetime.fromisoformat(life["deadline"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < deadline - started <= timedelta(hours=1)
    assert life["extend_choices"] == ["15m", "1h", "3h"]

    # someone else can neither read nor extend it; nor can an anonymous caller
    for method, body in (("GET", None), ("POST", {"extend_by": "1h"})):
        status, reply = await call(hub, method, "/kdash/lifetime/lena", body, intruder)
        assert status in (403, 404), reply
    async with __import__("aiohttp").ClientSession() as session:
        async with session.post(f"{hub.api_url}/kdash/lifetime/lena",
                                json={"extend_by": "1h"}) as resp:
            assert resp.status == 403
    # and mallory can't list every server's deadline (the culler can)
    assert (await call(hub, "GET", "/kdash/lifetimes", token=intruder))[0] == 403

    # the owner extends; bad amounts are refused
    for bad, why in (("-1h", "is not a duration to extend by"),
                     ("never", "is not a duration to extend by"),
                     ("9999d", "servers live at most 4h from their start"),
                     (float("1e308"), "servers live at most 4h from their start")):
        status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"extend_by": bad},
                                   token)
        assert status == 400 and why in reply["message"], (bad, reply)
    status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"lifetime": "5h"}, token)
    assert status == 400 and "can get 3h more at most" in reply["message"], reply
    status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"extend_by": "2h"}, token)
    assert status == 200 and reply["lifetime_seconds"] == 3 * 3600, reply
    # many small extensions: never past max, counted from the start
    for _ in range(4):  # 3h15m, 3h30m, 3h45m, 4h
        status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"extend_by": "15m"},
                                   token)
        assert status == 200, reply
    status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"extend_by": "15m"},
                               token)
    assert status == 400 and "can get 0s more at most" in reply["message"], reply
    status, life = await call(hub, "GET", "/kdash/lifetime/lena", token=token)
    assert life["lifetime_seconds"] == 4 * 3600 and life["extend_choices"] == []
    deadline = datetime.fromisoformat(life["deadline"].replace("Z", "+00:00"))

    # lena edits her pod's labels and annotations (she may, in her namespace): no effect
    async with api_client_for(hub.admin_kubeconfig) as client:
        kube = KubeResources(client)
        namespace = user_namespace("lena", "kdash-")
        pod = (await kube.list("Pod", namespace))[0]
        assert pod["metadata"]["annotations"]["kdash-hub.io/deadline"]  # informative only
        await kube.patch("Pod", pod["metadata"]["name"], namespace, {"metadata": {
            "annotations": {"kdash-hub.io/deadline": "2099-01-01T00:00:00Z",
                            "kdash-hub.io/idle-timeout": "never"},
            "labels": {"kdash-hub.io/profile": "plain"}}})

    # the culler, before the deadline: keeps it (with the deadline in its decision)
    clock = ManualClock(deadline - timedelta(seconds=5))
    report = await culler(hub, clock).run_once()
    mine = [d for d in report.decisions if d.user == "lena"]
    assert [(d.action, d.reason) for d in mine] == [("keep", "within-limits")], mine
    assert mine[0].extra["deadline"] == deadline.isoformat()
    # past it, in dry-run: says so, stops nothing
    clock.set(deadline + timedelta(seconds=1))
    caplog.set_level(logging.INFO, logger=LOGGER)
    report = await culler(hub, clock, dry_run=True).run_once()
    assert [(d.action, d.reason) for d in report.decisions if d.user == "lena"] == \
        [("cull", "lifetime")]
    assert report.stopped == []
    lines = [r.fields for r in caplog.records if getattr(r, "event", "") == "decision"
             and r.fields.get("user") == "lena"]
    assert lines and lines[-1]["reason"] == "lifetime" and \
        lines[-1]["outcome"] == "would-stop", lines
    assert (await default_server(hub, "lena")).get("ready")
    # for real
    report = await culler(hub, clock).run_once()
    assert "lena/" in report.stopped + report.pending, report
    for _ in range(300):
        if not (await default_server(hub, "lena")).get("ready"):
            break
        await asyncio.sleep(0.2)
    assert not (await default_server(hub, "lena")).get("ready")
    assert server["user_options"] == {"profile": "timed", "lifetime": "1h"}
    # a stopped server has no lifetime to extend
    status, reply = await call(hub, "POST", "/kdash/lifetime/lena", {"extend_by": "1h"}, token)
    assert status == 409, reply


async def extend_on_home(page, hub, step: str) -> None:
    await page.select_option("#kdash-extend-default", step)
    async with page.expect_navigation():
        await page.click("#kdash-lifetime-default form button[type=submit]")


@pytest.mark.browser
async def test_chooser_and_home_page_in_chromium(hub):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium")
                                          or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "nina")
            await page.goto(f"{hub.url}/hub/spawn")
            select = "#profile-option-timed--lifetime--select"
            await page.wait_for_selector(select)
            assert await page.eval_on_selector_all(
                f"{select} option", "os => os.map(o => o.value)") == ["1h", "2h", "4h"]
            assert await page.input_value(select) == "2h"  # the default
            assert await page.query_selector("#profile-option-plain--lifetime--select") is None
            # a value the form does not offer, forced in: refused with the sentence
            await page.eval_on_selector(select, "s => { s.options[0].value = '9999d'; "
                                                "s.selectedIndex = 0; }")
            await page.click("form input[type=submit], form button[type=submit]")
            # the hub's own error paragraph on the re-rendered form (page.html also holds a
            # hidden "ajax-error alert-danger" that a broader selector finds before navigation)
            error = await page.inner_text(".spawn-error-msg")
            assert error.strip() == "Error: " + OUT_OF_BOUNDS.format("9999d"), error
            assert await page.is_checked("#profile-item-timed")
            assert not await namespace_exists(hub, "nina")
            # 1h through the form
            await page.select_option(select, "1h")
            await page.click("form input[type=submit], form button[type=submit]")
            await page.wait_for_url(f"{hub.url}/user/nina/**",
                                    timeout=(START_TIMEOUT + 60) * 1000)
            await wait_ready(hub, "nina")
            await page.goto(f"{hub.url}/hub/home")
            box = "#kdash-lifetime-default"
            await page.wait_for_selector(box)
            text = " ".join((await page.inner_text(box)).split())
            assert text.startswith("Your server stops at ") and "(in " in text, text
            first = await page.get_attribute(f"{box} time", "datetime")
            await extend_on_home(page, hub, "3h")
            text = " ".join((await page.inner_text(box)).split())
            assert "It has reached its longest lifetime." in text, text
            later = await page.get_attribute(f"{box} time", "datetime")
            assert datetime.fromisoformat(later.replace("Z", "+00:00")) - \
                datetime.fromisoformat(first.replace("Z", "+00:00")) == timedelta(hours=3)
            assert await page.query_selector(f"{box} form") is None
            await stop(hub, "nina")
            await page.goto(f"{hub.url}/hub/home")
            assert await page.query_selector(box) is None
        finally:
            await browser.close()
