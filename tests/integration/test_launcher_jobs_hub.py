"""Batch work through a real hub and the launcher's REST API and page (headless Chromium):
a bad schedule is a 400 that makes nothing, a Job is listed with its status and logs, a
CronJob's page shows its schedule and stop suspends it."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from kdash_hub import labels as L
from tests.fixtures.launcher import PASSWORD, home_claim
from tests.integration.test_launcher_ui import CHROMIUM_ARGS

USER = "dave"
NAMESPACE = "kdash-dave"


@pytest.fixture
async def dave_home(launcher_kube) -> None:
    """dave's namespace and home claim (templates mount it), as a first notebook start
    leaves them (the real tier's fixture made them already)."""
    await launcher_kube.ensure({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NAMESPACE, "labels": L.owner_labels(USER)}})
    await launcher_kube.ensure(home_claim(USER, NAMESPACE))


async def names(env) -> set[str]:
    status, listed = await env.call("GET", "instances", USER)
    assert status == 200
    return {i["name"] for i in listed["instances"]}


@pytest.mark.parametrize("values, words", [
    ({"SCHEDULE": "61 * * * *"}, "outside 0-59"),
    ({"SCHEDULE": "nightly"}, "spec.schedule"),
    ({"NAMESPACE": "kube-system"}, "NAMESPACE"),
    ({"SCHEDULE": "0 2 * * *", "EXTRA": "x"}, "EXTRA"),
])
async def test_bad_batch_input_is_a_400_and_creates_nothing(launcher_env, launcher_kube,
                                                             dave_home, values, words):
    env = launcher_env
    status, body = await env.call("POST", "instances", USER, json_body={
        "template": "nightly-script", "name": "bad-cron", "values": values})
    assert status == 400, body
    assert words in body["message"]
    assert "bad-cron" not in await names(env)
    assert await launcher_kube.get("CronJob", "bad-cron", NAMESPACE) is None


async def test_a_job_through_the_api_status_and_logs(launcher_env, dave_home):
    env = launcher_env
    status, info = await env.call("POST", "instances", USER, json_body={
        "template": "python-job", "name": "api-job", "ttl": "2h",
        "values": {"SCRIPT": "print('done')"}})
    assert status == 201, info
    done = await env.wait_status(USER, "api-job", "succeeded", within=180)
    assert done["status"] == "succeeded", done
    [job] = done["batch"]
    assert job["kind"] == "Job" and job["state"] == "succeeded" and job["completion_time"]
    assert [entry["container"] for entry in done["logs"]] == ["script"]
    # someone else: not found
    assert (await env.call("GET", f"instances/{USER}/api-job", "bob"))[0] == 404
    assert (await env.call("POST", f"instances/{USER}/api-job/stop", "bob"))[0] == 404
    assert (await env.call("DELETE", f"instances/{USER}/api-job", USER))[0] == 204


@pytest.mark.browser
async def test_a_cronjob_from_the_page(launcher_env, launcher_kube, dave_home):
    env = launcher_env
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(env.url)
            await page.fill("input[name=username]", USER)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launcher")
            await page.click("#new")
            await page.wait_for_selector("#catalog")
            await page.click("#template-nightly-script")
            await page.fill("#name", "page-cron")
            await page.fill("input[name=var_SCHEDULE]", "every night")
            await page.click("#launch")
            error = await page.text_content("#error")
            assert "spec.schedule" in error and "5" in error  # the 400, in the form
            assert await launcher_kube.get("CronJob", "page-cron", NAMESPACE) is None
            await page.fill("input[name=var_SCHEDULE]", "*/30 * * * *")
            await page.click("#launch")
            await page.wait_for_selector("#instance-name")
            assert "/instances/dave/page-cron" in page.url
            for _ in range(50):  # the first list after a launch may not have the CronJob yet
                if await page.locator("#batch").count():
                    break
                await page.wait_for_timeout(200)
                await page.reload()
            row = page.locator("#batch tr[data-kind=CronJob]")
            assert await row.locator(".batch-schedule").text_content() == "*/30 * * * *"
            assert await row.locator(".batch-state").text_content() == "scheduled"
            assert await page.text_content("#status") == "ready"
            await page.click("#stop")
            await page.wait_for_selector("#start")
            cron = await launcher_kube.get("CronJob", "page-cron", NAMESPACE)
            assert cron["spec"]["suspend"] is True
            await page.reload()
            assert await page.locator(
                "#batch tr[data-kind=CronJob] .batch-state").text_content() == "suspended"
            await page.goto(env.url)
            await page.wait_for_selector("#instances")
            listed = page.locator("#instances tr[data-name=page-cron]")
            assert "Scheduled script" in await listed.text_content()
        finally:
            await browser.close()
    assert (await env.call("DELETE", f"instances/{USER}/page-cron", USER))[0] == 204
    assert await launcher_kube.get("CronJob", "page-cron", NAMESPACE) is None
