"""The emulated kubelet (and scheduler) of the local cluster: one client of the API over HTTP.

It registers the Node objects, watches every pod (relisting on 410, re-watching when the
stream drops) and drives each pod through its life the way the real components do:

- an unbound pod is scheduled (`scheduler.Placement`, in cycles: the pods that came since
  the last cycle are placed against one read of the nodes) and bound with the `binding`
  subresource (event `Scheduled`), or stays Pending with `PodScheduled=False/Unschedulable`
  and a `FailedScheduling` event, and is retried when pods go away (and every few seconds);
- a bound pod is set up as a real kubelet does it, pessimistically: its volumes must mount
  (else `FailedMount`, ContainerCreating, retried; `volumes.py`), then it gets a pod IP
  from its node's /24 (127.A.B.x on the loopback, or 10.244.R.x with a network namespace
  per process pod: `podnetwork.py`, whose resolv.conf then points at the node's cluster DNS:
  `clusterdns.py`), `Pulling`/`Pulled`, its containers' environment must
  resolve (else CreateContainerConfigError), then `Created`, `Started` and a status whose
  phase and conditions follow the containers' states (`podstatus.py`);
- in process mode, notebook containers run as real processes (`processes.py`), supervised
  like a kubelet's containers (`containers.py`): probes, restartPolicy with the crash-loop
  back-off, CRI-format logs (`containerlogs.py`); so do containers whose image's program
  this machine has (postgres, redis, tensorboard: `imageprograms.py`). Other pods (minio,
  ...) are status only, in both modes, unless annotated `localcluster.kdash-hub.io/run-as-
  process: "true"` (then their commands run too), as their securityContext users
  (`podsandbox.py`); in process mode a pod condition can name the containers that run
  nothing (`flag_idle_containers`);
  `open_log` and `start_exec` serve the emulator's `pods/log` and `pods/exec`, and a real
  API server's through the kubelet API (`kubeletserver.py`);
- a status-only pod owned by a Job succeeds (exit code 0) `job_pod_seconds` after it starts,
  so Jobs complete;
- a pod with a deletionTimestamp has its processes stopped (SIGTERM, SIGKILL after the
  grace period, at least 2 s like the kubelet's minimum) and is then deleted for good
  (grace period 0).

Every Node of the cluster is "run" by this one kubelet, including nodes others create.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import aiohttp

from . import containerlogs, imageprograms, podsandbox, processes, volumes
from .apiclient import MERGE_PATCH, ApiError, KubeHTTP, WatchExpired
from .containers import BACKOFF_SECONDS, Backoff, ContainerRunner
from .eventrecorder import EventRecorder
from .nodes import NodeSpec, PodNetwork, node_object, node_ready
from .podstatus import (
    condition,
    container_status,
    keep_transition_times,
    now_iso,
    now_micro,
    pod_conditions,
    pod_phase,
)
from .scheduler import TERMINAL_PHASES, Placement

log = logging.getLogger("kdash_hub.localcluster.kubelet")

KubeletMode = Literal["status", "process"]
MIN_GRACE_SECONDS = 2.0
RETRY_SECONDS = 5.0
START_TIMEOUT_SECONDS = 30.0
JOB_POD_SECONDS = 0.5
# a refused read of a pod's Secret or ConfigMap is asked again after these pauses (_lookup)
LOOKUP_RETRY_PAUSES = (0.02, 0.04, 0.08, 0.16)
BIND_RETRY_SECONDS = 1.0  # a failed binding's pod is queued again: the scheduler's first back-off


def pod_key(pod: dict) -> str:
    return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"


# variables that name a path inside the container: a process pod has no mount namespace of
# its own for volumes, so they are rewritten under the pod's root; so is any variable whose
# value is a path in one of the container's volume mounts (KDASH_SERVICES_DIR,
# AWS_CONFIG_FILE, RCLONE_CONFIG... pointing at the files a Secret volume holds)
CONTAINER_PATH_VARIABLES = ("HOME", "JUPYTERHUB_ROOT_DIR")


def container_path_variables(container: dict, env: dict[str, str]) -> list[str]:
    """The variables of `env` that name a path inside the container (see above)."""
    mounts = [PurePosixPath(m["mountPath"]) for m in container.get("volumeMounts") or []
              if str(m.get("mountPath", "")).startswith("/")]
    names = [var for var in CONTAINER_PATH_VARIABLES if var in env]
    for var, value in env.items():
        if var in names or not value.startswith("/"):
            continue
        path = PurePosixPath(value)
        if any(path == mount or mount in path.parents for mount in mounts):
            names.append(var)
    return names


@dataclass
class PodRun:
    """What the kubelet runs for one pod (by uid)."""

    uid: str
    key: str
    node: str
    ip: str
    host_ip: str
    started_at: str
    container_ids: dict[str, str] = field(default_factory=dict)  # status-only containers
    runners: dict[str, ContainerRunner] = field(default_factory=dict)  # process containers
    monitor: asyncio.Task | None = None
    writer: asyncio.Task | None = None  # writes the status of a process pod
    status_dirty: bool = False
    conditions: list[dict] | None = None  # as last written (their transition times)
    stopping: bool = False
    finished: bool = False
    netns: str | None = None  # the pod's network namespace (podnetwork.py), if it has one
    files: dict[str, Path] = field(default_factory=dict)  # /etc files of its own (its DNS)
    released: bool = False  # its address went back to the network


class PodStreamError(Exception):
    """Logs or exec can't be served; `status` is the HTTP code the API server answers."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


