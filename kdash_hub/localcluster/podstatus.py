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


def pod_conditions(now: str, *, ready: bool, reason: str | None = None,
                   sandbox: bool = True, unready: list[str] | None = None) -> list[dict]:
    """The conditions a kubelet reports; `sandbox` False before the volumes are mounted
    (PodReadyToStartContainers), `unready` names the containers that aren't ready."""
    not_ready = None if ready else (reason or "ContainersNotReady")
    message = None
    if not ready and not_ready == "ContainersNotReady" and unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
    return [
        condition("PodReadyToStartContainers", sandbox, now),
        condition("Initialized", True, now),
        condition("Ready", ready, now, not_ready, message),
        condition("ContainersReady", ready, now, not_ready, message),
        condition("PodScheduled", True, now),
    ]


def keep_transition_times(old: list[dict] | None, new: list[dict]) -> list[dict]:
    """A condition whose status didn't change keeps its lastTransitionTime."""
    before = {c.get("type"): c for c in old or []}
    for cond in new:
        previous = before.get(cond["type"])
        if previous and previous.get("status") == cond["status"] and previous.get(
                "lastTransitionTime"):
            cond["lastTransitionTime"] = previous["lastTransitionTime"]
    return new


def container_status(container: dict, state: dict, *, ready: bool, container_id: str | None,
                     started: bool, restart_count: int = 0,
                     last_state: dict | None = None) -> dict:
    """A containerStatus. A container that hasn't run yet has no container or image ID
    and is never `started`."""
    image = container.get("image") or "unknown"
    created = bool(container_id) and "waiting" not in state or bool(last_state)
    status = {
        "name": container["name"], "image": image,
        "imageID": f"kdash-local://{image}" if created else "",
        "ready": ready, "restartCount": restart_count,
        "started": started and "running" in state, "state": state,
    }
    if container_id and (created or "waiting" not in state):
        status["containerID"] = container_id
    if last_state:
        status["lastState"] = last_state
    return status


def pod_phase(spec: dict, statuses: list[dict]) -> str:
    """The phase the kubelet derives from its containers' states (its getPhase):
    a container that never ran keeps the pod Pending; one that ended and will restart
    (waiting with a last state) counts as stopped; all stopped: by restartPolicy."""
    running = waiting = stopped = succeeded = unknown = 0
    by_name = {s.get("name"): s for s in statuses}
    for container in spec.get("containers") or []:
        status = by_name.get(container.get("name"))
        if status is None:
            unknown += 1
            continue
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif "waiting" in state:
            if (status.get("lastState") or {}).get("terminated"):
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    if waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        policy = spec.get("restartPolicy") or "Always"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"
