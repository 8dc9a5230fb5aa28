"""The kubelet's and scheduler's Events, recorded without waiting for the API server.

A real kubelet never waits for an Event to be written: client-go's recorder puts it on a
queue that one goroutine sends to the API server, and the pod's set-up goes on. Awaiting
each Event instead (Pulling, Pulled, Created, Started, each a round trip) put four
requests on the way from a bound pod to its Running status, each queued behind whatever
else the API server had to do: under a burst of starts, seconds. Here too one task writes
the recorded Events in the order they were recorded (so a repeated one counts up the same
Event, as the recorder's correlator does), and `record` returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp

from .apiclient import MERGE_PATCH, ApiError, KubeHTTP
from .podstatus import now_iso

log = logging.getLogger("kdash_hub.localcluster.kubelet")

# the same Event again is counted up on the one written before, for this many Events
REMEMBERED = 4096


@dataclass(frozen=True)
class Recorded:
    """One Event as recorded: its time is when it happened, not when it is written."""

    pod: dict
    reason: str
    message: str
    kind: str
    component: str
    field_path: str | None
    at: str


class EventRecorder:
    """Writes the recorded Events about pods, one at a time, in their order."""

    def __init__(self, api: KubeHTTP):
        self.api = api
        self._seen: dict[tuple, tuple[str, int]] = {}  # same Event again: count it up
        self._queue: asyncio.Queue[Recorded] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._alone: set[asyncio.Task] = set()  # Events written outside start..stop

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="kubelet-events")

    async def stop(self, flush_seconds: float = 2.0) -> None:
        """Write what is queued (for at most `flush_seconds`), then stop. An Event recorded
        before `start` or after `stop` is written by a task of its own."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), flush_seconds)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    def record(self, pod: dict, reason: str, message: str, *, kind: str = "Normal",
               component: str = "kubelet", field_path: str | None = None) -> None:
        """Queue an Event about the pod; its failure to be written is logged, never raised."""
        item = Recorded(pod, reason, message, kind, component, field_path, now_iso())
        if self._writer is None:  # not started, or stopped
            task = asyncio.ensure_future(self.write(item))
            self._alone.add(task)
            task.add_done_callback(self._alone.discard)
            return
        self._queue.put_nowait(item)

    async def _write_all(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self.write(item)
            finally:
                self._queue.task_done()

    async def write(self, item: Recorded) -> None:
        """Post the Event, or count up the same one written before."""
        pod = item.pod
        meta = pod["metadata"]
        involved = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                    "namespace": meta["namespace"], "uid": meta.get("uid", "")}
        if meta.get("resourceVersion"):
            involved["resourceVersion"] = meta["resourceVersion"]
        if item.field_path:
            involved["fieldPath"] = item.field_path
        source = {"component": item.component}
        if item.component == "kubelet" and (pod.get("spec") or {}).get("nodeName"):
            source["host"] = pod["spec"]["nodeName"]
        events = f"/api/v1/namespaces/{meta['namespace']}/events"
        same = (meta["namespace"], meta.get("uid", ""), item.field_path, item.reason,
                item.message, item.kind)
        seen = self._seen.get(same)
        try:
            if seen is not None:
                name, count = seen
                try:
                    await self.api.request("PATCH", f"{events}/{name}", body={
                        "count": count + 1, "lastTimestamp": item.at},
                        content_type=MERGE_PATCH)
                    self._seen[same] = (name, count + 1)
                    return
                except ApiError as e:
                    if e.status != 404:
                        raise
            name = f"{meta['name']}.{time.time_ns():x}"
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": meta["namespace"]},
                "involvedObject": involved, "reason": item.reason, "message": item.message,
                "type": item.kind, "source": source, "firstTimestamp": item.at,
                "lastTimestamp": item.at, "count": 1, "reportingComponent": item.component,
                "reportingInstance": source.get("host", item.component),
            }
            await self.api.request("POST", events, body=event)
            if len(self._seen) > REMEMBERED:
                self._seen.pop(next(iter(self._seen)))
            self._seen[same] = (name, 1)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            log.debug("event %s for %s not posted: %s", item.reason, meta["name"], e)
