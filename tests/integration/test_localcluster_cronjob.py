"""The emulator's CronJob controller beyond the schedule the parity suite checks: the
latest missed time runs once, Forbid waits for the active run, the history limits, suspend.

Driven through the API (the status subresource sets a past lastScheduleTime, so nothing
waits for the clock's next minute)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kdash_hub.kube import KubeResources
from tests.fixtures.polling import eventually

NS = "cron-test"


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def cronjob(**spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "c", "namespace": NS},
            "spec": {"schedule": "* * * * *", "suspend": True, "jobTemplate": {
                "metadata": {"labels": {"run": "c"}},
                "spec": {"suspend": True, "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}, **spec}}


async def jobs(kube: KubeResources) -> list[dict]:
    return [j for j in await kube.list("Job", NS)
            if not j["metadata"].get("deletionTimestamp")]


async def test_missed_runs_forbid_history_and_suspend(bare_apiserver):
    _, kube = bare_apiserver
    await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    made = await kube.create(cronjob(concurrencyPolicy="Forbid",
                                     successfulJobsHistoryLimit=2))
    uid = made["metadata"]["uid"]
    await asyncio.sleep(0.3)
    assert await jobs(kube) == []  # suspended: nothing runs
    past = datetime.now(UTC).replace(second=0) - timedelta(minutes=30)
    await kube.patch("CronJob", "c", NS, {"status": {"lastScheduleTime": stamp(past)}},
                     subresource="status")
    await kube.patch("CronJob", "c", NS, {"spec": {"suspend": False}})
    # thirty minutes missed: one run, of the latest missed minute
    [run] = await eventually(lambda: jobs(kube), "a scheduled Job", interval=0.1)
    minute = int(run["metadata"]["name"].rsplit("-", 1)[1])
    now_minute = int(datetime.now(UTC).timestamp()) // 60
    assert now_minute - 1 <= minute <= now_minute
    assert run["metadata"]["labels"] == {"run": "c"}
    assert run["metadata"]["ownerReferences"][0]["uid"] == uid
    cron = await kube.get("CronJob", "c", NS)
    assert [a["name"] for a in cron["status"]["active"]] == [run["metadata"]["name"]]

    # Forbid: while that run is active (its Job is suspended), the next minute is skipped
    await kube.patch("CronJob", "c", NS, {"status": {"lastScheduleTime": stamp(past)}},
                     subresource="status")
    await asyncio.sleep(0.5)
    assert [j["metadata"]["name"] for j in await jobs(kube)] == [run["metadata"]["name"]]

    # history: only the newest successfulJobsHistoryLimit (2) finished runs are kept
    for n in range(3):
        job = await kube.create({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"c-{n}", "namespace": NS, "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": uid,
                "controller": True}]},
            "spec": {"suspend": True, "template": cron["spec"]["jobTemplate"]["spec"][
                "template"]}})
        await kube.patch("Job", job["metadata"]["name"], NS, {"status": {
            "conditions": [{"type": "Complete", "status": "True"}],
            "completionTime": stamp(datetime.now(UTC))}}, subresource="status")

    async def trimmed():
        names = {j["metadata"]["name"] for j in await jobs(kube)}
        return names if "c-0" not in names else None

    names = await eventually(trimmed, "the history trimmed", interval=0.1)
    assert names == {"c-1", "c-2", run["metadata"]["name"]}
    cron = await kube.get("CronJob", "c", NS)
    assert cron["status"]["lastSuccessfulTime"]
