"""Container probes as the kubelet runs them: httpGet, tcpSocket, exec (and grpc as a TCP
connect), with the probe's period, timeout and thresholds.

`check(probe, ...)` runs one probe and says (ok, output) in the kubelet's words (`HTTP probe
failed with statuscode: 500`, `dial tcp 127.1.2.3:80: connect: connection refused`);
`ProbeWorker` runs one probe of one container over time and reports each change of result
(ready / not ready, alive / to be restarted), as the kubelet's prober workers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

PROBE_USER_AGENT = "kube-probe/1.36"
MAX_OUTPUT = 10 * 1024  # the kubelet keeps at most this much of an exec probe's output

# the API server's defaults for a probe (SetDefaults_Probe)
DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
            "failureThreshold": 3}


def setting(probe: Mapping, key: str) -> int:
    value = probe.get(key)
    return int(value) if value else DEFAULTS.get(key, 0)


def resolve_port(port: Any, container: Mapping) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"couldn't find port: {port} in {container.get('name')}")


def _dial_error(host: str, port: int, err: BaseException) -> str:
    """Go's net.Dial error text for a refused/unreachable/timed out connection."""
    addr = f"{host}:{port}"
    if isinstance(err, TimeoutError):
        return f"dial tcp {addr}: i/o timeout"
    code = getattr(err, "errno", None)
    if code is None and isinstance(err.__cause__, OSError):
        code = err.__cause__.errno
    reason = {errno.ECONNREFUSED: "connection refused",
              errno.EHOSTUNREACH: "no route to host",
              errno.ENETUNREACH: "network is unreachable"}.get(code or 0, str(err) or "error")
    return f"dial tcp {addr}: connect: {reason}"


async def check_tcp(host: str, port: int, seconds: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(seconds):  # not wait_for: see ProbeWorker.stop
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as e:
        return False, _dial_error(host, port, e)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def check_http(action: Mapping, host: str, port: int, seconds: float
                     ) -> tuple[bool, str]:
    scheme = str(action.get("scheme") or "HTTP").lower()
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{action.get('host') or host}:{port}{path}"
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
    for h in action.get("httpHeaders") or []:
        headers[h.get("name", "")] = h.get("value", "")
    ctx: ssl.SSLContext | bool = False if scheme == "https" else True  # no verification
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as s:
            async with s.get(url, headers=headers, ssl=ctx, allow_redirects=True) as r:
                await r.content.read(MAX_OUTPUT)
                if 200 <= r.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {r.status}"
    except TimeoutError:
        return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                       f"while awaiting headers)")
    except aiohttp.ClientConnectorError as e:
        return False, f'Get "{url}": {_dial_error(action.get("host") or host, port, e)}'
    except aiohttp.ClientError as e:
        return False, f'Get "{url}": {e}'


async def check_exec(command: list[str], env: Mapping[str, str], cwd: Path | None,
                     seconds: float) -> tuple[bool, str]:
    """Run the command as the container would; exit code 0 is success."""
    if not command:
        return False, "exec probe has no command"
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=dict(env), cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        return False, (f"OCI runtime exec failed: exec failed: unable to start container "
                       f'process: exec: "{command[0]}": {e.strerror}')
    try:
        async with asyncio.timeout(seconds):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError) as e:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 9)  # a stopped probe leaves no command running either
        if isinstance(e, asyncio.CancelledError):
            raise
        await proc.wait()
        return False, f"command timed out: \"{' '.join(command)}\" timed out after {seconds:g}s"
    text = out[:MAX_OUTPUT].decode(errors="replace")
    return proc.returncode == 0, text


async def check(probe: Mapping, container: Mapping, *, pod_ip: str, env: Mapping[str, str],
                cwd: Path, argv: Callable[[list[str]], list[str]] | None = None
                ) -> tuple[bool, str]:
    """One run of `probe` against the container at `pod_ip`: (success, output)."""
    timeout = float(setting(probe, "timeoutSeconds"))
    try:
        if "httpGet" in probe:
            action = probe["httpGet"]
            return await check_http(action, pod_ip, resolve_port(action.get("port"), container),
                                    timeout)
        if "tcpSocket" in probe:
            action = probe["tcpSocket"]
            port = resolve_port(action.get("port"), container)
            return await check_tcp(action.get("host") or pod_ip, port, timeout)
        if "grpc" in probe:  # no gRPC client here: the port must at least accept
            return await check_tcp(pod_ip, int(probe["grpc"].get("port") or 0), timeout)
        if "exec" in probe:
            command = [str(c) for c in probe["exec"].get("command") or []]
            return await check_exec(argv(command) if argv else command, env, cwd, timeout)
    except ValueError as e:
        return False, str(e)
    return False, "probe has no handler"


STOP_RETRY_SECONDS = 0.2  # how long a stopped probe may take before it is cancelled again


class ProbeWorker:
    """Runs one probe (`kind`: Readiness, Liveness, Startup) of one container until
    stopped, calling `on_result(ok)` when the thresholded result changes and
    `on_failure(message)` for each failed run (the kubelet's `Unhealthy` event)."""

    def __init__(self, kind: str, probe: Mapping, run: Callable[[], Awaitable[tuple[bool, str]]],
                 on_result: Callable[[bool], Awaitable[None]],
                 on_failure: Callable[[str], Awaitable[None]]):
        self.kind = kind
        self.probe = probe
        self._run = run
        self._on_result = on_result
        self._on_failure = on_failure
        self.result: bool | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"{self.kind} probe")

    async def stop(self) -> None:
        """End the probe's loop, and wait until it has ended. Cancelled again until it
        ends: Python 3.11's asyncio.wait_for drops a cancellation that arrives as its
        awaitable completes (a connection made as the container is stopped), and a loop
        that lost it would run on and hold the container's stop for ever."""
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_RETRY_SECONDS)
        if task is not None and not task.cancelled():
            task.exception()  # retrieved (a probe's own error was reported by its loop)

    async def _loop(self) -> None:
        await asyncio.sleep(setting(self.probe, "initialDelaySeconds"))
        period = setting(self.probe, "periodSeconds")
        successes = failures = 0
        while True:
            ok, output = await self._run()
            if ok:
                successes, failures = successes + 1, 0
                if self.result is not True and successes >= setting(
                        self.probe, "successThreshold"):
                    self.result = True
                    await self._on_result(True)
            else:
                successes, failures = 0, failures + 1
                await self._on_failure(f"{self.kind} probe failed: {output}")
                if self.result is not False and failures >= setting(
                        self.probe, "failureThreshold"):
                    self.result = False
                    await self._on_result(False)
                    failures = 0
            await asyncio.sleep(period)
