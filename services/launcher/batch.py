"""Batch instances (Jobs, CronJobs, Argo Workflows): their status, their runs' pods, and
whether the cluster serves Argo at all.

A Job's pods and a CronJob's Jobs carry the instance's labels (the render puts them on the
templates they are made from), so the lists the launcher fetches anyway hold them: no extra
request per instance. A CronJob's logs are its latest run's.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.kube import KubeResources
from kdash_hub.templating.batch import ARGO_API_VERSION, ARGO_KINDS

from .records import InstanceRecord
from .status import ClusterView

SUSPENDABLE = ("Job", "CronJob", *ARGO_KINDS)


class BatchUnavailable(Exception):
    """The template holds kinds this cluster doesn't serve (Argo without its CRDs)."""


async def check_served(kube: KubeResources, kinds: set[str]) -> None:
    """Raise BatchUnavailable when a template's Argo kinds aren't served here (discovery:
    `/apis/argoproj.io/v1alpha1`, which any authenticated client may read)."""
    wanted = {k for k in kinds if k in ARGO_KINDS}
    if not wanted:
        return
    try:
        found = await kube.request("GET", f"/apis/{ARGO_API_VERSION}")
    except ApiException as e:
        if e.status not in (403, 404):
            raise
        found = {}
    served = {r.get("kind") for r in (found or {}).get("resources") or []
              if isinstance(r, dict) and "/" not in str(r.get("name", ""))}
    missing = sorted(wanted - served)
    if missing:
        raise BatchUnavailable(
            f"this template runs Argo Workflows ({', '.join(missing)}), which this cluster"
            " doesn't have (no argoproj.io/v1alpha1 API): ask an admin to install Argo"
            " Workflows' CRDs, or use a Job or CronJob template instead. Nothing was created.")


