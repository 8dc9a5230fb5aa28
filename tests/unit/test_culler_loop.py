"""The service loop keeps going while the hub is down, and stops when told to."""

from __future__ import annotations

import asyncio

from kdash_hub.dev.ports import free_port
from kdash_hub.services.culler.app import CullerApp
from kdash_hub.services.culler.hubapi import HubAPI


async def test_run_forever_survives_a_dead_hub_and_stops_on_request():
    url = f"http://127.0.0.1:{free_port()}/hub/api"
    app = CullerApp(hub_api_url=url, api_token="x", opt_out_group="")
    hub = HubAPI(url, "x", retries=0)
    culler = app.make_culler(hub=hub)
    stop = asyncio.Event()
    task = asyncio.create_task(culler.run_forever(0.05, stop=stop))
    for _ in range(200):
        errors = {s.labels["kind"]: s.value for m in culler.metrics.registry.collect()
                  for s in m.samples if s.name == "kdash_culler_errors_total"}
        if errors.get("hub", 0) >= 3:
            break
        await asyncio.sleep(0.02)
    assert not task.done()  # still running after several failed cycles
    stop.set()
    await asyncio.wait_for(task, 5)
    await hub.close()
    assert errors["hub"] >= 3
    cycles = [s.value for m in culler.metrics.registry.collect() for s in m.samples
              if s.name == "kdash_culler_cycle_duration_seconds_count"]
    assert cycles[0] >= 3
