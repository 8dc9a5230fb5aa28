"""The kubelet's Event recorder: a recorded Event never waits for the API server, comes out
in the order it was recorded, is counted up when it happens again, and is not lost when
the recorder stops or a write fails."""

from __future__ import annotations

import asyncio

from kdash_hub.localcluster.apiclient import ApiError
from kdash_hub.localcluster.eventrecorder import EventRecorder
from tests.fixtures.polling import eventually

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
       "spec": {"nodeName": "node-0"}}


class SlowAPI:
    """Answers each request once `open` is set; records what was asked."""

    def __init__(self, fail: set[str] = frozenset()):
        self.open = asyncio.Event()
        self.calls: list[tuple[str, str, dict]] = []
        self.fail = fail

    async def request(self, method: str, path: str, body: dict | None = None,
                      content_type: str | None = None) -> dict:
        await self.open.wait()
        self.calls.append((method, path, body or {}))
        if (body or {}).get("reason") in self.fail:
            raise ApiError(500, "injected")
        return body or {}


async def until(check) -> None:
    async def checked() -> bool:
        return check()
    await eventually(checked, "the Events written", within=5.0, interval=0.005)


async def test_recording_does_not_wait_for_the_api_server_and_keeps_the_order():
    api = SlowAPI()
    recorder = EventRecorder(api)
    recorder.start()
    for reason in ("Pulling", "Pulled", "Created", "Started"):
        recorder.record(POD, reason, f"{reason} it", field_path="spec.containers{main}")
    await asyncio.sleep(0.05)
    assert api.calls == []  # nothing written yet, and nobody waited for it
    api.open.set()
    await until(lambda: len(api.calls) == 4)
    assert [body["reason"] for _, _, body in api.calls] == [
        "Pulling", "Pulled", "Created", "Started"]
    method, path, first = api.calls[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/ns/events")
    assert first["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "p",
                                       "namespace": "ns", "uid": "u-1",
                                       "resourceVersion": "7",
                                       "fieldPath": "spec.containers{main}"}
    assert first["source"] == {"component": "kubelet", "host": "node-0"}
    await recorder.stop()


async def test_the_same_event_again_is_counted_up_on_the_first():
    api = SlowAPI()
    api.open.set()
    recorder = EventRecorder(api)
    recorder.start()
    for _ in range(3):
        recorder.record(POD, "FailedMount", "configmap x not found", kind="Warning")
    await recorder.stop()
    assert [(m, b.get("count")) for m, _, b in api.calls] == [
        ("POST", 1), ("PATCH", 2), ("PATCH", 3)]
    name = api.calls[0][2]["metadata"]["name"]
    assert all(path.endswith(f"/events/{name}") for _, path, _ in api.calls[1:])


async def test_a_failed_write_is_logged_and_the_next_one_still_goes():
    api = SlowAPI(fail={"Pulled"})
    api.open.set()
    recorder = EventRecorder(api)
    recorder.start()
    for reason in ("Pulled", "Created"):
        recorder.record(POD, reason, reason)
    await recorder.stop()
    assert [b["reason"] for _, _, b in api.calls] == ["Pulled", "Created"]


async def test_stop_writes_what_was_queued_and_later_events_are_still_written():
    api = SlowAPI()
    recorder = EventRecorder(api)
    recorder.start()
    recorder.record(POD, "Killing", "Stopping container main")
    stopping = asyncio.ensure_future(recorder.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the queued Event
    api.open.set()
    await stopping
    assert [b["reason"] for _, _, b in api.calls] == ["Killing"]
    recorder.record(POD, "Killing", "Stopping container side")  # after stop
    await until(lambda: len(api.calls) == 2)
    assert api.calls[1][2]["message"] == "Stopping container side"