def _scheduler_name(pod: dict) -> str:
    """Who signs scheduling events: this scheduler stands in for every schedulerName (z2jh's
    user-scheduler included), so a pod never waits for a scheduler that isn't there."""
    return (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"


def _owned_by_job(pod: dict) -> bool:
    return any(ref.get("kind") == "Job"
               for ref in pod["metadata"].get("ownerReferences") or [])


def _make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


class Kubelet:
    """Registers nodes, schedules and runs pods; see the module docstring."""

    def __init__(
        self,
        api_url: str,
        nodes: list[NodeSpec],
        *,
        mode: KubeletMode = "status",
        token: str | None = "kdash-kubelet",
        workdir: Path | None = None,
        retry_seconds: float = RETRY_SECONDS,
        job_pod_seconds: float = JOB_POD_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        schedule_pods: bool = True,
        heartbeat_seconds: float | None = None,
        network: PodNetwork | None = None,
        default_uid: int = podsandbox.NOBODY,
        serving_cert: tuple[Path, Path, Path] | None = None,
        flag_idle_containers: bool = False,
    ):
        if mode not in ("status", "process"):
            raise ValueError(f"kubelet mode must be 'status' or 'process', not {mode!r}")
        self.api = KubeHTTP(api_url, token, ssl_context=ssl_context)
        # on the emulator this kubelet is also the scheduler; beside a real kube-scheduler
        # it is one node's agent: it sees only its node's pods (as the Node authorizer
        # allows) and renews its Lease and Ready condition like a real kubelet
        self.schedule_pods = schedule_pods
        self.heartbeat_seconds = heartbeat_seconds
        if not schedule_pods and len(nodes) != 1:
            raise ValueError("a kubelet beside a real scheduler runs exactly one node")
        self.node_specs = list(nodes)
        self.mode = mode
        self.network = network or PodNetwork()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kdash-kubelet-"))
        # process mode as root: each pod's processes run as its securityContext user (the
        # uid when it sets none: `default_uid`), seeing only their own directories
        self.default_uid = default_uid
        # the kubelet API for a real API server's pods/log and pods/exec: (certificate,
        # key, client CA); served on the node's address (kubeletserver.py)
        self.serving_cert = serving_cert
        # process mode: a condition on pods whose containers run nothing here (the demo's
        # "can't run on this local cluster"); off where status-only pods stand in for real
        # ones (the tests' side services)
        self.flag_idle_containers = flag_idle_containers
        self.server: Any = None
        self.kubelet_port = 10250
        # NetworkPolicies enforced on process pods in network namespaces (netpolicy.py)
        self.netpolicy: Any = None
        # their cluster DNS on the node addresses (clusterdns.py)
        self.dns: Any = None
        self.sandbox = (podsandbox.Sandbox.for_kubelet(self.workdir)
                        if mode == "process" else None)
        # how often pods that can't start yet (unschedulable, a missing secret) are retried
        self.retry_seconds = retry_seconds
        # how long a status-only pod of a Job "runs" before it succeeds
        self.job_pod_seconds = job_pod_seconds
        self._config_errors: dict[str, str] = {}  # pod key -> last config error reported
        self._mount_errors: dict[str, list[str]] = {}  # pod key -> volumes it can't mount
        self._images: set[tuple[str, str]] = set()  # (node, image) pulled already
        self.recorder = EventRecorder(self.api)
        self._start_attempts: dict[str, int] = {}  # pod key -> failed set-ups in a row
        # the crash-loop back-off's first delay (doubled up to 5 min), as the kubelet's
        self.backoff_seconds = BACKOFF_SECONDS
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopped = False
        self.pods: dict[str, dict] = {}
        self.runs: dict[str, PodRun] = {}
        self._assumed: dict[str, str] = {}  # pod key -> node, bound but not yet seen
        self._unschedulable: dict[str, str] = {}  # pod key -> last FailedScheduling message
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}  # pod key -> failed attempts in a row
        self._workers: dict[str, asyncio.Task] = {}
        self._to_schedule: dict[str, None] = {}  # pod keys for the next scheduling cycle
        self._schedule_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._synced = asyncio.Event()
        self.relists = 0
        self.rewatches = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.serving_cert is not None:
            await self._serve()
        for spec in self.node_specs:
            await self.register_node(spec)
        if self.mode == "process":
            from .netpolicy import agent_for

            self.netpolicy = agent_for(self.network, self.api)
            if self.netpolicy is not None:
                await self.netpolicy.start()
            from .clusterdns import dns_for

            self.dns = dns_for(self.network, self.api, lambda: list(self.pods.values()))
        self.recorder.start()
        self._tasks.append(asyncio.create_task(self._watch_pods(), name="kubelet-watch"))
        self._tasks.append(asyncio.create_task(self._retry_loop(), name="kubelet-retry"))
        if self.schedule_pods:
            self._tasks.append(asyncio.create_task(self._scheduling_loop(),
                                                   name="kubelet-scheduler"))
        if self.heartbeat_seconds:
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(),
                                                   name="kubelet-heartbeat"))
        try:
            await asyncio.wait_for(self._synced.wait(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"the kubelet could not list pods from {self.api.url} "
                               f"in {START_TIMEOUT_SECONDS}s") from None

    async def _serve(self) -> None:
        from .kubeletserver import KubeletServer

        assert self.serving_cert is not None
        cert, key, client_ca = self.serving_cert
        self.network.ensure_host_address()
        self.server = KubeletServer(self, self.network.host_ip(self.node_specs[0].name),
                                    cert=cert, key=key, client_ca=client_ca)
        self.kubelet_port = await self.server.start()

    async def stop(self) -> None:
        """Stop watching and every process (pods keep their last status)."""
        self._stopped = True
        if self.server is not None:
            await self.server.stop()
        for handle in self._timers:
            handle.cancel()
        for task in self._tasks + list(self._workers.values()):
            task.cancel()
        for task in self._tasks + list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._workers.clear()
        await asyncio.gather(*(self._stop_run(run, MIN_GRACE_SECONDS)
                               for run in list(self.runs.values())), return_exceptions=True)
        self.runs.clear()
        await self.recorder.stop()  # the Events of the pods just stopped too
        if self.netpolicy is not None:
            await self.netpolicy.stop()
        if self.dns is not None:
            await self.dns.stop()
        await self.api.close()
        if self.sandbox is not None:
            self.sandbox.close()
        await self.network.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def register_node(self, spec: NodeSpec) -> dict:
        """Create the Node (or take over an existing one) and post its status."""
        obj = node_object(spec, self.network, self.kubelet_port)
        try:
            created = await self.api.request("POST", "/api/v1/nodes", body=obj)
        except ApiError as e:
            if e.status != 409:
                raise
            created = await self.api.request("GET", f"/api/v1/nodes/{spec.name}")
        if (created.get("status") or {}).get("allocatable") != obj["status"]["allocatable"]:
            created = await self.api.request(
                "PATCH", f"/api/v1/nodes/{spec.name}/status",
                body={"status": obj["status"]}, content_type=MERGE_PATCH,
            )
        return created

    async def _heartbeat_loop(self) -> None:
        """Renew each node's Lease and Ready condition, so the node lifecycle controller
        of a real control plane keeps the node Ready (and untainted)."""
        assert self.heartbeat_seconds
        while True:
            for spec in self.node_specs:
                try:
                    await self._heartbeat(spec)
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.info("heartbeat of node %s failed: %s", spec.name, e)
            await asyncio.sleep(self.heartbeat_seconds)

    async def _heartbeat(self, spec: NodeSpec) -> None:
        status = node_object(spec, self.network, self.kubelet_port)["status"]
        await self.api.request(
            "PATCH", f"/api/v1/nodes/{spec.name}/status",
            body={"status": {"conditions": status["conditions"]}}, content_type=MERGE_PATCH)
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{spec.name}"
        now = now_micro()
        try:
            await self.api.request("PATCH", path, body={"spec": {"renewTime": now}},
                                   content_type=MERGE_PATCH)
        except ApiError as e:
            if e.status != 404:
                raise
            await self.api.request(
                "POST", path.rsplit("/", 1)[0], body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": spec.name, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": spec.name,
                             "leaseDurationSeconds": int(4 * self.heartbeat_seconds),
                             "renewTime": now}})

    # --- the pod watch -----------------------------------------------------------------

    def _pod_selector(self) -> dict[str, str]:
        """Beside a real scheduler: only the pods bound to this kubelet's node."""
        if self.schedule_pods:
            return {}
        return {"fieldSelector": f"spec.nodeName={self.node_specs[0].name}"}

    async def _relist(self) -> str:
        listing = await self.api.request("GET", "/api/v1/pods", params=self._pod_selector())
        self.relists += 1
        fresh = {pod_key(p): p for p in listing.get("items") or []}
        gone = set(self.pods) - set(fresh)
        self.pods = fresh
        for key in gone:  # deleted while we weren't watching
            for table in (self._assumed, self._unschedulable, self._config_errors):
                table.pop(key, None)
        for key in gone | set(fresh):
            self._enqueue(key)
        return listing["metadata"]["resourceVersion"]

    async def _watch_pods(self) -> None:
        resource_version: str | None = None
        delay = 0.05
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist()
                    self._synced.set()
                async for event in self.api.watch(
                    "/api/v1/pods",
                    {"resourceVersion": resource_version, "allowWatchBookmarks": True,
                     **self._pod_selector()},
                ):
                    delay = 0.05
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        resource_version = rv
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._observe(event["type"], obj)
                self.rewatches += 1
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("pod watch expired at %s; listing again", resource_version)
                resource_version = None
            except (aiohttp.ClientError, OSError, TimeoutError, ApiError, ValueError) as e:
                log.info("pod watch dropped (%s); watching again in %.2fs", e, delay)
                self.rewatches += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                if isinstance(e, ApiError) and e.status >= 500:
                    resource_version = None

    def _observe(self, kind: str, pod: dict) -> None:
        key = pod_key(pod)
        if kind == "DELETED":
            self.pods.pop(key, None)
            self._assumed.pop(key, None)
            self._unschedulable.pop(key, None)
            self._config_errors.pop(key, None)
            self._failures.pop(key, None)
            self._retry_pending()
        else:
            self.pods[key] = pod
            if (pod.get("spec") or {}).get("nodeName"):
                self._assumed.pop(key, None)
        self._enqueue(key)

    def _enqueue(self, key: str) -> None:
        if self._stopped:
            return
        self._dirty.add(key)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key), name=f"kubelet {key}")

    async def _work(self, key: str) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._reconcile(key)
                    self._failures.pop(key, None)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                    delay = min(0.1 * 2 ** failures, 5.0)  # back off, as the kubelet does
                    log.exception("kubelet: handling pod %s failed; retrying in %.1fs",
                                  key, delay)
                    await asyncio.sleep(delay)
                    if key in self.pods:
                        self._dirty.add(key)
        finally:
            self._workers.pop(key, None)

    def _retry_pending(self) -> None:
        for key in list(self._unschedulable):
            self._enqueue(key)

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_seconds)
            self._retry_pending()

    # --- one pod -----------------------------------------------------------------------

    async def _reconcile(self, key: str) -> None:
        pod = self.pods.get(key)
        run = self.runs.get(key)
        if pod is None:
            if run:
                await self._stop_run(run, 0)
            return
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if run and run.uid != meta.get("uid"):  # a new pod with the old one's name
            await self._stop_run(run, 0)
            run = None
        if meta.get("deletionTimestamp"):
            await self._finish_deletion(pod, run)
            return
        if (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
            if run and not run.finished:
                await self._stop_run(run, 0, forget=False)
            return
        if not spec.get("nodeName"):
            if self.schedule_pods:
                self._want_scheduled(key)
            return
        if run is None:
            await self._start_pod(pod)

    async def _finish_deletion(self, pod: dict, run: PodRun | None) -> None:
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        if run:
            if not run.stopping and not run.finished:
                for container in (pod.get("spec") or {}).get("containers") or []:
                    runner = run.runners.get(container["name"])
                    if (runner is None and container["name"] in run.container_ids) or (
                            runner is not None and "running" in runner.state):
                        self._event(pod, "Killing", f"Stopping container "
                                                    f"{container['name']}",
                                    field_path=f"spec.containers{{{container['name']}}}")
            await self._stop_run(run, max(float(grace), MIN_GRACE_SECONDS))
        if meta.get("finalizers"):
            return  # whoever owns the finalizer finishes the deletion
        with contextlib.suppress(ApiError):
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                      "preconditions": {"uid": meta["uid"]}},
            )

    async def _stop_run(self, run: PodRun, grace: float, *, forget: bool = True) -> None:
        run.stopping = True
        await asyncio.gather(*(r.stop(grace) for r in run.runners.values()),
                             return_exceptions=True)
        for task in (run.monitor, run.writer):
            if task and task is not asyncio.current_task() and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._release(run)
        run.finished = True
        if forget and self.runs.get(run.key) is run:
            del self.runs[run.key]
            self._retry_pending()  # resources were freed

    def _release(self, run: PodRun) -> None:
        """The pod's address (and network namespace) back to the network, once only: it may
        belong to another pod afterwards."""
        if not run.released:
            run.released = True
            if self.netpolicy is not None:
                self.netpolicy.forget(run.ip)
            self.network.release(run.ip)

    # --- scheduling --------------------------------------------------------------------

    def _want_scheduled(self, key: str) -> None:
        """Queue an unbound pod for the next scheduling cycle."""
        self._to_schedule[key] = None
        self._schedule_wanted.set()

    async def _scheduling_loop(self) -> None:
        """The scheduler's cycles: the pods queued since the last cycle are placed against
        one fresh read of the nodes, then bound together. Pods arriving at once share one
        read and one round of bindings instead of queueing behind each other's two round
        trips; a failed cycle is tried again, backing off."""
        failures = 0
        while True:
            await self._schedule_wanted.wait()
            self._schedule_wanted.clear()
            keys, self._to_schedule = list(self._to_schedule), {}
            try:
                await self._schedule_cycle(keys)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = min(0.1 * 2 ** failures, 5.0)
                log.exception("kubelet: scheduling %d pod(s) failed; retrying in %.1fs",
                              len(keys), delay)
                await asyncio.sleep(delay)
                for key in keys:
                    self._want_scheduled(key)

    def _unbound(self, keys: list[str]) -> dict[str, dict]:
        """The pods among `keys` still waiting for a node (not gone, bound, placed or being
        deleted), in order."""
        waiting = {}
        for key in keys:
            pod = self.pods.get(key)
            if pod is None or key in self._assumed or (pod.get("spec") or {}).get("nodeName") \
                    or pod["metadata"].get("deletionTimestamp"):
                continue
            waiting[key] = pod
        return waiting

    async def _schedule_cycle(self, keys: list[str]) -> None:
        if not self._unbound(keys):
            return
        listing = await self.api.request("GET", "/api/v1/nodes")
        waiting = self._unbound(keys)  # as the watch has it after the read
        view = [{**other, "spec": {**other.get("spec", {}), "nodeName": self._assumed[key]}}
                if key in self._assumed else other for key, other in self.pods.items()]
        placement = Placement([n for n in listing.get("items") or [] if node_ready(n)], view)
        outcomes = []
        for key, pod in waiting.items():  # in the order they came, as the queue's
            try:
                decision = placement.place(pod)
            except (ArithmeticError, TypeError, ValueError) as e:
                # a pod this scheduler cannot read waits alone; the cycle goes on
                outcomes.append(self._unschedulable_pod(
                    key, pod, f"the pod's resource requests cannot be read: {e}"))
                continue
            if decision.node is None:
                outcomes.append(self._unschedulable_pod(key, pod, decision.message))
            else:
                self._assumed[key] = decision.node  # counted by the next cycle already
                outcomes.append(self._bind(key, pod, decision.node))
        for key, outcome in zip(waiting, await asyncio.gather(*outcomes,
                                                               return_exceptions=True),
                                strict=True):
            if isinstance(outcome, Exception):  # one pod's report, not the others' cycle
                log.warning("kubelet: scheduling pod %s: %s", key, outcome)

    async def _bind(self, key: str, pod: dict, node: str) -> None:
        """Bind the pod to the node it was placed on; on failure forget the placement (the
        scheduler's "forget" of an assumed pod) and queue the pod again unless it is gone
        or someone else bound it (the watch tells)."""
        meta = pod["metadata"]
        try:
            await self.api.request(
                "POST",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                body={"apiVersion": "v1", "kind": "Binding",
                      "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
            )
        except Exception as e:
            if self._assumed.get(key) == node:
                del self._assumed[key]
            if isinstance(e, ApiError) and e.status in (404, 409):
                return
            log.warning("kubelet: binding pod %s to %s failed (%s); again in %.1fs",
                        key, node, e, BIND_RETRY_SECONDS)
            self._later(self._enqueue, key, delay=BIND_RETRY_SECONDS)
            return
        self._unschedulable.pop(key, None)
        self._event(pod, "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} "
                    f"to {node}", component=_scheduler_name(pod))

    async def _unschedulable_pod(self, key: str, pod: dict, message: str) -> None:
        previous = self._unschedulable.get(key)
        self._unschedulable[key] = message
        if previous == message:
            return
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self._patch_status(pod, {
                "phase": "Pending",
                "conditions": [condition("PodScheduled", False, now_iso(), "Unschedulable",
                                          message)],
            })
        self._event(pod, "FailedScheduling", message, kind="Warning",
                    component=_scheduler_name(pod))
        log.info("pod %s/%s unschedulable: %s", meta["namespace"], meta["name"], message)

    # --- running -----------------------------------------------------------------------

    async def _start_pod(self, pod: dict) -> None:
        """Set a bound pod up as a kubelet does: volumes (FailedMount until they can be
        mounted), the pod's address, images, each container's configuration
        (CreateContainerConfigError until it resolves), then its containers: processes in
        process mode, status only otherwise."""
        meta, spec = pod["metadata"], pod["spec"]
        key, node = pod_key(pod), spec["nodeName"]
        status = pod.get("status") or {}
        run_processes = self.mode == "process" and bool(processes.process_containers(pod))
        if status.get("phase") == "Running" and status.get("podIP") and not run_processes:
            # started before (by an earlier kubelet): adopt it as it is
            self.runs[key] = PodRun(meta["uid"], key, node, status["podIP"],
                                    status.get("hostIP", ""), status.get("startTime", ""),
                                    finished=True)
            return
        run = PodRun(meta["uid"], key, node, "", self.network.host_ip(node), now_iso())
        self.runs[key] = run
        try:
            problems = await volumes.check(pod, self._lookup)
            if problems:
                await self._mount_failed(pod, run, problems)
                return
            self._mount_errors.pop(key, None)
            ports = [p["containerPort"] for c in spec.get("containers") or []
                     for p in c.get("ports") or [] if "containerPort" in p
                     ] if run_processes else []
            # hostNetwork pods share the node's address, as on a real node
            run.ip = run.host_ip if spec.get("hostNetwork") else self.network.allocate(
                node, ports)
            if not run_processes and not spec.get("hostNetwork"):
                self.network.attach_host(run.ip)
            if run_processes and not spec.get("hostNetwork"):
                try:
                    run.netns = self.network.attach(run.ip)
                except RuntimeError as e:  # podnetwork.NetworkSetupError
                    self._event(pod, "FailedCreatePodSandBox", f"Failed to create pod "
                                f"sandbox: {e}", kind="Warning")
                    raise
                if self.netpolicy is not None:  # its rules before its first process
                    await self.netpolicy.admit(pod, run.ip)
                run.files = await self._pod_dns(pod, run)
            for container in spec.get("containers") or []:
                self._image_events(pod, run, container)
            if run_processes:
                await self._start_processes(pod, run)
                return
            try:
                for container in spec.get("containers") or []:
                    await self._container_env(pod, run, container)
            except processes.ContainerConfigError as e:
                await self._config_error(pod, run, spec.get("containers") or [], str(e))
                return
            self._config_errors.pop(key, None)
            self._start_attempts.pop(key, None)
            for container in spec.get("containers") or []:
                self._container_events(pod, container["name"])
            run.container_ids = {c["name"]: f"kdash://{secrets.token_hex(32)}"
                                 for c in spec.get("containers") or []}
            await self._patch_status(pod, self._running_status(pod, run, ready=True))
        except Exception:
            await self._stop_run(run, 0)  # the next attempt starts from scratch
            raise
        if _owned_by_job(pod):
            # a Job's pod runs its command and ends; with nothing running, it ends now
            run.monitor = asyncio.create_task(self._complete_later(pod, run),
                                              name=f"kubelet job pod {run.key}")

    async def _pod_dns(self, pod: dict, run: PodRun) -> dict[str, Path]:
        """The cluster DNS on the pod's node address and the pod's resolv.conf pointing
        there (clusterdns.py); without it the pod keeps the host's, and an event says so."""
        if self.dns is None or not run.netns:
            return {}
        from .clusterdns import write_pod_files

        nameserver = self.network.node_address(run.ip)  # type: ignore[attr-defined]
        try:
            await self.dns.serve_on(nameserver)
            return await asyncio.to_thread(write_pod_files, self._pod_dir(pod) / "etc", pod,
                                           nameserver)
        except OSError as e:
            self._event(pod, "DNSConfigForming", f"cluster DNS unavailable on "
                        f"{nameserver}: {e}; the pod keeps the node's resolv.conf",
                        kind="Warning")
            return {}

    def _image_events(self, pod: dict, run: PodRun, container: dict) -> None:
        """Pulling/Pulled, or "already present" for an image this node has (unless its
        pull policy is Always)."""
        field_path = f"spec.containers{{{container['name']}}}"
        image = container.get("image", "")
        if (run.node, image) in self._images and container.get("imagePullPolicy") != "Always":
            self._event(pod, "Pulled", f'Container image "{image}" already present on '
                                       f"machine and can be accessed by the pod",
                        field_path=field_path)
            return
        self._event(pod, "Pulling", f'Pulling image "{image}"', field_path=field_path)
        self._event(pod, "Pulled", f'Successfully pulled image "{image}" in 0s '
                                   "(0s including waiting). Image size: 0 bytes.",
                    field_path=field_path)
        self._images.add((run.node, image))

    async def _container_env(self, pod: dict, run: PodRun, container: dict) -> dict[str, str]:
        node_alloc = next((s.capacity() for s in self.node_specs if s.name == run.node), {})
        return await processes.container_env(
            pod, container, pod_ip=run.ip, host_ip=run.host_ip, lookup=self._lookup,
            node_allocatable=node_alloc)

    async def _mount_failed(self, pod: dict, run: PodRun, problems: list) -> None:
        """A volume that can't be mounted: the pod waits in ContainerCreating (no address
        yet), a FailedMount event says why, and the kubelet tries again later."""
        messages = [p.event_message() for p in problems]
        if self._mount_errors.get(run.key) != messages:
            self._mount_errors[run.key] = messages
            waiting = {c["name"]: {"waiting": {"reason": "ContainerCreating"}}
                       for c in pod["spec"].get("containers") or []}
            status = self._running_status(pod, run, ready=False, states=waiting)
            await self._patch_status(pod, status | {"phase": "Pending"})
        for message in messages:  # repeated each attempt; the event's count goes up
            self._event(pod, "FailedMount", message, kind="Warning")
        self._later(self._retry_start, run, delay=self._retry_delay(run.key))

    async def _complete_later(self, pod: dict, run: PodRun) -> None:
        await asyncio.sleep(self.job_pod_seconds)
        await self._finish_run(pod, run, {c["name"]: (0, "Completed")
                                          for c in pod["spec"].get("containers") or []})

    def _container_events(self, pod: dict, name: str) -> None:
        field_path = f"spec.containers{{{name}}}"
        self._event(pod, "Created", "Container created", field_path=field_path)
        self._event(pod, "Started", "Container started", field_path=field_path)

    def _running_status(self, pod: dict, run: PodRun, *, ready: bool,
                        states: dict[str, dict] | None = None) -> dict:
        """The status of a pod whose containers are status only (`states` overrides some),
        or, for a process pod, of its runners and status-only containers."""
        spec = pod["spec"]
        now = now_iso()
        statuses = []
        for container in spec.get("containers") or []:
            name = container["name"]
            runner = run.runners.get(name)
            if runner is not None and not (states and name in states):
                statuses.append(runner.status())
                continue
            state = (states or {}).get(name) or {"running": {"startedAt": run.started_at}}
            container_ready = "running" in state and (
                ready or (states is not None and name not in states))
            statuses.append(container_status(container, state, ready=container_ready,
                                             container_id=run.container_ids.get(name),
                                             started=True))
        phase = pod_phase(spec, statuses)
        all_ready = phase == "Running" and all(s["ready"] for s in statuses)
        conditions = pod_conditions(
            now, ready=all_ready, sandbox=bool(run.ip),
            reason="PodCompleted" if phase in TERMINAL_PHASES else None,
            unready=[s["name"] for s in statuses if not s["ready"]])
        if self.mode == "process" and self.flag_idle_containers:
            conditions += self._no_program_conditions(pod, now)
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": keep_transition_times(run.conditions, conditions),
            "hostIP": run.host_ip, "hostIPs": [{"ip": run.host_ip}],
            "startTime": run.started_at, "containerStatuses": statuses,
        }
        run.conditions = status["conditions"]
        if run.ip:
            status |= {"podIP": run.ip, "podIPs": [{"ip": run.ip}]}
        inits = spec.get("initContainers") or []
        if inits:
            done = bool(run.ip)
            status["initContainerStatuses"] = [
                container_status(c, {"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": run.started_at,
                    "finishedAt": run.started_at}} if done else {
                    "waiting": {"reason": "PodInitializing"}}, ready=done,
                    container_id=f"kdash://{c['name']}-{run.uid[:8]}" if done else None,
                    started=False)
                for c in inits
            ]
        return status

    @staticmethod
    def _no_program_conditions(pod: dict, now: str) -> list[dict]:
        """Process mode: a condition naming the containers that run nothing (no command,
        no program for their image here), so that "Running" isn't taken for "serving"."""
        running = {c["name"] for c in processes.process_containers(pod)}
        idle = [c for c in pod["spec"].get("containers") or [] if c["name"] not in running]
        if not idle:
            return []
        images = ", ".join(sorted({str(c.get("image") or "") for c in idle}))
        return [condition(imageprograms.NO_PROGRAM_CONDITION, True, now,
                          imageprograms.NO_PROGRAM_REASON,
                          f"this local cluster has no program for {images}: container(s) "
                          f"{', '.join(c['name'] for c in idle)} run nothing (status only)")]

    async def _lookup(self, kind: str, namespace: str, name: str) -> dict | None:
        """A pod's Secret or ConfigMap as this node may read it (None if there is none).

        Beside a real API server the Node authorizer learns that a pod is bound here from
        its own watch, so a read made right after the binding can be refused ("no
        relationship found between node ... and this object") until its graph catches up:
        a refusal is asked again a few times within `LOOKUP_RETRY_PAUSES` before it counts
        as a failure of the pod's set-up (retried later, backing off)."""
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        for pause in (*LOOKUP_RETRY_PAUSES, None):
            try:
                return await self.api.request(
                    "GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
            except ApiError as e:
                if e.status == 404:
                    return None
                if e.status != 403 or pause is None:
                    raise
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _pod_dir(self, pod: dict) -> Path:
        """The kubelet's directory of a pod: `rootfs` (the container's files, the pod's
        user's), `logs` and `.rootfs-volumes` (the kubelet's)."""
        meta = pod["metadata"]
        return self.workdir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"

    def _identity(self, pod: dict, container: dict | None) -> podsandbox.Identity:
        if container is None:  # the pod's files: its first process container's user
            containers = processes.process_containers(pod)
            container = containers[0] if containers else {}
        return podsandbox.identity_of(pod, container, default_uid=self.default_uid)

    async def _start_processes(self, pod: dict, run: PodRun) -> None:
        """Process mode: a runner per process container (restarts, probes), status only
        for the others; the pod's status follows them from here on."""
        spec = pod["spec"]
        meta = pod["metadata"]
        pod_dir = self._pod_dir(pod)
        podsandbox.traversable_dirs(self.workdir, self.workdir / "pods", pod_dir.parent,
                                    pod_dir)
        root = pod_dir / "rootfs"
        notebook = processes.process_containers(pod)
        names = {c["name"] for c in notebook}
        runners: dict[str, ContainerRunner] = {}
        try:
            for container in spec.get("containers") or []:
                if container["name"] not in names:
                    await self._container_env(pod, run, container)  # refs must resolve
                    continue
                runners[container["name"]] = await self._runner(pod, run, container, root)
        except processes.ContainerConfigError as e:
            await self._config_error(pod, run, spec.get("containers") or [], str(e))
            return
        except volumes.MountError as e:
            await self._mount_failed(pod, run, [e])
            return
        except OSError as e:
            await self._mount_failed(pod, run, [volumes.MountError("pod", str(e))])
            return
        self._config_errors.pop(run.key, None)
        self._mount_errors.pop(run.key, None)
        self._start_attempts.pop(run.key, None)
        run.runners = runners
        for container in spec.get("containers") or []:
            if container["name"] not in names:
                self._container_events(pod, container["name"])
                run.container_ids[container["name"]] = f"kdash://{secrets.token_hex(32)}"
        self._status_changed(pod, run)
        run.monitor = asyncio.create_task(self._supervise(pod, run),
                                          name=f"kubelet pod {run.key}")
        log.debug("pod %s/%s runs %s", meta["namespace"], meta["name"], sorted(runners))

    async def _runner(self, pod: dict, run: PodRun, container: dict, root: Path
                      ) -> ContainerRunner:
        """Everything a container needs before it can start: environment, volumes,
        directories, command. Raises ContainerConfigError, MountError or OSError."""
        meta = pod["metadata"]
        env = processes.base_environment(
            meta["name"], processes.container_path(root, processes.DEFAULT_HOME), root / "tmp")
        env.update(await self._container_env(pod, run, container))
        for var in container_path_variables(container, env):
            if env.get(var, "").startswith("/") and not env[var].startswith(str(root)):
                env[var] = str(processes.container_path(root, env[var]))
        if run.netns:  # the pod has an address of its own; the host's loopback is relayed
            await self.network.expose_loopback_urls(env, run.ip)  # type: ignore[attr-defined]
        else:
            env.update(processes.source_address_env(run.ip, env))
        identity = self._identity(pod, container)
        pod_identity = self._identity(pod, None)
        await volumes.prepare_volumes(pod, container, pod_root=root,
                                      cluster_root=self.workdir, lookup=self._lookup,
                                      identity=pod_identity)
        cwd = (processes.container_path(root, container["workingDir"])
               if container.get("workingDir") else Path(env["HOME"]))
        _make_dirs(Path(env["HOME"]), root / "tmp", cwd,
                   *([Path(env["JUPYTERHUB_ROOT_DIR"])]
                     if env.get("JUPYTERHUB_ROOT_DIR") else []))
        # a fresh rootfs holds only what the kubelet just made: all of it is the pod's
        # (links are changed, never followed); the kubelet's logs stay beside it
        podsandbox.own_tree(root, pod_identity)
        private = root.parent / f".{root.name}-volumes"
        if private.is_dir():
            podsandbox.own_tree(private, pod_identity)
        sandbox = self.sandbox
        wrap: processes.Wrap | None = None
        as_root = None
        if sandbox is not None and sandbox.enabled:
            def wrap(argv: list[str]) -> list[str]:
                return sandbox.wrap(argv, identity, run.netns, run.files)
            as_root = identity.root
        program = imageprograms.program_for(container)
        if program is not None:  # the image's program, as this machine has it
            argv, extra = imageprograms.prepare(program, container, env, pod_ip=run.ip,
                                                root=root, bindir=root.parent / "programs")
            env.update(extra)
        else:
            argv = processes.container_argv(container, env, as_root=as_root)
        name = container["name"]

        async def start(log_path: Path) -> processes.ContainerProcess:
            proc = processes.ContainerProcess(name, argv, env, cwd, log_path, wrap=wrap)
            await proc.start()
            return proc

        implicit = None
        port = processes.notebook_port(container, env) if processes.is_notebook_container(
            container) else None
        if program is not None:  # ready once it listens, unless it has a probe
            port = imageprograms.container_port(container)
        if port is not None:
            async def answers() -> bool:
                return await processes.port_answers(run.ip, port)
            implicit = answers

        async def event(reason: str, message: str, kind: str) -> None:
            self._event(pod, reason, message, kind=kind,
                        field_path=f"spec.containers{{{name}}}")

        termination = container.get("terminationMessagePath") or "/dev/termination-log"
        return ContainerRunner(
            container, start=start, restart_policy=pod["spec"].get("restartPolicy") or "Always",
            pod_desc=f"{meta['name']}_{meta['namespace']}({meta['uid']})", pod_ip=run.ip,
            env=env, cwd=cwd, log_dir=root.parent / "logs" / name,
            termination_path=processes.container_path(root, termination),
            wrap=wrap, rootfs=root if wrap is not None else None,
            implicit_ready=implicit, on_change=lambda: self._status_changed(pod, run),
            on_event=event, backoff=Backoff(base=self.backoff_seconds),
            grace=float(pod["spec"].get("terminationGracePeriodSeconds", 30)))

    async def _supervise(self, pod: dict, run: PodRun) -> None:
        """Run every container until each has ended for good; then the pod is over."""
        await asyncio.gather(*(r.run() for r in run.runners.values()))
        if run.stopping:
            return
        statuses = self._running_status(pod, run, ready=False)
        if statuses["phase"] in TERMINAL_PHASES:
            run.finished = True
            self._release(run)
            self._status_changed(pod, run)
            self._retry_pending()

    def _status_changed(self, pod: dict, run: PodRun) -> None:
        """Write the pod's status soon: one writer per pod, always the latest state."""
        run.status_dirty = True
        if run.writer is None or run.writer.done():
            run.writer = asyncio.create_task(self._write_status(pod, run),
                                             name=f"kubelet status {run.key}")

    async def _write_status(self, pod: dict, run: PodRun) -> None:
        while run.status_dirty and not run.stopping:
            run.status_dirty = False
            try:
                await self._patch_status(pod, self._running_status(pod, run, ready=False))
            except (ApiError, aiohttp.ClientError, TimeoutError) as e:
                log.warning("status of pod %s not written: %s", run.key, e)
                await asyncio.sleep(self.retry_seconds)
                run.status_dirty = True

    async def _config_error(self, pod: dict, run: PodRun, containers: list[dict],
                            message: str) -> None:
        """Like CreateContainerConfigError: say why (once per reason), try again later.

        The run stays registered meanwhile, so the pod's own status updates don't
        trigger attempts of their own."""
        if self._config_errors.get(run.key) != message:
            self._config_errors[run.key] = message
            waiting = {c["name"]: {"waiting": {"reason": "CreateContainerConfigError",
                                               "message": message}} for c in containers}
            status = self._running_status(pod, run, ready=False, states=waiting)
            await self._patch_status(pod, status)
        self._event(pod, "Failed", f"Error: {message}", kind="Warning",
                    field_path=f"spec.containers{{{containers[0]['name']}}}")
        self._later(self._retry_start, run, delay=self._retry_delay(run.key))

    def _retry_start(self, run: PodRun) -> None:
        if self.runs.get(run.key) is run and not run.runners:
            self._release(run)
            del self.runs[run.key]
            self._enqueue(run.key)

    def _retry_delay(self, key: str) -> float:
        """A pod that can't start yet is tried again soon, then less often (0.1 s doubling
        up to `retry_seconds`), as the kubelet backs off its pod workers."""
        attempts = self._start_attempts[key] = self._start_attempts.get(key, 0) + 1
        if len(self._start_attempts) > 4096:
            self._start_attempts.pop(next(iter(self._start_attempts)))
        return min(self.retry_seconds, 0.1 * 2 ** (attempts - 1))

    def _later(self, callback: Callable[..., None], *args: Any,
               delay: float | None = None) -> None:
        """Call back after `delay` (default `retry_seconds`) unless the kubelet stops first."""
        if self._stopped:
            return

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = asyncio.get_running_loop().call_later(
            self.retry_seconds if delay is None else delay, fire)
        self._timers.add(handle)

    async def _finish_run(self, pod: dict, run: PodRun, exits: dict[str, tuple]) -> None:
        """A status-only pod's containers end (a Job's pod): terminated with `exits`."""
        if run.stopping:
            return
        finished = now_iso()
        states = {}
        for name, (code, reason) in exits.items():
            states[name] = {"terminated": {
                "exitCode": code, "reason": reason, "startedAt": run.started_at,
                "finishedAt": finished, "containerID": run.container_ids.get(name, "")}}
        status = self._running_status(pod, run, ready=False, states=states)
        run.finished = True
        self._release(run)
        await self._patch_status(pod, status)
        self._retry_pending()

    # --- logs and exec (what the API server's pods/log and pods/exec reach) ------------

    def _container_of(self, namespace: str, pod: str, container: str | None
                      ) -> tuple[PodRun, str]:
        run = self.runs.get(f"{namespace}/{pod}")
        if run is None:
            raise PodStreamError(404, f'pod "{pod}" is not running on this kubelet')
        names = list(run.runners) + [n for n in run.container_ids if n not in run.runners]
        if container is None:
            if not names:
                raise PodStreamError(400, f'pod "{pod}" has no containers running yet')
            container = names[0]
        if container not in names:
            raise PodStreamError(400, f'container "{container}" in pod "{pod}" is waiting '
                                      f"to start: ContainerCreating")
        return run, container

    def read_log(self, namespace: str, pod: str, container: str | None = None,
                 tail_lines: int | None = None) -> str | None:
        """The output of a pod's container (process mode), "" for a status-only container,
        None when the kubelet runs no such pod."""
        try:
            run, container = self._container_of(namespace, pod, container)
        except PodStreamError:
            return None
        runner = run.runners.get(container)
        if runner is None:
            return ""
        path = runner.log_path()
        if path is None:
            return ""
        data = containerlogs.read(path, containerlogs.LogOptions(tail_lines=tail_lines))
        return data.decode(errors="replace")

    async def open_log(self, namespace: str, pod: str, container: str,
                       options: containerlogs.LogOptions) -> AsyncIterator[bytes]:
        """`kubectl logs [-f] [--previous]`: the container's output, streamed while it
        runs with `follow`. Raises PodStreamError before the first byte when it can't."""
        run, container = self._container_of(namespace, pod, container)
        runner = run.runners.get(container)
        if runner is None:  # a status-only container prints nothing
            if options.previous:
                raise PodStreamError(400, f'previous terminated container "{container}" in '
                                          f'pod "{pod}" not found')
            return _empty()
        if options.previous:
            path = runner.log_path(previous=True)
            if path is None:
                raise PodStreamError(400, f'previous terminated container "{container}" in '
                                          f'pod "{pod}" not found')
            return _once(containerlogs.read(path, options))
        if "waiting" in runner.state and not runner.last_state:
            reason = runner.state["waiting"].get("reason", "ContainerCreating")
            raise PodStreamError(400, f'container "{container}" in pod "{pod}" is waiting to '
                                      f"start: {reason}")
        path = runner.log_path()
        assert path is not None
        if not options.follow or runner.terminated:
            return _once(containerlogs.read(path, options))
        process = runner.process
        return containerlogs.follow(path, options,
                                    lambda: runner.process is not process or (
                                        process is None or process.output_done))

    def _exec_runner(self, namespace: str, pod: str, container: str | None
                     ) -> ContainerRunner:
        run, container = self._container_of(namespace, pod, container)
        runner = run.runners.get(container)
        if runner is None:
            raise PodStreamError(400, f'container "{container}" in pod "{pod}" is status '
                                      f"only (no process behind it): exec needs the process "
                                      f"kubelet and a container it runs")
        if "running" not in runner.state:
            raise PodStreamError(400, f"unable to upgrade connection: container not found "
                                      f'("{container}")')
        return runner

    def check_exec(self, namespace: str, pod: str, container: str | None) -> None:
        """Raises PodStreamError unless a command could run in the container now."""
        self._exec_runner(namespace, pod, container)

    async def start_exec(self, namespace: str, pod: str, container: str | None,
                         command: list[str], *, tty: bool, stdin: bool
                         ) -> processes.ExecProcess:
        """`kubectl exec`: the command as a process in the container's environment (its
        env, working directory, address). Raises PodStreamError when there's no process
        container to run it in."""
        runner = self._exec_runner(namespace, pod, container)
        if not command:
            raise PodStreamError(400, "you must specify at least one command for the "
                                      "container")
        try:  # found on the container's PATH (this environment's bin directory first)
            return await processes.ExecProcess.start(command, runner.env, runner.cwd,
                                                     tty=tty, stdin=stdin, wrap=runner.wrap)
        except OSError as e:
            raise PodStreamError(500, f"OCI runtime exec failed: exec failed: unable to "
                                      f'start container process: exec: "{command[0]}": '
                                      f"{e.strerror}") from None

    # --- API helpers -------------------------------------------------------------------

    async def _patch_status(self, pod: dict, status: dict, attempts: int = 6) -> None:
        """Merge-patch the pod's status; retries server errors, ignores a deleted pod."""
        meta = pod["metadata"]
        delay = 0.05
        for attempt in range(attempts):
            try:
                await self.api.request(
                    "PATCH",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                    body={"status": status}, content_type=MERGE_PATCH,
                )
                return
            except ApiError as e:
                if e.status == 404:  # a deleted pod needs no status
                    return
                if e.status < 500 and e.status != 429 or attempt == attempts - 1:
                    raise
            except (aiohttp.ClientError, TimeoutError):
                if attempt == attempts - 1:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _event(self, pod: dict, reason: str, message: str, *, kind: str = "Normal",
               component: str = "kubelet", field_path: str | None = None) -> None:
        """Record an Event about the pod; written in the background (eventrecorder.py)."""
        self.recorder.record(pod, reason, message, kind=kind, component=component,
                             field_path=field_path)
