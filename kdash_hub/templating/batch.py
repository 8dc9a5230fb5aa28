"""Batch work in templates: Jobs, CronJobs and Argo Workflows.

What makes them different from a Deployment: their pods are made from a template one (a
CronJob: two) levels down, which must carry the instance's labels so the launcher finds
them; a schedule that must be cron; and a finished Job that can clean itself up. The
checks run at load on literal values and again after substitution on what a user set.
"""

from __future__ import annotations

from typing import Any

from .cron import CronError, parse_cron

BATCH_KINDS = ("Job", "CronJob", "Workflow", "CronWorkflow")
ARGO_KINDS = ("Workflow", "CronWorkflow")
ARGO_API_VERSION = "argoproj.io/v1alpha1"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def pod_template_metadata(obj: dict) -> list[dict]:
    """The metadata mappings (made when missing) that every pod (and, for a CronJob, every
    Job) of a batch object is made from, so the instance's labels reach them."""
    kind, spec = obj.get("kind"), obj.get("spec")
    if not isinstance(spec, dict):
        return []
    if kind == "Job":
        template = spec.get("template")
        return [template.setdefault("metadata", {})] if isinstance(template, dict) else []
    if kind == "CronJob":
        job = spec.get("jobTemplate")
        if not isinstance(job, dict):
            return []
        found = [job.setdefault("metadata", {})]
        job_spec = job.get("spec")
        if isinstance(job_spec, dict) and isinstance(job_spec.get("template"), dict):
            found.append(job_spec["template"].setdefault("metadata", {}))
        return found
    if kind == "Workflow":
        return [spec.setdefault("podMetadata", {})]
    if kind == "CronWorkflow":
        found = [spec.setdefault("workflowMetadata", {})]
        wf_spec = spec.get("workflowSpec")
        if isinstance(wf_spec, dict):
            found.append(wf_spec.setdefault("podMetadata", {}))
        return found
    return []


def job_specs(obj: dict) -> list[dict]:
    """The Job specs of a Job or CronJob (for ttlSecondsAfterFinished)."""
    spec = _dict(obj.get("spec"))
    if obj.get("kind") == "Job":
        return [spec]
    if obj.get("kind") == "CronJob":
        job_spec = _dict(spec.get("jobTemplate")).get("spec")
        return [job_spec] if isinstance(job_spec, dict) else []
    return []


def _schedule_errors(schedule: Any, where: str, rendered: bool) -> list[str]:
    if not rendered and isinstance(schedule, str) and "$" in schedule:
        return []  # set by a variable: checked when rendered
    try:
        parse_cron(schedule)
    except CronError as e:
        return [f"{where}: {e}"]
    return []


def batch_errors(obj: dict, rendered: bool = True) -> list[str]:
    """What is wrong with a batch object (empty for other kinds). With `rendered` False
    (at load), values still holding a `$VARIABLE` are left for the render."""
    kind = obj.get("kind")
    spec = _dict(obj.get("spec"))
    errors: list[str] = []
    if kind == "Job":
        if not isinstance(spec.get("template"), dict):
            errors.append("a Job needs spec.template (the pod to run)")
    elif kind == "CronJob":
        errors += _schedule_errors(spec.get("schedule"), "spec.schedule", rendered)
        job_spec = _dict(spec.get("jobTemplate")).get("spec")
        if not isinstance(job_spec, dict) or not isinstance(job_spec.get("template"), dict):
            errors.append("a CronJob needs spec.jobTemplate.spec.template (the pod to run)")
    elif kind == "CronWorkflow":
        schedules = spec.get("schedules") or (
            [spec["schedule"]] if "schedule" in spec else [])
        if not isinstance(schedules, list) or not schedules:
            errors.append("a CronWorkflow needs spec.schedule (or spec.schedules)")
        else:
            for schedule in schedules:
                errors += _schedule_errors(schedule, "spec.schedule", rendered)
    for job_spec in job_specs(obj):
        if job_spec.get("manualSelector"):
            errors.append("manualSelector is not allowed: the launcher selects the pods")
    return errors


def cap_ttl_after_finished(obj: dict, cap: int | None) -> None:
    """A finished Job deletes itself after at most `cap` seconds (None: leave it)."""
    if cap is None:
        return
    for job_spec in job_specs(obj):
        ttl = job_spec.get("ttlSecondsAfterFinished")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= cap:
            job_spec["ttlSecondsAfterFinished"] = cap
