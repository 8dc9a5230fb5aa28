"""One container of a process-mode pod, supervised as the kubelet does it.

`ContainerRunner.run()` starts the container's process, runs its startup, readiness and
liveness probes, and when the process ends applies the pod's restartPolicy: restart at once
the first time, then after a growing back-off (10 s, 20 s, ... 5 min, reset after 10 min
without trouble) during which the container is `waiting: CrashLoopBackOff`, with
`BackOff` events; Never (or OnFailure after a success) leaves it `terminated`. Each change
of state is reported to the kubelet (`on_change`), each event through `on_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import containerlogs, podsandbox, probes
from .podstatus import now_iso

log = logging.getLogger("kdash_hub.localcluster.containers")

BACKOFF_SECONDS = 10.0  # the kubelet's crash-loop back-off: initial, doubled, capped
MAX_BACKOFF_SECONDS = 300.0
BACKOFF_RESET_SECONDS = 600.0
TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

EventSink = Callable[[str, str, str], Awaitable[None]]  # reason, message, type


def go_duration(seconds: float) -> str:
    """A duration as Go prints it: 10s, 1m20s, 5m0s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass
class Backoff:
    """The crash-loop back-off of one container (flowcontrol.Backoff, per container)."""

    base: float = BACKOFF_SECONDS
    cap: float = MAX_BACKOFF_SECONDS
    delay: float | None = None  # None: not backing off yet
    last_update: float = 0.0

    def wait_after(self, finished: float) -> float:
        """Seconds to wait before restarting a container that ended at `finished`."""
        if self.delay is None or finished - self.last_update > BACKOFF_RESET_SECONDS:
            self.delay, self.last_update = self.base, finished
            return 0.0
        return self.delay

    def advance(self, finished: float) -> None:
        """After waiting: the next wait is twice as long (up to the cap)."""
        assert self.delay is not None
        self.delay, self.last_update = min(self.delay * 2, self.cap), finished


