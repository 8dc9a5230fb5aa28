"""A minimal controller-manager: the controllers whose absence clients would notice.

- namespaces get their `default` ServiceAccount and `kube-root-ca.crt` ConfigMap;
- PersistentVolumeClaims without a class get the default StorageClass and are bound to a
  dynamically "provisioned" PersistentVolume;
- Deployments, StatefulSets, ReplicaSets and ReplicationControllers get `spec.replicas`
  Pods (a StatefulSet with the default OrderedReady policy creates ordinal i once 0..i-1
  are Ready), Jobs get Pods until they succeed, and their status follows the Pods' phases
  and Ready conditions;
- CronJobs get a Job (named `<cronjob>-<minutes since the epoch>`, from `jobTemplate`) at
  each time of their 5-field schedule (the latest one missed, once; `suspend`,
  `concurrencyPolicy` Forbid/Replace, `startingDeadlineSeconds`, `timeZone` and the
  history limits are followed), and `status.active`/`lastScheduleTime`/`lastSuccessfulTime`;
- finished Jobs with `spec.ttlSecondsAfterFinished` are deleted (propagation Background, the
  Job's UID as precondition) once that many seconds have passed since the `lastTransitionTime`
  of their Complete/Failed condition, as kube-controller-manager's ttl-after-finished
  controller does; a TTL set or changed after the Job finished counts from that same time.

Simplification (documented): a Deployment owns its Pods directly; there are no
ReplicaSets in between. Pods carry an ownerReference to their workload (controller: true),
so garbage collection deletes them with it. A template change replaces the Pods.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kdash_hub.templating.cron import parse_cron

from . import resources
from .copying import deep_copy
from .resources import ResourceType
from .status import APIError
from .store import Event

if TYPE_CHECKING:
    from .operations import Operations

log = logging.getLogger(__name__)
_WORKLOADS = ("Deployment", "StatefulSet", "Job", "ReplicaSet", "ReplicationController")
DEFAULT_STORAGE_CLASS = "standard"
_ROOT_CA = "-----BEGIN CERTIFICATE-----\nkdash-local-cluster\n-----END CERTIFICATE-----\n"


def _t(kind: str) -> ResourceType:
    t = resources.by_kind(kind)
    assert t is not None
    return t


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_hash(template: Any) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class Controllers:
    def __init__(self, ops: Operations, workloads: bool = True):
        self.ops = ops
        self.workloads = workloads
        self._pending: set[tuple[str, str, str]] = set()
        self._handle: asyncio.Handle | None = None
        self._cron_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._ttl_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._stopped = False
        ops.after_write.append(self._after_write)
        ops.store.listeners.append(self._on_event)
        self._ensure_storage_class()

    def start(self) -> None:
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True
        if self._handle:
            self._handle.cancel()
        for timers in (self._cron_timers, self._ttl_timers):
            for timer in timers.values():
                timer.cancel()
            timers.clear()

    # ---------------------------------------------------------------- synchronous bits

    def _ensure_storage_class(self) -> None:
        sc = _t("StorageClass")
        if self.ops.store.raw(sc, None, DEFAULT_STORAGE_CLASS) is None:
            self.ops.create(sc, None, {
                "metadata": {"name": DEFAULT_STORAGE_CLASS, "annotations": {
                    "storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kdash.local/hostpath", "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate"})

    def _after_write(self, verb: str, rtype: ResourceType, obj: dict) -> None:
        if verb == "create" and rtype.kind == "Namespace":
            ns = obj["metadata"]["name"]
            for kind, body in (
                ("ServiceAccount", {"metadata": {"name": "default"}}),
                ("ConfigMap", {"metadata": {"name": "kube-root-ca.crt"},
                               "data": {"ca.crt": _ROOT_CA}}),
            ):
                try:
                    self.ops.create(_t(kind), ns, body)
                except APIError:
                    pass
        if verb == "create" and rtype.kind == "PersistentVolumeClaim":
            try:
                self._bind_claim(obj)
            except (TypeError, AttributeError, ValueError):
                pass  # a malformed claim (schema validation off) just stays Pending

    def _bind_claim(self, pvc: dict) -> None:
        spec = pvc.get("spec") or {}
        if spec.get("volumeName"):
            return
        meta = pvc["metadata"]
        pv_name = f"pvc-{meta['uid']}"
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv_spec: dict[str, Any] = {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or DEFAULT_STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": f"/var/lib/kdash/volumes/{pv_name}"},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"}}
        try:
            self.ops.create(_t("PersistentVolume"), None, {
                "metadata": {"name": pv_name}, "spec": pv_spec,
                "status": {"phase": "Bound"}})
        except APIError:
            return
        pvc_t = _t("PersistentVolumeClaim")
        current = self.ops.store.raw(pvc_t, meta["namespace"], meta["name"])
        if current is None:
            return
        new = deep_copy(current)
        new["spec"]["volumeName"] = pv_name
        new["spec"].setdefault("storageClassName", DEFAULT_STORAGE_CLASS)
        new["status"] = {"phase": "Bound", "accessModes": pv_spec["accessModes"],
                         "capacity": {"storage": size}}
        self.ops.store.put(pvc_t, new, "MODIFIED", current)

    # ---------------------------------------------------------------- workloads (async)

    def _on_event(self, ev: Event) -> None:
        if not self.workloads or self._stopped:
            return
        kind = ev.rtype.kind
        meta = ev.obj["metadata"]
        if kind == "CronJob":
            self._schedule(kind, meta.get("namespace", ""), meta["name"])
        if kind in _WORKLOADS:
            self._schedule(kind, meta.get("namespace", ""), meta["name"])
            for ref in meta.get("ownerReferences") or []:
                if ref.get("controller") and ref.get("kind") == "CronJob":
                    self._schedule("CronJob", meta.get("namespace", ""), ref["name"])
        elif kind == "Pod":
            for ref in meta.get("ownerReferences") or []:
                if ref.get("controller") and ref.get("kind") in _WORKLOADS:
                    self._schedule(ref["kind"], meta.get("namespace", ""), ref["name"])

    def _schedule(self, kind: str, ns: str, name: str) -> None:
        self._pending.add((kind, ns, name))
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._handle = loop.call_soon(self._run)

    def _run(self) -> None:
        self._handle = None
        pending, self._pending = self._pending, set()
        for kind, ns, name in sorted(pending):
            if self._stopped:
                return
            obj = self.ops.store.raw(_t(kind), ns, name)
            if obj is None:
                timers = {"CronJob": self._cron_timers, "Job": self._ttl_timers}.get(kind, {})
                timer = timers.pop((ns, name), None)
                if timer is not None:
                    timer.cancel()
                continue
            try:
                getattr(self, f"_reconcile_{kind.lower()}")(obj)
            except APIError as err:
                # e.g. quota or PodSecurity refused the pod; the next event retries
                self._failed_create(kind, obj, err)
            except (TypeError, AttributeError, ValueError, KeyError):
                log.warning("can't reconcile malformed %s %s/%s", kind, ns, name)

    def _failed_create(self, kind: str, owner: dict, err: APIError) -> None:
        """A Warning event `FailedCreate` on the workload, as the real controllers record
        (counted up, not repeated, while the same error persists)."""
        meta = owner["metadata"]
        ns = meta.get("namespace", "")
        event_t = _t("Event")
        name = f"{meta['name']}.failedcreate-{meta.get('uid', '')[:8]}"
        message = f"Error creating: {err.message}"
        stamp = _now()
        try:
            current = self.ops.store.raw(event_t, ns, name)
            if current is not None:
                if current.get("message") == message:
                    body = deep_copy(current)
                    body["count"] = int(body.get("count") or 1) + 1
                    body["lastTimestamp"] = stamp
                    self.ops.update(event_t, ns, name, body)
                    return
                self.ops.delete(event_t, ns, name)
            api_version = _t(kind).api_version
            self.ops.create(event_t, ns, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": kind, "apiVersion": api_version, "namespace": ns,
                                   "name": meta["name"], "uid": meta.get("uid", "")},
                "reason": "FailedCreate", "type": "Warning", "message": message,
                "source": {"component": f"{kind.lower()}-controller"},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1})
        except APIError as e:
            log.warning("can't record FailedCreate for %s %s/%s: %s", kind, ns, meta["name"],
                        e.message)

    def _owned_pods(self, owner: dict) -> list[dict]:
        return [o for t, o in self.ops.gc.dependents(owner) if t.kind == "Pod"]

    def _pod_body(self, owner: dict, kind: str, name: str | None = None,
                  generate: str | None = None, extra_labels: dict | None = None) -> dict:
        tmpl = deep_copy((owner.get("spec") or {}).get("template") or {})
        meta = tmpl.get("metadata") or {}
        meta.pop("name", None)
        meta["labels"] = {**(meta.get("labels") or {}), **(extra_labels or {})}
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = generate
        meta["ownerReferences"] = [{
            "apiVersion": _t(kind).api_version, "kind": kind,
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": tmpl.get("spec") or {}}

    def _set_status(self, kind: str, owner: dict, status: dict) -> None:
        if owner.get("status") == status:
            return
        new = deep_copy(owner)
        new["status"] = status
        self.ops.store.put(_t(kind), new, "MODIFIED", owner)

    @staticmethod
    def _ready(pod: dict) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    def _delete_pod(self, pod: dict) -> None:
        try:
            self.ops.delete(_t("Pod"), pod["metadata"]["namespace"], pod["metadata"]["name"])
        except APIError:
            pass

    def _reconcile_deployment(self, dep: dict) -> None:
        if dep["metadata"].get("deletionTimestamp"):
            return
        ns = dep["metadata"]["namespace"]
        spec = dep.get("spec") or {}
        want = int(spec.get("replicas", 1))
        h = template_hash(spec.get("template"))
        pods = [p for p in self._owned_pods(dep) if not p["metadata"].get("deletionTimestamp")]
        for p in pods:
            if (p["metadata"].get("labels") or {}).get("pod-template-hash") != h:
                self._delete_pod(p)
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(
            "pod-template-hash") == h]
        pods.sort(key=lambda p: p["metadata"]["creationTimestamp"])
        for p in pods[want:]:
            self._delete_pod(p)
        pods = pods[:want]
        for _ in range(want - len(pods)):
            pods.append(self.ops.create(_t("Pod"), ns, self._pod_body(
                dep, "Deployment", generate=f"{dep['metadata']['name']}-{h}-",
                extra_labels={"pod-template-hash": h})))
        ready = sum(1 for p in pods if self._ready(p))
        status: dict[str, Any] = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(pods), "updatedReplicas": len(pods),
            "conditions": [{"type": "Available",
                            "status": "True" if ready >= want else "False",
                            "reason": "MinimumReplicasAvailable" if ready >= want
                            else "MinimumReplicasUnavailable"}]}
        if ready:
            status["readyReplicas"] = status["availableReplicas"] = ready
        if len(pods) - ready:
            status["unavailableReplicas"] = len(pods) - ready
        self._set_status("Deployment", dep, status)

    def _reconcile_replicaset(self, rs: dict) -> None:
        self._reconcile_replicas("ReplicaSet", rs)

    def _reconcile_replicationcontroller(self, rc: dict) -> None:
        self._reconcile_replicas("ReplicationController", rc)

    def _reconcile_replicas(self, kind: str, owner: dict) -> None:
        """ReplicaSet / ReplicationController: `spec.replicas` pods from the template,
        the newest deleted first when there are too many (no adoption of orphans)."""
        if owner["metadata"].get("deletionTimestamp"):
            return
        ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
        spec = owner.get("spec") or {}
        want = int(spec.get("replicas", 1))
        pods = [p for p in self._owned_pods(owner) if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        pods.sort(key=lambda p: p["metadata"]["creationTimestamp"])
        for p in pods[want:]:
            self._delete_pod(p)
        pods = pods[:want]
        for _ in range(want - len(pods)):
            pods.append(self.ops.create(_t("Pod"), ns, self._pod_body(
                owner, kind, generate=f"{name}-")))
        ready = sum(1 for p in pods if self._ready(p))
        status: dict[str, Any] = {"replicas": len(pods)}
        if pods:
            status["fullyLabeledReplicas"] = len(pods)
        if ready:
            status["readyReplicas"] = status["availableReplicas"] = ready
        status["observedGeneration"] = owner["metadata"].get("generation", 1)
        self._set_status(kind, owner, status)

    def _reconcile_statefulset(self, sts: dict) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        spec = sts.get("spec") or {}
        want = int(spec.get("replicas", 1))
        h = template_hash(spec.get("template"))
        pods = {p["metadata"]["name"]: p for p in self._owned_pods(sts)
                if not p["metadata"].get("deletionTimestamp")}
        pvc_t = _t("PersistentVolumeClaim")
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        blocked = False  # OrderedReady: ordinal i waits until 0..i-1 are Running and Ready
        for i in range(want):
            pod_name = f"{name}-{i}"
            existing = pods.pop(pod_name, None)
            if existing is not None and (existing["metadata"].get("labels") or {}).get(
                    "controller-revision-hash") == f"{name}-{h}":
                blocked = blocked or (ordered and not self._ready(existing))
                continue
            if existing is not None:
                self._delete_pod(existing)
                blocked = blocked or ordered
                continue  # recreated on the next event
            if blocked:
                continue
            for claim in spec.get("volumeClaimTemplates") or []:
                cname = f"{claim['metadata']['name']}-{pod_name}"
                if self.ops.store.raw(pvc_t, ns, cname) is None:
                    body = deep_copy(claim)
                    body["metadata"] = {"name": cname, "labels": (
                        (spec.get("selector") or {}).get("matchLabels") or {})}
                    body.pop("status", None)
                    self.ops.create(pvc_t, ns, body)
            body = self._pod_body(sts, "StatefulSet", name=pod_name, extra_labels={
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(i),
                "controller-revision-hash": f"{name}-{h}"})
            body["spec"]["hostname"] = pod_name
            if spec.get("serviceName"):
                body["spec"]["subdomain"] = spec["serviceName"]
            vols = body["spec"].setdefault("volumes", [])
            for claim in spec.get("volumeClaimTemplates") or []:
                cn = claim["metadata"]["name"]
                if not any(v.get("name") == cn for v in vols):
                    vols.append({"name": cn, "persistentVolumeClaim": {
                        "claimName": f"{cn}-{pod_name}"}})
            self.ops.create(_t("Pod"), ns, body)
            blocked = ordered
        for extra in pods.values():  # scale down: ordinals >= replicas
            self._delete_pod(extra)
        current = [p for p in self._owned_pods(sts) if not p["metadata"].get(
            "deletionTimestamp")]
        ready = sum(1 for p in current if self._ready(p))
        status: dict[str, Any] = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(current), "currentReplicas": len(current),
            "updatedReplicas": len(current), "currentRevision": f"{name}-{h}",
            "updateRevision": f"{name}-{h}", "collisionCount": 0,
            "availableReplicas": ready}
        if ready:
            status["readyReplicas"] = ready
        self._set_status("StatefulSet", sts, status)

    def _reconcile_job(self, job: dict) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        ns = job["metadata"]["namespace"]
        spec = job.get("spec") or {}
        status = deep_copy(job.get("status") or {})
        if _job_end(job) is not None:
            self._ttl_after_finished(job)
            return
        pods = self._owned_pods(job)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in (
            "Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")]
        completions = int(spec.get("completions", 1))
        from .operations import now

        status.setdefault("startTime", now())
        if succeeded >= completions:
            status["completionTime"] = now()
            status["conditions"] = [{"type": "Complete", "status": "True",
                                     "lastTransitionTime": now()}]
        elif failed > int(spec.get("backoffLimit", 6)):
            status["conditions"] = [{"type": "Failed", "status": "True",
                                     "reason": "BackoffLimitExceeded",
                                     "lastTransitionTime": now()}]
        elif not spec.get("suspend"):
            want = min(int(spec.get("parallelism", 1)), completions - succeeded)
            for _ in range(want - len(active)):
                active.append(self.ops.create(_t("Pod"), ns, self._pod_body(
                    job, "Job", generate=f"{job['metadata']['name']}-")))
        for key, n in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if n:
                status[key] = n
            else:
                status.pop(key, None)
        if status.get("conditions"):
            status.pop("active", None)
        status["ready"] = sum(1 for p in active if self._ready(p))
        self._set_status("Job", job, status)

    def _ttl_after_finished(self, job: dict) -> None:
        """The ttl-after-finished controller: delete a finished Job `ttlSecondsAfterFinished`
        after it finished, or look again then (one timer per Job, replaced on each event, so
        a TTL changed or removed later counts)."""
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self._ttl_timers.pop(key, None)
        if old is not None:
            old.cancel()
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished = _finish_time(job)
        if ttl is None or finished is None:
            return  # no TTL; or no finish time, which the real controller logs and skips
        left = (finished - datetime.now(UTC)).total_seconds() + int(ttl)
        if left <= 0:
            try:
                self.ops.delete(_t("Job"), key[0], key[1], {
                    "propagationPolicy": "Background", "preconditions": {"uid": meta["uid"]}})
                log.info("Job %s/%s deleted %ss after it finished (ttlSecondsAfterFinished)",
                         key[0], key[1], ttl)
            except APIError as err:  # gone, or replaced by a Job of the same name
                log.debug("TTL of Job %s/%s: %s", key[0], key[1], err.message)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ttl_timers[key] = loop.call_later(left + 0.05, self._schedule, "Job", *key)


    # ---------------------------------------------------------------- CronJobs

    def _reconcile_cronjob(self, cj: dict) -> None:
        meta = cj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if meta.get("deletionTimestamp"):
            return
        spec = cj.get("spec") or {}
        status = deep_copy(cj.get("status") or {})
        zone = ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else UTC
        schedule = parse_cron(spec.get("schedule"))
        now = datetime.now(UTC)
        jobs = [o for t, o in self.ops.gc.dependents(cj) if t.kind == "Job"]
        active = [j for j in jobs if _job_end(j) is None
                  and not j["metadata"].get("deletionTimestamp")]
        done_at = [((j.get("status") or {}).get("completionTime") or "")
                   for j in jobs if _job_end(j) == "Complete"]
        if any(done_at):
            status["lastSuccessfulTime"] = max(done_at)
        last = _parse_time(status.get("lastScheduleTime") or meta["creationTimestamp"])
        due = schedule.next_after(last.astimezone(zone))
        if not spec.get("suspend") and due <= now:
            for _ in range(1000):  # the latest time missed, as the real controller does
                following = schedule.next_after(due)
                if following > now:
                    break
                due = following
            deadline = spec.get("startingDeadlineSeconds")
            late = deadline is not None and (now - due).total_seconds() > int(deadline)
            policy = spec.get("concurrencyPolicy") or "Allow"
            if not late and not (policy == "Forbid" and active):
                if policy == "Replace":
                    for job in active:
                        self._delete_job(job)
                    active = []
                active.append(self._cron_job(cj, due))
                status["lastScheduleTime"] = due.astimezone(UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
        if active:
            status["active"] = [{"kind": "Job", "apiVersion": "batch/v1", "namespace": ns,
                                 "name": j["metadata"]["name"], "uid": j["metadata"]["uid"]}
                                for j in active]
        else:
            status.pop("active", None)
        self._cron_history(jobs, spec)
        self._set_status("CronJob", cj, status)
        self._cron_timer(ns, name, schedule.next_after(max(now, due).astimezone(zone)))

    def _cron_job(self, cj: dict, when: datetime) -> dict:
        """The Job of one scheduled time (made once: its name is the time)."""
        meta = cj["metadata"]
        template = deep_copy((cj.get("spec") or {}).get("jobTemplate") or {})
        job_meta = template.get("metadata") or {}
        name = f"{meta['name']}-{int(when.timestamp()) // 60}"
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": name, "labels": job_meta.get("labels") or {},
            "annotations": {**(job_meta.get("annotations") or {}),
                            "batch.kubernetes.io/cronjob-scheduled-timestamp":
                                when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                 "name": meta["name"], "uid": meta["uid"],
                                 "controller": True, "blockOwnerDeletion": True}]},
            "spec": template.get("spec") or {}}
        try:
            return self.ops.create(_t("Job"), meta["namespace"], body)
        except APIError as err:
            existing = self.ops.store.raw(_t("Job"), meta["namespace"], name)
            if existing is None:
                raise
            log.debug("CronJob %s: %s", meta["name"], err.message)
            return existing

    def _cron_history(self, jobs: list[dict], spec: dict) -> None:
        """Only the newest successfulJobsHistoryLimit (3) / failedJobsHistoryLimit (1)."""
        for end, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                           ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            ended = sorted((j for j in jobs if _job_end(j) == end),
                           key=lambda j: (j["metadata"].get("creationTimestamp", ""),
                                          j["metadata"]["name"]))
            for job in ended[:max(0, len(ended) - int(limit))]:
                self._delete_job(job)

    def _delete_job(self, job: dict) -> None:
        try:
            self.ops.delete(_t("Job"), job["metadata"]["namespace"], job["metadata"]["name"],
                            {"propagationPolicy": "Background"})  # as the CronJob controller
        except APIError:
            pass

    def _cron_timer(self, ns: str, name: str, when: datetime) -> None:
        """Look at the CronJob again at its next time (one timer per CronJob)."""
        old = self._cron_timers.pop((ns, name), None)
        if old is not None:
            old.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.05
        self._cron_timers[(ns, name)] = loop.call_later(
            delay, self._schedule, "CronJob", ns, name)


def _job_end(job: dict) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None


def _finish_time(job: dict) -> datetime | None:
    """When a finished Job finished: its Complete/Failed condition's lastTransitionTime."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            try:
                return _parse_time(cond["lastTransitionTime"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))
