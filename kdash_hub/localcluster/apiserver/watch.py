"""Watch streams: chunked JSON lines of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events.

Resume from a resourceVersion (410 Expired when it has left the event window, a relist
request when it is from the future), `timeoutSeconds`, bookmarks every interval and ~2 s
before the deadline (as the watch cache does), Table objects for `kubectl get -w`, and an
abrupt close when a test drops watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

from aiohttp import web

from . import tables
from .routing import Target
from .selectors import parse_field_selector, parse_label_selector
from .status import APIError, bad_request

if TYPE_CHECKING:
    from .server import APIServer

_TRUE = {"1", "true", "True", "yes"}


async def serve_watch(srv: APIServer, request: web.Request, target: Target
                      ) -> web.StreamResponse:
    """Stream a watch as chunked JSON lines until timeoutSeconds, a drop or shutdown."""
    q = request.query
    rtype = target.rtype
    lm = parse_label_selector(q.get("labelSelector"))
    fm = parse_field_selector(q.get("fieldSelector"), rtype.kind)
    only = target.name  # /watch/namespaces/ns/pods/NAME

    def match(o: dict) -> bool:
        return lm(o) and fm(o) and (only is None or o["metadata"]["name"] == only)

    rv_param = q.get("resourceVersion", "")
    since: int | None
    if rv_param in ("", "0"):
        since = None
    else:
        try:
            since = int(rv_param)
        except ValueError:
            raise bad_request(f"invalid resource version: {rv_param!r}") from None
    try:
        timeout = float(q.get("timeoutSeconds") or srv.default_watch_timeout)
    except ValueError:
        raise bad_request("timeoutSeconds must be a number") from None
    bookmarks = q.get("allowWatchBookmarks", "") in _TRUE
    as_table = tables.wants_table(request.headers.get("Accept", ""))
    include = q.get("includeObject", "Metadata")
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "application/json", "Cache-Control": "no-cache, private"})
    response.enable_chunked_encoding()
    if since is not None and since > srv.store.rv:
        # a resourceVersion from the future (e.g. a client that outlived a restarted
        # emulator): wait a little, then tell it to relist, as the watch cache does
        for _ in range(30):
            await asyncio.sleep(0.1)
            if since <= srv.store.rv or srv._stopping:
                break
    try:
        if since is not None and since > srv.store.rv:
            raise APIError(504, "Timeout", f"Too large resource version: {since}, current: "
                           f"{srv.store.rv}", details={
                               "causes": [{"reason": "ResourceVersionTooLarge",
                                           "message": "Too large resource version"}],
                               "retryAfterSeconds": 1})
        watcher = srv.store.subscribe(rtype, target.namespace, match, since)
    except APIError as e:
        await response.prepare(request)
        await response.write(_line("ERROR", e.to_status()))
        await response.write_eof()
        return response
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # like the watch cache: a bookmark every interval, and one ~2 s before the deadline
    next_bookmark = loop.time() + min(srv.bookmark_interval, max(timeout - 2.0, 0.0))
    try:
        await response.prepare(request)
        while not srv._stopping:
            now = loop.time()
            if now >= deadline:
                break
            wait = deadline - now
            if bookmarks:
                if now >= next_bookmark:
                    await response.write(_line("BOOKMARK", {
                        "kind": rtype.kind, "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(srv.store.rv)}}))
                    next_bookmark = now + srv.bookmark_interval
                    if deadline - 2.0 > now:
                        next_bookmark = min(next_bookmark, deadline - 2.0)
                wait = min(wait, max(next_bookmark - now, 0.0))
            try:
                # not wait_for, whose Python 3.11 drops a cancellation that arrives as
                # an event does: the watch would run on after its client went
                async with asyncio.timeout(wait):
                    item = await watcher.queue.get()
            except TimeoutError:
                continue
            batch = [item]
            while not watcher.queue.empty():
                batch.append(watcher.queue.get_nowait())
            chunks = []
            for etype, obj in batch:
                if etype == "__DROP__":
                    if chunks:
                        await response.write(b"".join(chunks))
                    if request.transport is not None:
                        request.transport.close()
                    return response
                if etype == "__END__":
                    srv._stopping = True
                    break
                if as_table:
                    obj = tables.table(rtype, [obj], {
                        "resourceVersion": obj["metadata"]["resourceVersion"]}, include)
                    chunks.append(_line(etype, obj))
                else:
                    chunks.append(b'{"type":"' + etype.encode() + b'","object":' +
                                  srv.store.encode(obj) + b"}\n")
            if chunks:
                await response.write(b"".join(chunks))
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        srv.store.unsubscribe(watcher)
    return response


def _line(etype: str, obj: dict) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
