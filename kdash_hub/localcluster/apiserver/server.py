"""The HTTP side: an aiohttp app on 127.0.0.1 speaking the Kubernetes REST API.

Routing, body decoding, watch streaming (chunked JSON lines with bookmarks and timeouts),
request counters, fault injection and the rule that no request ever ends in an unhandled
exception: anything unexpected becomes a 500 InternalError Status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from typing import Any

import yaml
from aiohttp import web
from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import discovery, resources, tables
from .controllers import Controllers
from .faults import Faults
from .operations import APPLY_PATCH, Operations
from .routing import Target, parse
from .selectors import parse_field_selector, parse_label_selector
from .status import APIError, bad_request, internal_error, method_not_allowed
from .store import Store
from .validation import DEFAULT_KUBE_VERSION, Validator

log = logging.getLogger("kdash_hub.localcluster.apiserver")

_TRUE = {"1", "true", "True", "yes"}
# kinds whose DELETE answers with the deleted object; the others answer with a Status
_RETURNS_DELETED_OBJECT = {"Pod", "Service", "PersistentVolumeClaim", "PersistentVolume"}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


def _status_response(err: APIError) -> web.Response:
    return _json(err.to_status(), err.code)


class APIServer(LoggingConfigurable):
    """An in-process Kubernetes API server.

    `APIServer(host="127.0.0.1", port=0)`; `await start()`; `url`, `port`; `store` (objects,
    watch), `ops` (the verbs with full semantics, for in-process callers), `faults` (fault
    injection), `request_count` (Counter by verb: get/list/watch/create/update/patch/delete/
    deletecollection/discovery/fault, plus "total"), `resource_count` ("create pods", ...),
    `request_log`; `await stop()`.
    """

    host = Unicode("127.0.0.1", help="Address to listen on (loopback only in tests).").tag(
        config=True)
    port = Int(0, help="TCP port; 0 picks a free one (read `port` after start).").tag(
        config=True)
    kube_version = Unicode(DEFAULT_KUBE_VERSION, help=(
        "Kubernetes version the server claims in /version and whose kubernetes-validate "
        "schemas it validates against.")).tag(config=True)
    validate = Bool(True, help=(
        "Validate every write against the strict OpenAPI schema (422 on unknown fields). "
        "Off only to measure its cost.")).tag(config=True)
    event_window = Int(5000, help=(
        "How many events the watch cache keeps; a watch from an older resourceVersion gets "
        "410 Expired.")).tag(config=True)
    bookmark_interval = Float(5.0, help=(
        "Seconds between BOOKMARK events on watches that allow them.")).tag(config=True)
    default_watch_timeout = Float(1800.0, help=(
        "Watch duration when the client gives no timeoutSeconds.")).tag(config=True)
    workload_controllers = Bool(True, help=(
        "Run the minimal Deployment/StatefulSet/Job controllers (pods for workloads).")).tag(
        config=True)
    graceful_pod_deletion = Bool(False, help=(
        "Keep a deleted pod that is bound to a node (with a deletionTimestamp) until it is "
        "deleted again with gracePeriodSeconds=0, as a kubelet does; off: pods go at once."
    )).tag(config=True)
    namespace_delay = Float(0.05, help=(
        "Seconds a deleted namespace stays Terminating before its content is deleted.")).tag(
        config=True)

    def __init__(self, host: str | None = None, port: int | None = None, **kwargs: Any):
        if host is not None:
            kwargs["host"] = host
        if port is not None:
            kwargs["port"] = port
        super().__init__(**kwargs)
        self.store = Store(event_window=self.event_window)
        self.validator = Validator(self.kube_version, schema=self.validate)
        self.ops = Operations(self.store, self.validator,
                              graceful_pod_deletion=self.graceful_pod_deletion)
        self.ops.gc.namespace_delay = self.namespace_delay
        self.faults = Faults(self.store)
        self.controllers = Controllers(self.ops, workloads=self.workload_controllers)
        self.request_count: collections.Counter[str] = collections.Counter()
        # "verb resource" -> count, e.g. "create pods", "watch events"
        self.resource_count: collections.Counter[str] = collections.Counter()
        self.request_log: collections.deque[tuple[str, str, int]] = collections.deque(
            maxlen=10000)
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._bootstrap()

    # ---------------------------------------------------------------- lifecycle

    def _bootstrap(self) -> None:
        ns = resources.by_kind("Namespace")
        for name in SYSTEM_NAMESPACES:
            self.ops.create(ns, None, {"metadata": {"name": name}})
        svc = resources.by_kind("Service")
        self.ops.create(svc, "default", {"metadata": {"name": "kubernetes", "labels": {
            "component": "apiserver", "provider": "kubernetes"}}, "spec": {
            "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443,
                                                 "targetPort": 6443}]}})

    def reset_counts(self) -> None:
        """Zero the request counters (e.g. between the phases of a benchmark)."""
        self.request_count.clear()
        self.resource_count.clear()
        self.request_log.clear()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self) -> None:
        self._stopping = False
        self.controllers.start()
        self.faults.loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.build_app(), access_log=None,
                                     handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("emulated Kubernetes API server at %s", self.url)

    async def stop(self) -> None:
        self._stopping = True
        for w in list(self.store.watchers):
            w.queue.put_nowait(("__END__", {}))
        self.ops.gc.cancel()
        self.controllers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> APIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_kdash/"):
            try:
                return await self._control(request)
            except APIError as e:
                return _status_response(e)
        self.request_count["total"] += 1
        status = 500
        try:
            fault = self.faults.match(request.method, request.path_qs)
            if fault is not None:
                if fault.latency:
                    await asyncio.sleep(fault.latency)
                err = fault.error()
                if err is not None:
                    self.request_count["fault"] += 1
                    raise err
            response = await self._dispatch(request)
            status = response.status
            return response
        except APIError as e:
            status = e.code
            return _status_response(e)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:  # noqa: BLE001 - the contract: never an unhandled error
            log.exception("unexpected error on %s %s", request.method, request.path_qs)
            return _status_response(internal_error(f"{type(e).__name__}: {e}"))
        finally:
            self.request_log.append((request.method, request.path_qs, status))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        target = parse(path)
        if target is None:
            self.request_count["discovery"] += 1
            return self._non_resource(path)
        q = request.query
        method = request.method
        rtype, ns, name, sub = target.rtype, target.namespace, target.name, target.subresource
        watch = target.watch_prefix or q.get("watch", "") in _TRUE
        verb = {"GET": "watch" if watch else ("get" if name else "list"), "POST": "create",
                "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
        self.request_count[verb] += 1
        if verb not in rtype.verbs and not sub:
            raise method_not_allowed()
        self.resource_count[f"{verb} {rtype.plural}/{sub}" if sub else f"{verb} {rtype.plural}"
                            ] += 1
        return await self._resource_request(request, target, q, method, rtype, ns, name, sub)

    async def _resource_request(self, request: web.Request, target: Target, q: Any,
                                method: str, rtype: Any, ns: str | None, name: str | None,
                                sub: str | None) -> web.StreamResponse:
        watch = target.watch_prefix or q.get("watch", "") in _TRUE
        dry_run = bool(q.getall("dryRun", []))
        fv = q.get("fieldValidation", "Strict")
        if method == "GET":
            if watch:
                return await self._watch(request, target)
            if name is None:
                limit = q.get("limit")
                listed = self.ops.list(
                    rtype, ns, label_selector=q.get("labelSelector"),
                    field_selector=q.get("fieldSelector"),
                    limit=int(limit) if limit and limit.isdigit() else None,
                    continue_token=q.get("continue"))
                if tables.wants_table(request.headers.get("Accept", "")):
                    meta = {k: v for k, v in listed["metadata"].items()
                            if k != "remainingItemCount"}
                    return _json(tables.table(rtype, listed["items"], meta,
                                              q.get("includeObject", "Metadata")))
                return _json(listed)
            if sub == "scale":
                return _json(self.ops.get_scale(rtype, ns, name))
            obj = self.ops.get(rtype, ns, name)
            if sub is None and tables.wants_table(request.headers.get("Accept", "")):
                return _json(tables.table(rtype, [obj], {
                    "resourceVersion": obj["metadata"]["resourceVersion"]},
                    q.get("includeObject", "Metadata")))
            return _json(obj)
        if method == "POST":
            body = await self._body(request)
            if sub == "binding" or rtype.kind == "Binding":
                return _json(self.ops.bind(ns, body, pod_name=name if sub else None), 201)
            if name is not None:
                raise method_not_allowed()
            return _json(self.ops.create(rtype, ns, body, field_validation=fv,
                                         dry_run=dry_run), 201)
        if name is None and method == "DELETE":
            body = await self._body(request, optional=True)
            return _json(self.ops.delete_collection(
                rtype, ns, label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"), options=self._delete_options(q, body)))
        if name is None:
            raise method_not_allowed()
        if method == "PUT":
            body = await self._body(request)
            if sub == "scale":
                return _json(self.ops.update_scale(rtype, ns, name, body))
            if sub == "finalize":
                sub = None
            return _json(self.ops.update(rtype, ns, name, body, subresource=sub,
                                         field_validation=fv, dry_run=dry_run))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "")
            body = await self._body(request, yaml_ok=ctype.startswith(APPLY_PATCH))
            if sub == "scale":
                return _json(self.ops.update_scale(rtype, ns, name, body, content_type=ctype))
            existed = self.store.raw(rtype, ns, name) is not None
            obj = self.ops.patch(rtype, ns, name, body, ctype, subresource=sub,
                                 field_validation=fv, dry_run=dry_run)
            return _json(obj, 200 if existed else 201)
        if method == "DELETE":
            body = await self._body(request, optional=True)
            deleted = self.ops.delete(rtype, ns, name, self._delete_options(q, body),
                                      dry_run=dry_run)
            if rtype.kind in _RETURNS_DELETED_OBJECT or self.store.raw(rtype, ns, name):
                return _json(deleted)  # still there (finalizers, grace) or such a kind
            details = {"name": name, "kind": rtype.plural,
                       "uid": deleted["metadata"].get("uid")}
            if rtype.group:
                details["group"] = rtype.group
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "details": details})
        raise method_not_allowed()

    @staticmethod
    def _delete_options(q: Any, body: Any) -> dict:
        options = dict(body) if isinstance(body, dict) else {}
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            try:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise bad_request("gracePeriodSeconds must be an integer") from None
        if "orphanDependents" in q:
            options["orphanDependents"] = q["orphanDependents"] in _TRUE
        return options

    async def _body(self, request: web.Request, *, optional: bool = False,
                    yaml_ok: bool = False) -> Any:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        if "protobuf" in ctype or "cbor" in ctype:
            raise APIError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: application/json, application/yaml (got {ctype}; "
                           f"this emulator speaks JSON only)")
        yaml_ok = yaml_ok or ctype in ("application/yaml", "application/x-yaml")
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the body of the request was empty")
        try:
            if yaml_ok:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None

    # ---------------------------------------------------------------- non-resource

    def _non_resource(self, path: str) -> web.Response:
        if path == "/version":
            return _json(discovery.version_info(self.kube_version))
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(discovery.api_versions(f"{self.host}:{self.port}"))
        if path == "/apis":
            return _json(discovery.api_group_list())
        parts = [p for p in path.split("/") if p]
        doc = None
        if path == "/openapi/v3":
            return _json(discovery.openapi_v3_index())
        if path.startswith("/openapi/v3/"):
            doc = discovery.openapi_v3_document(path[len("/openapi/v3/"):])
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
        if doc is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return _json(doc)

    # ---------------------------------------------------------------- watch

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
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
            timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
        except ValueError:
            raise bad_request("timeoutSeconds must be a number") from None
        bookmarks = q.get("allowWatchBookmarks", "") in _TRUE
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        include = q.get("includeObject", "Metadata")
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.subscribe(rtype, target.namespace, match, since)
        except APIError as e:
            await response.prepare(request)
            await response.write(_line("ERROR", e.to_status()))
            await response.write_eof()
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # like the watch cache: a bookmark every interval, and one ~2 s before the deadline
        next_bookmark = loop.time() + min(self.bookmark_interval, max(timeout - 2.0, 0.0))
        try:
            await response.prepare(request)
            while not self._stopping:
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    if now >= next_bookmark:
                        await response.write(_line("BOOKMARK", {
                            "kind": rtype.kind, "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(self.store.rv)}}))
                        next_bookmark = now + self.bookmark_interval
                        if deadline - 2.0 > now:
                            next_bookmark = min(next_bookmark, deadline - 2.0)
                    wait = min(wait, max(next_bookmark - now, 0.0))
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
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
                        self._stopping = True
                        break
                    if as_table:
                        obj = tables.table(rtype, [obj], {
                            "resourceVersion": obj["metadata"]["resourceVersion"]}, include)
                    chunks.append(_line(etype, obj))
                if chunks:
                    await response.write(b"".join(chunks))
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(watcher)
        return response

    # ---------------------------------------------------------------- /_kdash control API

    async def _control(self, request: web.Request) -> web.Response:
        path, method = request.path.rstrip("/"), request.method
        if path == "/_kdash/faults":
            if method == "GET":
                return _json({"faults": [f.to_dict() for f in self.faults.faults],
                              "fired": self.faults.fired})
            if method == "POST":
                spec = await self._body(request)
                if not isinstance(spec, dict):
                    raise bad_request("fault must be a JSON object")
                allowed = {"method", "path_regex", "status", "reason", "times", "latency",
                           "message"}
                unknown = set(spec) - allowed
                if unknown:
                    raise bad_request(f"unknown fault fields: {sorted(unknown)}")
                try:
                    fault = self.faults.add(**spec)
                except (TypeError, ValueError) as e:
                    raise bad_request(str(e)) from None
                return _json(fault.to_dict(), 201)
            if method == "DELETE":
                self.faults.clear()
                return _json({"cleared": True})
        if path.startswith("/_kdash/faults/") and method == "DELETE":
            tail = path.rsplit("/", 1)[1]
            if tail.isdigit():
                self.faults.remove(int(tail))
                return _json({"removed": int(tail)})
        if path == "/_kdash/drop-watches" and method == "POST":
            return _json({"dropped": self.faults.drop_watches()})
        if path == "/_kdash/requests" and method == "GET":
            return _json(dict(self.request_count))
        if path == "/_kdash/requests/by-resource" and method == "GET":
            return _json(dict(self.resource_count))
        if path == "/_kdash/requests/reset" and method == "POST":
            self.reset_counts()
            return _json({"reset": True})
        if path == "/_kdash/compact" and method == "POST":
            self.store.compact()
            return _json({"compactedResourceVersion": str(self.store.compacted_rv)})
        raise APIError(404, "NotFound", f"no such control endpoint: {method} {path}")


def _line(etype: str, obj: dict) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"
