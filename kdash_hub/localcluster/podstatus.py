"""Pod status as the kubelet writes it: conditions and container statuses."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime, as Leases and Events carry it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def condition(kind: str, status: bool, now: str, reason: str | None = None,
               message: str | None = None) -> dict:
    cond = {"type": kind, "status": "True" if status else "False", "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def pod_conditions(now: str, *, ready: bool, reason: str | None = None) -> list[dict]:
    not_ready = None if ready else (reason or "ContainersNotReady")
    return [
        condition("PodReadyToStartContainers", True, now),
        condition("Initialized", True, now),
        condition("Ready", ready, now, not_ready),
        condition("ContainersReady", ready, now, not_ready),
        condition("PodScheduled", True, now),
    ]


def container_status(container: dict, state: dict, *, ready: bool, container_id: str | None,
                     started: bool) -> dict:
    image = container.get("image") or "unknown"
    status = {
        "name": container["name"], "image": image, "imageID": f"kdash-local://{image}",
        "ready": ready, "restartCount": 0, "started": started, "state": state,
    }
    if container_id:
        status["containerID"] = container_id
    return status