class ContainerRunner:
    """The life of one container: process, probes, restarts; its containerStatus."""

    def __init__(self, container: Mapping, *, start: Callable[[Path], Awaitable[Any]],
                 restart_policy: str, pod_desc: str, pod_ip: str, env: Mapping[str, str],
                 cwd: Path, log_dir: Path, termination_path: Path | None,
                 implicit_ready: Callable[[], Awaitable[bool]] | None,
                 on_change: Callable[[], None], on_event: EventSink,
                 backoff: Backoff | None = None, grace: float = 30.0,
                 wrap: Callable[[list[str]], list[str]] | None = None,
                 rootfs: Path | None = None):
        self.container = container
        self.name = str(container["name"])
        self._start = start  # log path -> a started ContainerProcess
        self.restart_policy = restart_policy
        self.pod_desc = pod_desc  # name_namespace(uid), as the kubelet names a pod
        self.pod_ip = pod_ip
        self.env = dict(env)
        self.cwd = cwd
        self.log_dir = log_dir
        self.termination_path = termination_path
        self.wrap = wrap  # how a command runs as the pod's user (exec probes, kubectl exec)
        self.rootfs = rootfs  # the pod's files: the termination log is read only inside it
        self._implicit_ready = implicit_ready  # a notebook's port, when there's no probe
        self._on_change = on_change
        self._on_event = on_event
        self.backoff = backoff or Backoff()
        self.grace = grace
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.container_id = ""
        self.process: Any = None
        self._probes: list[probes.ProbeWorker] = []
        self._liveness_failed = asyncio.Event()
        self._stopping = False

    # --- status ------------------------------------------------------------------------

    def status(self) -> dict:
        image = self.container.get("image") or "unknown"
        out: dict[str, Any] = {"name": self.name, "image": image, "imageID": "",
                               "ready": self.ready, "restartCount": self.restart_count,
                               "started": self.started, "state": self.state}
        if self.container_id:
            out["containerID"] = self.container_id
            out["imageID"] = f"kdash-local://{image}"
        if self.last_state:
            out["lastState"] = self.last_state
        return out

    @property
    def terminated(self) -> bool:
        """Ended for good (no restart will follow)."""
        return "terminated" in self.state

    def log_path(self, previous: bool = False) -> Path | None:
        """The log of the current container instance, or of the one before it."""
        index = self.restart_count - (1 if previous else 0)
        if index < 0 or (previous and not self.last_state and not self.terminated):
            return None
        return self.log_dir / f"{index}.log"

    def output_done(self) -> bool:
        return self.process is None or self.process.output_done

    # --- life ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Until the container has terminated for good (or `stop`). A container never
        outlives its pod: cancelled (the pod's run ended), or stopped while its process
        was being made (`stop` then found none to stop), it stops what it started."""
        try:
            await self._run()
        except asyncio.CancelledError:
            self._stopping = True
            await self._stop_process_left()
            raise

    async def _stop_process_left(self) -> None:
        if self.process is not None:
            with contextlib.suppress(Exception):
                await self.process.stop(0)

    async def _run(self) -> None:
        while not self._stopping:
            if self.restart_count:
                await self._pulled_again()
            started_at = now_iso()
            self.container_id = f"kdash://{secrets.token_hex(32)}"
            await self._on_event("Created", "Container created", "Normal")
            try:
                self.process = await self._start(self.log_dir / f"{self.restart_count}.log")
            except OSError as e:
                code, reason, message = 128, "StartError", (
                    f"failed to create containerd task: failed to create shim task: OCI "
                    f"runtime create failed: runc create failed: unable to start container "
                    f'process: exec: "{e.filename or ""}": {e.strerror}')
                await self._on_event("Failed", f"Error: {message}", "Warning")
                if not await self._ended(code, reason, started_at, message):
                    return
                continue
            if self._stopping:  # the pod was deleted while this process was made
                await self._stop_process_left()
                return
            self.state = {"running": {"startedAt": started_at}}
            self.started = "startupProbe" not in self.container
            self.ready = False
            self._on_change()
            await self._on_event("Started", "Container started", "Normal")
            self._start_probes()
            code = await self._wait()
            await self._stop_probes()
            if self._stopping:
                return
            if not await self._ended(code, "Completed" if code == 0 else "Error", started_at):
                return

    async def _pulled_again(self) -> None:
        """A restart finds its image on the node, unless the policy pulls every time."""
        image = self.container.get("image") or ""
        if self.container.get("imagePullPolicy") == "Always":
            await self._on_event("Pulling", f'Pulling image "{image}"', "Normal")
            await self._on_event("Pulled", f'Successfully pulled image "{image}" in 0s (0s '
                                           f"including waiting). Image size: 0 bytes.",
                                 "Normal")
        else:
            await self._on_event("Pulled", f'Container image "{image}" already present on '
                                           f"machine and can be accessed by the pod", "Normal")

    async def _wait(self) -> int:
        """The exit code: the process ended, or liveness had it killed."""
        exited = asyncio.ensure_future(self.process.wait())
        killed = asyncio.ensure_future(self._liveness_failed.wait())
        try:
            await asyncio.wait({exited, killed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self.process.stop(self.grace)
            code = await exited
        finally:
            exited.cancel()
            killed.cancel()
        self._liveness_failed.clear()
        return 128 - code if code < 0 else code  # killed by a signal: 128 + signal

    async def _ended(self, code: int, reason: str, started_at: str,
                     message: str | None = None) -> bool:
        """Record the ended instance; True when the container will run again."""
        finished = time.time()
        term: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": started_at,
                                "finishedAt": now_iso(), "containerID": self.container_id}
        message = message or self._termination_message(code)
        if message:
            term["message"] = message
        self.ready = False
        self.started = False
        if not should_restart(self.restart_policy, code):
            self.state = {"terminated": term}
            self._on_change()
            return False
        wait = self.backoff.wait_after(finished)
        self.last_state = {"terminated": term}
        if wait:
            text = (f"back-off {go_duration(wait)} restarting failed container={self.name} "
                    f"pod={self.pod_desc}")
            self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": text}}
            self._on_change()
            await self._on_event("BackOff", f"Back-off restarting failed container "
                                            f"{self.name} in pod {self.pod_desc}", "Warning")
            await asyncio.sleep(wait)
            self.backoff.advance(finished)
        self.restart_count += 1
        return not self._stopping

    def _termination_message(self, code: int) -> str:
        message = ""
        if self.termination_path is not None:
            with contextlib.suppress(OSError):
                if self.rootfs is not None:  # the pod owns that file and its directories
                    data = podsandbox.read_beneath(self.rootfs, self.termination_path,
                                                   TERMINATION_MESSAGE_BYTES)
                else:
                    with open(self.termination_path, "rb") as f:
                        data = f.read(TERMINATION_MESSAGE_BYTES)
                message = data.decode(errors="replace")
        policy = self.container.get("terminationMessagePolicy") or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            path = self.log_path()
            if path is not None:
                text = containerlogs.read(path, containerlogs.LogOptions(
                    tail_lines=FALLBACK_LOG_LINES))
                message = text[-FALLBACK_LOG_BYTES:].decode(errors="replace")
        return message

    async def stop(self, grace: float) -> int | None:
        """Stop for good (the pod is deleted): SIGTERM, SIGKILL after `grace`."""
        self._stopping = True
        await self._stop_probes()
        if self.process is None:
            return None
        return await self.process.stop(grace)

    # --- probes -------------------------------------------------------------------------

    def _start_probes(self) -> None:
        startup = self.container.get("startupProbe")
        if startup:
            self._add_probe("Startup", startup, self._startup_result)
        else:
            self._start_health_probes()

    def _start_health_probes(self) -> None:
        readiness = self.container.get("readinessProbe")
        if readiness:
            self._add_probe("Readiness", readiness, self._readiness_result)
        elif self._implicit_ready is not None:
            task = asyncio.ensure_future(self._wait_implicit_ready())
            self._probes.append(_TaskProbe(task))  # type: ignore[arg-type]
        else:
            self.ready = True
            self._on_change()
        liveness = self.container.get("livenessProbe")
        if liveness:
            self._add_probe("Liveness", liveness, self._liveness_result)

    def _add_probe(self, kind: str, probe: Mapping,
                   on_result: Callable[[bool], Awaitable[None]]) -> None:
        async def run_once() -> tuple[bool, str]:
            return await probes.check(probe, self.container, pod_ip=self.pod_ip,
                                      env=self.env, cwd=self.cwd, argv=self.wrap)

        async def failed(message: str) -> None:
            await self._on_event("Unhealthy", message, "Warning")

        worker = probes.ProbeWorker(kind, probe, run_once, on_result, failed)
        self._probes.append(worker)
        worker.start()

    async def _stop_probes(self) -> None:
        workers, self._probes = self._probes, []
        for worker in workers:
            await worker.stop()

    async def _startup_result(self, ok: bool) -> None:
        if ok and not self.started:
            self.started = True
            self._on_change()
            self._start_health_probes()
        elif not ok:
            await self._kill(f"Container {self.name} failed startup probe")

    async def _readiness_result(self, ok: bool) -> None:
        if ok != self.ready:
            self.ready = ok
            self._on_change()

    async def _liveness_result(self, ok: bool) -> None:
        if not ok:
            await self._kill(f"Container {self.name} failed liveness probe")

    async def _kill(self, why: str) -> None:
        suffix = ", will be restarted" if self.restart_policy != "Never" else ""
        await self._on_event("Killing", why + suffix, "Normal")
        self._liveness_failed.set()

    async def _wait_implicit_ready(self) -> None:
        delay = 0.05
        assert self._implicit_ready is not None
        while not await self._implicit_ready():
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        self.ready = True
        self._on_change()


class _TaskProbe:
    """A plain task with a probe worker's stop()."""

    def __init__(self, task: asyncio.Future):
        self._task = task

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
