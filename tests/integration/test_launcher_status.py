"""Status rules of an instance (pure: built from the objects a list returns)."""

from kdash_hub import labels as L
from kdash_hub.services.launcher.records import STOPPED, InstanceRecord
from kdash_hub.services.launcher.status import ClusterView, instance_status

REC = InstanceRecord(namespace="ns", name="db", owner="alice", template="postgresql",
                     objects=[{"kind": "Deployment", "name": "db"},
                              {"kind": "Service", "name": "db"}])


def deployment(ready: int, replicas: int = 1) -> dict:
    return {"kind": "Deployment", "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def pod(waiting: str | None = None, phase: str = "Running") -> dict:
    status: dict = {"phase": phase}
    if waiting:
        status["containerStatuses"] = [{"state": {"waiting": {
            "reason": waiting, "message": "back-off pulling image"}}}]
    return {"metadata": {"name": "db-x", "namespace": "ns", "labels": {L.INSTANCE: "db"}},
            "status": status}


def event(reason: str, kind: str = "Pod", name: str = "db-x", etype: str = "Warning") -> dict:
    return {"metadata": {"namespace": "ns", "name": "e"}, "type": etype, "reason": reason,
            "message": f"{reason} happened", "involvedObject": {"kind": kind, "name": name}}


def status(workloads=(), pods=(), events=(), rec=REC):
    return instance_status(rec, ClusterView.build(list(workloads), list(pods), list(events)))


def test_ready_pending_failed_stopped():
    assert status([deployment(1)], [pod()]) == ("ready", "")
    assert status([deployment(0)], [pod()]) == ("pending", "starting")
    assert status([deployment(0)], [pod()], [event("FailedScheduling")]) == (
        "pending", "FailedScheduling: FailedScheduling happened")
    assert status([deployment(0)], [pod("ImagePullBackOff")]) == (
        "failed", "ImagePullBackOff: back-off pulling image")
    assert status([deployment(0)], [pod(phase="Failed")])[0] == "failed"
    assert status([deployment(0)], [], [event("FailedCreate", "Deployment", "db")]) == (
        "failed", "FailedCreate: FailedCreate happened")
    assert status([deployment(1)], [pod()], [event("Started", etype="Normal")])[0] == "ready"
    assert status([], []) == ("failed", "Deployment db is missing")
    stopped = InstanceRecord(**{**REC.__dict__, "state": STOPPED})
    assert status([deployment(0, 0)], [], rec=stopped)[0] == "stopped"


def test_events_of_other_instances_do_not_count():
    other = event("Failed", "Deployment", "someone-else")
    assert status([deployment(1)], [pod()], [other]) == ("ready", "")
