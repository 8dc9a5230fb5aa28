"""The /_kdash/ control API: drive an emulator that runs in another process.

`GET|POST|DELETE /_kdash/faults`, `DELETE /_kdash/faults/ID`, `POST /_kdash/drop-watches`,
`GET /_kdash/requests`, `GET /_kdash/requests/by-resource`, `POST /_kdash/requests/reset`,
`POST /_kdash/compact`. These requests are neither counted nor subject to faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .status import APIError, bad_request
from .wire import json_response, read_body

if TYPE_CHECKING:
    from .server import APIServer


async def handle_control(srv: APIServer, request: web.Request) -> web.Response:
    """/_kdash/*: faults, dropped watches, request counters, compaction."""
    path, method = request.path.rstrip("/"), request.method
    if path == "/_kdash/faults":
        if method == "GET":
            return json_response({"faults": [f.to_dict() for f in srv.faults.faults],
                          "fired": srv.faults.fired})
        if method == "POST":
            spec = await read_body(request)
            if not isinstance(spec, dict):
                raise bad_request("fault must be a JSON object")
            allowed = {"method", "path_regex", "status", "reason", "times", "latency",
                       "message", "fraction", "seed"}
            unknown = set(spec) - allowed
            if unknown:
                raise bad_request(f"unknown fault fields: {sorted(unknown)}")
            try:
                fault = srv.faults.add(**spec)
            except (TypeError, ValueError) as e:
                raise bad_request(str(e)) from None
            return json_response(fault.to_dict(), 201)
        if method == "DELETE":
            srv.faults.clear()
            return json_response({"cleared": True})
    if path.startswith("/_kdash/faults/") and method == "DELETE":
        tail = path.rsplit("/", 1)[1]
        if tail.isdigit():
            srv.faults.remove(int(tail))
            return json_response({"removed": int(tail)})
    if path == "/_kdash/drop-watches" and method == "POST":
        return json_response({"dropped": srv.faults.drop_watches()})
    if path == "/_kdash/requests" and method == "GET":
        return json_response(dict(srv.request_count))
    if path == "/_kdash/requests/by-resource" and method == "GET":
        return json_response(dict(srv.resource_count))
    if path == "/_kdash/requests/reset" and method == "POST":
        srv.reset_counts()
        return json_response({"reset": True})
    if path == "/_kdash/compact" and method == "POST":
        srv.store.compact()
        return json_response({"compactedResourceVersion": str(srv.store.compacted_rv)})
    raise APIError(404, "NotFound", f"no such control endpoint: {method} {path}")
