"""The emulated kubelet (and scheduler) of the local cluster: one client of the API over HTTP.

It registers the Node objects, watches every pod (relisting on 410, re-watching when the
stream drops) and drives each pod through its life the way the real components do:

- an unbound pod is scheduled (`scheduler.schedule`) and bound with the `binding`
  subresource (event `Scheduled`), or stays Pending with `PodScheduled=False/Unschedulable`
  and a `FailedScheduling` event, and is retried when pods go away (and every few seconds);
- a bound pod gets a pod IP 127.A.B.x from its node's /24, events `Pulling`, `Pulled`,
  `Created`, `Started`, and status Running with Ready/ContainersReady/Initialized/
  PodScheduled conditions and running, ready containerStatuses;
- in process mode, notebook containers run as real processes (`processes.py`): Ready only
  once the port answers, exit codes reported as `terminated` with phase Succeeded/Failed
  (no restarts, whatever the restartPolicy). Other pods (postgres, minio, ...) are status
  only, in both modes, unless annotated `localcluster.kdash-hub.io/run-as-process: "true"`
  (then their commands run too); container output is served by `read_log`;
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from . import processes
from .apiclient import MERGE_PATCH, ApiError, KubeHTTP, WatchExpired
from .nodes import NodeSpec, PodNetwork, node_object, node_ready
from .podstatus import condition, container_status, now_iso, now_micro, pod_conditions
from .scheduler import TERMINAL_PHASES, schedule

log = logging.getLogger("kdash_hub.localcluster.kubelet")

KubeletMode = Literal["status", "process"]
MIN_GRACE_SECONDS = 2.0
RETRY_SECONDS = 5.0
START_TIMEOUT_SECONDS = 30.0
JOB_POD_SECONDS = 0.5


def pod_key(pod: dict) -> str:
    return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"


@dataclass
class PodRun:
    """What the kubelet runs for one pod (by uid)."""

    uid: str
    key: str
    node: str
    ip: str
    host_ip: str
    started_at: str
    container_ids: dict[str, str] = field(default_factory=dict)
    processes: dict[str, processes.ContainerProcess] = field(default_factory=dict)
    monitor: asyncio.Task | None = None
    stopping: bool = False
    finished: bool = False


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
        # how often pods that can't start yet (unschedulable, a missing secret) are retried
        self.retry_seconds = retry_seconds
        # how long a status-only pod of a Job "runs" before it succeeds
        self.job_pod_seconds = job_pod_seconds
        self._config_errors: dict[str, str] = {}  # pod key -> last config error reported
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopped = False
        self.pods: dict[str, dict] = {}
        self.runs: dict[str, PodRun] = {}
        self._assumed: dict[str, str] = {}  # pod key -> node, bound but not yet seen
        self._unschedulable: dict[str, str] = {}  # pod key -> last FailedScheduling message
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}  # pod key -> failed attempts in a row
        self._workers: dict[str, asyncio.Task] = {}
        self._schedule_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._synced = asyncio.Event()
        self.relists = 0
        self.rewatches = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        for spec in self.node_specs:
            await self.register_node(spec)
        self._tasks.append(asyncio.create_task(self._watch_pods(), name="kubelet-watch"))
        self._tasks.append(asyncio.create_task(self._retry_loop(), name="kubelet-retry"))
        if self.heartbeat_seconds:
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(),
                                                   name="kubelet-heartbeat"))
        try:
            await asyncio.wait_for(self._synced.wait(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"the kubelet could not list pods from {self.api.url} "
                               f"in {START_TIMEOUT_SECONDS}s") from None

    async def stop(self) -> None:
        """Stop watching and every process (pods keep their last status)."""
        self._stopped = True
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
        await self.api.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def register_node(self, spec: NodeSpec) -> dict:
        """Create the Node (or take over an existing one) and post its status."""
        obj = node_object(spec, self.network)
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
        status = node_object(spec, self.network)["status"]
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
                await self._schedule(key, pod)
            return
        if run is None:
            await self._start_pod(pod)

    async def _finish_deletion(self, pod: dict, run: PodRun | None) -> None:
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        if run:
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
        if run.monitor and run.monitor is not asyncio.current_task():
            run.monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.monitor
        await asyncio.gather(*(p.stop(grace) for p in run.processes.values()),
                             return_exceptions=True)
        self.network.release(run.ip)
        run.finished = True
        if forget and self.runs.get(run.key) is run:
            del self.runs[run.key]
            self._retry_pending()  # resources were freed

    # --- scheduling --------------------------------------------------------------------

    async def _schedule(self, key: str, pod: dict) -> None:
        meta = pod["metadata"]
        async with self._schedule_lock:
            if key in self._assumed or self.pods.get(key) is not pod:
                return  # bound already, or a newer version is queued
            listing = await self.api.request("GET", "/api/v1/nodes")
            nodes = [n for n in listing.get("items") or [] if node_ready(n)]
            view = []
            for other_key, other in self.pods.items():
                if other_key == key:
                    continue
                if other_key in self._assumed:
                    other = {**other, "spec": {**other.get("spec", {}),
                                               "nodeName": self._assumed[other_key]}}
                view.append(other)
            decision = schedule(pod, nodes, view)
            if decision.node is None:
                await self._unschedulable_pod(key, pod, decision.message)
                return
            try:
                await self.api.request(
                    "POST",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                    body={"apiVersion": "v1", "kind": "Binding",
                          "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                          "target": {"apiVersion": "v1", "kind": "Node",
                                     "name": decision.node}},
                )
            except ApiError as e:
                if e.status in (404, 409):
                    return  # gone, or bound by someone else: the watch tells us
                raise
            self._assumed[key] = decision.node
            self._unschedulable.pop(key, None)
        await self._event(pod, "Scheduled",
                          f"Successfully assigned {meta['namespace']}/{meta['name']} "
                          f"to {decision.node}", component=_scheduler_name(pod))

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
        await self._event(pod, "FailedScheduling", message, kind="Warning",
                          component=_scheduler_name(pod))
        log.info("pod %s/%s unschedulable: %s", meta["namespace"], meta["name"], message)

    # --- running -----------------------------------------------------------------------

    async def _start_pod(self, pod: dict) -> None:
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
        ports = [p["containerPort"] for c in spec.get("containers") or []
                 for p in c.get("ports") or [] if "containerPort" in p] if run_processes else []
        host_ip = self.network.host_ip(node)
        # hostNetwork pods share the node's address, as on a real node
        ip = host_ip if spec.get("hostNetwork") else self.network.allocate(node, ports)
        run = PodRun(meta["uid"], key, node, ip, host_ip, now_iso())
        self.runs[key] = run
        try:
            for container in spec.get("containers") or []:
                run.container_ids[container["name"]] = f"kdash://{secrets.token_hex(16)}"
                field_path = f"spec.containers{{{container['name']}}}"
                image = container.get("image", "")
                await self._event(pod, "Pulling", f'Pulling image "{image}"',
                                  field_path=field_path)
                await self._event(pod, "Pulled", f'Successfully pulled image "{image}" in 0s '
                                                 "(0s including waiting). Image size: 0 bytes.",
                                  field_path=field_path)
            if run_processes:
                await self._start_processes(pod, run)
                return
            for container in spec.get("containers") or []:
                await self._container_events(pod, container["name"])
            await self._patch_status(pod, self._running_status(pod, run, ready=True))
        except Exception:
            await self._stop_run(run, 0)  # the next attempt starts from scratch
            raise
        if _owned_by_job(pod):
            # a Job's pod runs its command and ends; with nothing running, it ends now
            run.monitor = asyncio.create_task(self._complete_later(pod, run),
                                              name=f"kubelet job pod {run.key}")

    async def _complete_later(self, pod: dict, run: PodRun) -> None:
        await asyncio.sleep(self.job_pod_seconds)
        await self._finish_run(pod, run, {c["name"]: (0, "Completed")
                                          for c in pod["spec"].get("containers") or []})

    async def _container_events(self, pod: dict, name: str) -> None:
        field_path = f"spec.containers{{{name}}}"
        await self._event(pod, "Created", f"Created container {name}", field_path=field_path)
        await self._event(pod, "Started", f"Started container {name}", field_path=field_path)

    def _running_status(self, pod: dict, run: PodRun, *, ready: bool,
                        states: dict[str, dict] | None = None) -> dict:
        spec = pod["spec"]
        now = now_iso()
        statuses = []
        for container in spec.get("containers") or []:
            name = container["name"]
            state = (states or {}).get(name) or {"running": {"startedAt": run.started_at}}
            container_ready = ready or (states is not None and name not in states)
            statuses.append(container_status(container, state, ready=container_ready,
                                             container_id=run.container_ids.get(name),
                                             started=True))
        status: dict[str, Any] = {
            "phase": "Running", "conditions": pod_conditions(now, ready=ready),
            "hostIP": run.host_ip, "hostIPs": [{"ip": run.host_ip}],
            "podIP": run.ip, "podIPs": [{"ip": run.ip}], "startTime": run.started_at,
            "containerStatuses": statuses,
        }
        inits = spec.get("initContainers") or []
        if inits:
            status["initContainerStatuses"] = [
                container_status(c, {"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": run.started_at,
                    "finishedAt": run.started_at}}, ready=True, container_id=None,
                    started=False)
                for c in inits
            ]
        return status

    async def _lookup(self, kind: str, namespace: str, name: str) -> dict | None:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        try:
            return await self.api.request(
                "GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _pod_root(self, pod: dict) -> Path:
        meta = pod["metadata"]
        return self.workdir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"

    async def _start_processes(self, pod: dict, run: PodRun) -> None:
        spec = pod["spec"]
        root = self._pod_root(pod)
        notebook = processes.process_containers(pod)
        waiting = {c["name"]: {"waiting": {"reason": "ContainerCreating"}} for c in notebook}
        await self._patch_status(pod, self._running_status(pod, run, ready=False,
                                                           states=waiting) | {"phase": "Pending"})
        node_alloc = next((s.capacity() for s in self.node_specs if s.name == run.node), {})
        try:
            for container in notebook:
                env = processes.base_environment(
                    pod["metadata"]["name"],
                    processes.container_path(root, processes.DEFAULT_HOME), root / "tmp")
                env.update(await processes.container_env(
                    pod, container, pod_ip=run.ip, host_ip=run.host_ip, lookup=self._lookup,
                    node_allocatable=node_alloc))
                for var in ("HOME", "JUPYTERHUB_ROOT_DIR"):
                    if env.get(var, "").startswith("/") and not env[var].startswith(str(root)):
                        env[var] = str(processes.container_path(root, env[var]))
                await processes.prepare_volumes(pod, container, pod_root=root,
                                                cluster_root=self.workdir, lookup=self._lookup)
                _make_dirs(Path(env["HOME"]), root / "tmp",
                           *([Path(env["JUPYTERHUB_ROOT_DIR"])]
                             if env.get("JUPYTERHUB_ROOT_DIR") else []))
                cwd = (processes.container_path(root, container["workingDir"])
                       if container.get("workingDir") else Path(env["HOME"]))
                proc = processes.ContainerProcess(
                    container["name"], processes.container_argv(container, env), env, cwd,
                    root / "logs" / f"{container['name']}.log")
                run.processes[container["name"]] = proc
        except processes.ContainerConfigError as e:
            run.processes.clear()  # none started yet
            await self._config_error(pod, run, notebook, str(e))
            return
        started: dict[str, int | None] = {}
        for container in notebook:
            proc = run.processes[container["name"]]
            try:
                await proc.start()
                started[container["name"]] = processes.notebook_port(container, proc.env)
            except OSError as e:
                await asyncio.gather(*(p.stop(0) for p in run.processes.values()))
                await self._finish_run(pod, run, {container["name"]: (128, f"StartError: {e}")})
                return
        self._config_errors.pop(run.key, None)
        for container in spec["containers"]:
            await self._container_events(pod, container["name"])
        run.monitor = asyncio.create_task(self._monitor(pod, run, started),
                                          name=f"kubelet monitor {run.key}")

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
            await self._patch_status(pod, status | {"phase": "Pending"})
            await self._event(pod, "Failed", f"Error: {message}", kind="Warning",
                              field_path=f"spec.containers{{{containers[0]['name']}}}")
        self._later(self._retry_start, run)

    def _retry_start(self, run: PodRun) -> None:
        if self.runs.get(run.key) is run and not run.processes:
            self.network.release(run.ip)
            del self.runs[run.key]
            self._enqueue(run.key)

    def _later(self, callback: Callable[..., None], *args: Any) -> None:
        """Call back after `retry_seconds` (unless the kubelet stops first)."""
        if self._stopped:
            return

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = asyncio.get_running_loop().call_later(self.retry_seconds, fire)
        self._timers.add(handle)

    async def _monitor(self, pod: dict, run: PodRun, ports: dict[str, int | None]) -> None:
        """Ready once every server's port answers; the pod ends when a container exits."""
        waits = {name: asyncio.ensure_future(run.processes[name].wait()) for name in ports}
        try:
            pending = {n for n, p in ports.items() if p is not None}
            delay = 0.05
            while pending and not any(task.done() for task in waits.values()):
                for name in list(pending):
                    if await processes.port_answers(run.ip, ports[name]):
                        pending.discard(name)
                if pending:
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, 0.5)
            if not pending and not any(task.done() for task in waits.values()):
                await self._patch_status(pod, self._running_status(pod, run, ready=True))
                await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
            if not run.stopping:
                # one container ended: the pod is over (we don't restart containers)
                await asyncio.gather(*(p.stop(MIN_GRACE_SECONDS)
                                       for p in run.processes.values()))
                await self._finish_run(pod, run, self._exits(run))
        finally:
            for task in waits.values():
                task.cancel()

    def _exits(self, run: PodRun) -> dict[str, tuple]:
        exits = {}
        for name, proc in run.processes.items():
            code = proc.process.returncode if proc.process else None
            if code is None:
                continue
            if code < 0:  # killed by a signal: the container runtime says 128 + signal
                code = 128 - code
            exits[name] = (code, "Completed" if code == 0 else "Error")
        return exits

    async def _finish_run(self, pod: dict, run: PodRun, exits: dict[str, tuple]) -> None:
        if run.stopping:
            return
        finished = now_iso()
        states = {}
        for name, (code, reason) in exits.items():
            message = None
            if ":" in reason:
                reason, message = reason.split(":", 1)
            term = {"exitCode": code, "reason": reason, "startedAt": run.started_at,
                    "finishedAt": finished, "containerID": run.container_ids.get(name, "")}
            if message:
                term["message"] = message.strip()
            if code and name in run.processes:
                tail = run.processes[name].log_tail(5)
                if tail and "message" not in term:
                    term["message"] = tail
            states[name] = {"terminated": term}
        failed = any(code != 0 for code, _ in exits.values())
        status = self._running_status(pod, run, ready=False, states=states)
        for cs in status["containerStatuses"]:
            if cs["name"] in states:
                cs["ready"] = False
                cs["started"] = False
        status["phase"] = "Failed" if failed else "Succeeded"
        status["conditions"] = pod_conditions(finished, ready=False, reason="PodCompleted")
        run.finished = True
        self.network.release(run.ip)
        await self._patch_status(pod, status)
        self._retry_pending()

    def read_log(self, namespace: str, pod: str, container: str | None = None,
                 tail_lines: int | None = None) -> str | None:
        """The output of a pod's container (process mode), "" for a status-only container,
        None when the kubelet runs no such pod: what `pods/{name}/log` serves."""
        run = self.runs.get(f"{namespace}/{pod}")
        if run is None:
            return None
        if container is None:
            container = next(iter(run.processes), None) or next(iter(run.container_ids), None)
        if container not in run.container_ids:
            return None
        proc = run.processes.get(container)
        if proc is None:
            return ""
        try:
            text = proc.log_path.read_text(errors="replace")
        except OSError:
            return ""
        if tail_lines is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail_lines:] if tail_lines > 0 else [])
        return text

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

    async def _event(self, pod: dict, reason: str, message: str, *, kind: str = "Normal",
                     component: str = "kubelet", field_path: str | None = None) -> None:
        """Post a core/v1 Event about the pod (failures are logged, never raised)."""
        meta = pod["metadata"]
        now = now_iso()
        involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                    "namespace": meta["namespace"], "uid": meta.get("uid", "")}
        if meta.get("resourceVersion"):
            involved["resourceVersion"] = meta["resourceVersion"]
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if component == "kubelet" and (pod.get("spec") or {}).get("nodeName"):
            source["host"] = pod["spec"]["nodeName"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}",
                         "namespace": meta["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message, "type": kind,
            "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": source.get("host", component),
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events",
                                   body=event)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.debug("event %s for %s not posted: %s", reason, meta["name"], e)