def _when(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _owner_name(obj: dict, kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            return ref.get("name")
    return None


def cron_runs(view: ClusterView, rec: InstanceRecord, cronjob: str) -> list[dict]:
    """The Jobs a CronJob of the instance made, oldest first."""
    runs = [job for (ns, kind, _), job in view.workloads.items()
            if ns == rec.namespace and kind == "Job"
            and _owner_name(job, "CronJob") == cronjob]
    return sorted(runs, key=lambda j: (j["metadata"].get("creationTimestamp") or "",
                                       j["metadata"]["name"]))


def job_state(job: dict) -> str:
    """active, succeeded, failed or suspended (a Job's own words, from its status)."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return "succeeded" if cond["type"] == "Complete" else "failed"
    if spec.get("suspend"):
        return "suspended"
    return "active"


def _job_summary(job: dict) -> dict[str, Any]:
    status = job.get("status") or {}
    return {"name": job["metadata"]["name"], "state": job_state(job),
            "active": status.get("active") or 0, "succeeded": status.get("succeeded") or 0,
            "failed": status.get("failed") or 0,
            "start_time": _when(status.get("startTime")),
            "completion_time": _when(status.get("completionTime"))}


def batch_summary(rec: InstanceRecord, view: ClusterView) -> list[dict[str, Any]]:
    """One entry per Job/CronJob of the instance: what it is doing and when it ran."""
    found: list[dict[str, Any]] = []
    for obj in rec.objects:
        kind, name = obj["kind"], obj["name"]
        if kind == "Job":
            job = view.workloads.get((rec.namespace, "Job", name))
            found.append({"kind": kind, **(_job_summary(job) if job else {
                "name": name, "state": "deleted", "active": 0, "succeeded": 0,
                "failed": 0, "start_time": None, "completion_time": None})})
        elif kind == "CronJob":
            cron = view.workloads.get((rec.namespace, "CronJob", name))
            spec, status = (cron or {}).get("spec") or {}, (cron or {}).get("status") or {}
            runs = cron_runs(view, rec, name)
            found.append({
                "kind": kind, "name": name, "present": cron is not None,
                "schedule": spec.get("schedule"), "suspended": bool(spec.get("suspend")),
                "last_schedule_time": _when(status.get("lastScheduleTime")),
                "last_successful_time": _when(status.get("lastSuccessfulTime")),
                "active": len(status.get("active") or []),
                "last_run": _job_summary(runs[-1]) if runs else None})
    return found


def batch_status(rec: InstanceRecord, view: ClusterView) -> tuple[str, str] | None:
    """The status of an instance made only of batch work (None for any other): running,
    succeeded, failed, finished (a Job gone after its ttlSecondsAfterFinished) or ready (a
    CronJob waiting for its schedule)."""
    kinds = {o["kind"] for o in rec.objects if o["kind"] in SUSPENDABLE}
    if not kinds or rec.workloads:
        return None
    summary = batch_summary(rec, view)
    for item in summary:
        if item["kind"] == "Job" and item["state"] == "failed":
            return "failed", f"Job {item['name']} failed ({item['failed']} failed pods)"
        if item["kind"] == "CronJob" and not item["present"]:
            return "failed", f"CronJob {item['name']} is missing"
    jobs = [i for i in summary if i["kind"] == "Job"]
    crons = [i for i in summary if i["kind"] == "CronJob"]
    if any(j["state"] == "active" for j in jobs):
        running = next(j for j in jobs if j["state"] == "active")
        return "running", f"Job {running['name']}: {running['active']} active"
    if crons:
        cron = crons[0]
        last = cron["last_run"]
        when = cron["last_schedule_time"] or "not yet"
        if cron["active"]:
            return "running", f"CronJob {cron['name']}: a run is active (started {when})"
        if last and last["state"] == "failed":
            return "failed", f"CronJob {cron['name']}: its last run {last['name']} failed"
        return "ready", f"runs on schedule {cron['schedule']!r}; last run: {when}"
    if jobs and all(j["state"] == "succeeded" for j in jobs):
        done = max((j["completion_time"] or "" for j in jobs), default="")
        return "succeeded", f"completed {done}".strip()
    if jobs and all(j["state"] in ("succeeded", "deleted") for j in jobs):
        return "finished", "finished and cleaned up (ttlSecondsAfterFinished)"
    return None


def log_pods(rec: InstanceRecord, view: ClusterView, pods: list[dict]) -> list[dict]:
    """The pods whose logs to show: a CronJob's only from its latest run; the rest as they
    are."""
    latest: dict[str, str] = {}
    for obj in rec.objects:
        if obj["kind"] == "CronJob":
            runs = cron_runs(view, rec, obj["name"])
            if runs:
                latest[obj["name"]] = runs[-1]["metadata"]["name"]
    cron_jobs = {job["metadata"]["name"]: _owner_name(job, "CronJob")
                 for (ns, kind, _), job in view.workloads.items()
                 if ns == rec.namespace and kind == "Job" and _owner_name(job, "CronJob")}
    shown = []
    for pod in pods:
        job = _owner_name(pod, "Job")
        cron = cron_jobs.get(job or "")
        if cron is not None and latest.get(cron) != job:
            continue
        shown.append(pod)
    return shown


def _pods_of(obj: dict) -> list[dict]:
    """The pod templates of a Job or CronJob, as pods."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if obj.get("kind") == "CronJob":
        job = spec.get("jobTemplate") if isinstance(spec.get("jobTemplate"), dict) else {}
        spec = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    elif obj.get("kind") != "Job":
        return []
    template = spec.get("template")
    if not isinstance(template, dict):
        return []
    return [{"metadata": template.get("metadata") or {}, "spec": template.get("spec") or {}}]


def pod_security_problems(objects: list[dict], namespace: dict | None) -> list[str]:
    """What the namespace's Pod Security level (`pod-security.kubernetes.io/enforce`) would
    refuse in the pods of the launch's Jobs and CronJobs (privileged containers, hostPath,
    host namespaces...). For workloads the API server only warns and the Job then fails
    pod after pod; checked here, the user gets the reason at once and nothing is made. The
    checks are the local cluster's Pod Security Admission, the one the parity suite holds
    to the real plugin."""
    from kdash_hub.localcluster.apiserver.podsecurity import forbidden_reason

    problems = []
    for obj in objects:
        for pod in _pods_of(obj):
            reason = forbidden_reason(pod, namespace)
            if reason:
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: its pods would"
                                f" be refused ({reason})")
    return problems


def suspend_patch(kind: str, suspend: bool) -> dict:
    """Stop/start of batch work: every kind here pauses with `spec.suspend`."""
    return {"spec": {"suspend": suspend}}
