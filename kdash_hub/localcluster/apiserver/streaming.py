"""`pods/log` and `pods/exec`: what a real API server gets from the node's kubelet.

The kubelet that runs the pods is reached through `APIServer.pod_streams` (the local
cluster sets it): `open_log(namespace, pod, container, options)` gives the container's
output as an async iterator of bytes (following it with `follow=true`, chunked, until the
container ends or the client leaves); `start_exec(namespace, pod, container, command,
tty=, stdin=)` runs a command in it. Exec speaks the WebSocket channel protocols kubectl
(1.30+) and the Python clients use, `v5.channel.k8s.io` and `v4.channel.k8s.io`: one byte
of channel (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 terminal size, 255 close)
before each message. SPDY (older kubectl) is refused with a Status saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from ..containerlogs import LogOptions, parse_time
from .status import APIError, bad_request, invalid

if TYPE_CHECKING:
    from .server import APIServer

log = logging.getLogger("kdash_hub.localcluster.apiserver")

_TRUE = {"1", "true", "True"}
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class ExecSession(Protocol):
    async def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def resize(self, width: int, height: int) -> None: ...
    def output(self, stream: str) -> AsyncIterator[bytes]: ...
    async def wait(self) -> int: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...


class PodStreams(Protocol):
    """What a kubelet offers the API server. Errors carry `status` and `message`."""

    async def open_log(self, namespace: str, pod: str, container: str,
                       options: LogOptions) -> AsyncIterator[bytes]: ...

    def check_exec(self, namespace: str, pod: str, container: str | None) -> None: ...

    async def start_exec(self, namespace: str, pod: str, container: str | None,
                         command: list[str], *, tty: bool, stdin: bool) -> ExecSession: ...


def _kubelet_error(e: Exception) -> APIError:
    status = int(getattr(e, "status", 500))
    message = str(getattr(e, "message", e))
    if status == 404:
        return APIError(404, "NotFound", message)
    if status >= 500:
        return APIError(500, "InternalError", f"Internal error occurred: {message}",
                        causes=[{"message": message}])
    return bad_request(message)


def choose_container(pod: dict, wanted: str | None) -> str:
    """The container a request means; 400 as a real server words it otherwise."""
    name = pod["metadata"]["name"]
    containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    inits = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    if not wanted:
        if len(containers) == 1:
            return str(containers[0])
        choices = " ".join(map(str, containers))
        extra = f" or one of the init containers: [{' '.join(map(str, inits))}]" if inits else ""
        raise bad_request(f"a container name must be specified for pod {name}, choose one "
                          f"of: [{choices}]{extra}")
    if wanted not in containers and wanted not in inits:
        raise bad_request(f"container {wanted} is not valid for pod {name}")
    return wanted


def _int_option(q: Any, key: str, name: str, minimum: int) -> int | None:
    raw = q.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f'{key}: invalid value "{raw}"') from None
    if value < minimum:
        word = "greater than or equal to 0" if minimum == 0 else "greater than 0"
        raise invalid("PodLogOptions", "", name, [{
            "reason": "FieldValueInvalid", "field": key,
            "message": f"Invalid value: {value}: must be {word}"}])
    return value


def log_options(q: Any, name: str) -> LogOptions:
    """PodLogOptions from the query, validated as a real server does."""
    options = LogOptions(
        tail_lines=_int_option(q, "tailLines", name, 0),
        limit_bytes=_int_option(q, "limitBytes", name, 1),
        timestamps=q.get("timestamps", "") in _TRUE,
        follow=q.get("follow", "") in _TRUE,
        previous=q.get("previous", "") in _TRUE,
    )
    since_seconds = _int_option(q, "sinceSeconds", name, 1)
    since_time = q.get("sinceTime")
    if since_seconds is not None and since_time:
        raise invalid("PodLogOptions", "", name, [{
            "reason": "FieldValueForbidden", "field": "",
            "message": "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be "
                       "specified"}])
    if since_seconds is not None:
        options.since = time.time() - since_seconds
    elif since_time:
        try:
            options.since = parse_time(since_time)
        except ValueError:
            raise bad_request(f'sinceTime: invalid value "{since_time}"') from None
    return options


def _waiting_reason(pod: dict, container: str) -> str | None:
    """Why the container hasn't started yet, from the pod's status (None: it has)."""
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []):
        if cs.get("name") != container:
            continue
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and not (cs.get("lastState") or {}).get("terminated"):
            return str(waiting.get("reason") or "ContainerCreating")
        return None
    return "ContainerCreating"


async def serve_log(srv: APIServer, request: web.Request, pod: dict, q: Any
                    ) -> web.StreamResponse:
    meta = pod["metadata"]
    name, ns = meta["name"], meta.get("namespace", "")
    container = choose_container(pod, q.get("container"))
    options = log_options(q, name)
    waiting = _waiting_reason(pod, container)
    if waiting and not options.previous:
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                          f"{waiting}")
    streams: PodStreams | None = srv.pod_streams
    if streams is None:
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                          f"ContainerCreating")
    try:
        chunks = await streams.open_log(ns, name, container, options)
    except Exception as e:  # noqa: BLE001 - the kubelet's refusal, as a Status
        if hasattr(e, "status"):
            raise _kubelet_error(e) from None
        raise
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "text/plain", "Cache-Control": "no-cache, private"})
    if options.follow:
        response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
            if srv._stopping:
                break
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client left: stop following
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return response


def _status_json(code: int, command: list[str]) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    shown = "[" + " ".join(command) + "]"
    return json.dumps({
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
                   f"{shown}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


async def serve_exec(srv: APIServer, request: web.Request, pod: dict, q: Any
                     ) -> web.StreamResponse:
    meta = pod["metadata"]
    name, ns = meta["name"], meta.get("namespace", "")
    container = choose_container(pod, q.get("container"))
    command = q.getall("command", [])
    want = {k: q.get(k, "") in _TRUE for k in ("stdin", "stdout", "stderr", "tty")}
    if not command:
        raise bad_request("you must specify at least one command for the container")
    if not (want["stdin"] or want["stdout"] or want["stderr"]):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    streams: PodStreams | None = srv.pod_streams
    if streams is None:
        raise bad_request(f'container "{container}" in pod "{name}" has no process to exec '
                          f"in: exec needs the process kubelet")
    try:
        # the same answer to kubectl's WebSocket attempt and to its SPDY fallback
        streams.check_exec(ns, name, container)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request("Upgrade request required: the local cluster's API server "
                              "speaks WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) for "
                              "exec, not SPDY; use kubectl 1.30 or newer")
        session = await streams.start_exec(ns, name, container, command,
                                           tty=want["tty"], stdin=want["stdin"])
    except Exception as e:  # noqa: BLE001
        if hasattr(e, "status"):
            raise _kubelet_error(e) from None
        raise
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
    try:
        await ws.prepare(request)
        await _pump_exec(ws, session, command, want)
    finally:
        session.kill()
        session.close()
    return ws


async def _pump_exec(ws: web.WebSocketResponse, session: ExecSession, command: list[str],
                     want: dict[str, bool]) -> None:
    if ws.ws_protocol not in EXEC_PROTOCOLS:
        await ws.close(message=b"unsupported channel protocol")
        return

    async def copy(stream: str, channel: int) -> None:
        async for chunk in session.output(stream):
            if want[stream] or (want["tty"] and stream == "stdout"):
                await ws.send_bytes(bytes([channel]) + chunk)

    async def read_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and want["stdin"]:
                await session.write(data)
            elif channel == RESIZE:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    size = json.loads(data)
                    session.resize(int(size["Width"]), int(size["Height"]))
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                session.close_stdin()
        session.kill()  # the client went away: so does the command

    reader = asyncio.ensure_future(read_client())
    outputs = [asyncio.ensure_future(copy("stdout", STDOUT))]
    if not want["tty"]:
        outputs.append(asyncio.ensure_future(copy("stderr", STDERR)))
    try:
        code = await session.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*outputs, return_exceptions=True), 5.0)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_bytes(bytes([ERROR]) + _status_json(code, command))
            await ws.close()
    finally:
        for task in [reader, *outputs]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
