"""The HTTP side: an aiohttp app on 127.0.0.1 speaking the Kubernetes REST API.

`APIServer` wires the parts together and dispatches requests to the verbs (operations.py),
watch streams (watch.py), discovery and the /_kdash control API (control.py); it counts
requests, applies injected faults, and makes sure no request ends in an unhandled exception:
anything unexpected becomes a 500 InternalError Status.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from traitlets import Bool, Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import discovery, resources, tables
from .control import handle_control
from .controllers import Controllers
from .faults import Faults
from .operations import APPLY_PATCH, Operations
from .routing import Target, parse
from .status import (
    APIError,
    PageNotFound,
    bad_request,
    internal_error,
    invalid,
    method_not_allowed,
    ordered_details,
)
from .store import Store
from .streaming import PodStreams, serve_exec, serve_log
from .validation import (
    DEFAULT_KUBE_VERSION,
    Validator,
    request_duplicates,
    request_warnings,
)
from .watch import serve_watch
from .wire import json_response, read_body, status_response

log = logging.getLogger("kdash_hub.localcluster.apiserver")

_TRUE = {"1", "true", "True", "yes"}
_MAX_BODY = 3 * 1024 * 1024  # a real API server's request size limit
# kinds whose DELETE answers with the deleted object (ReturnDeletedObject in their real
# registry); the others answer with a Status
_RETURNS_DELETED_OBJECT = {"Pod", "Service", "PersistentVolumeClaim", "PersistentVolume",
                           "ServiceAccount", "ResourceQuota", "Namespace", "StorageClass",
                           "PodTemplate"}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _field_validation(value: str, method: str) -> str:
    """The fieldValidation directive of a write: Warn when not given, as on a real server."""
    if value in ("", "Ignore", "Warn", "Strict") or method not in ("POST", "PUT", "PATCH"):
        return value or "Warn"
    options = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
    raise invalid(options[method], "meta.k8s.io", "", [{
        "reason": "FieldValueNotSupported", "field": "fieldValidation",
        "message": f'Unsupported value: "{value}": supported values: "", "Ignore", "Strict", '
                   f'"Warn"'}])


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
        "Validate every write against the OpenAPI schema (unknown fields: a warning, or 400 "
        "under fieldValidation=Strict). Off only to measure its cost.")).tag(config=True)
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
        # the kubelet that runs the pods, for pods/log (streamed) and pods/exec
        self.pod_streams: PodStreams | None = None
        # (namespace, pod, container) -> log text or None: a plain log source, used when
        # there is no `pod_streams` (a test's stand-in kubelet)
        self.pod_log_source: Callable[[str, str, str], str | None] | None = None
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
        self._register_api_services()

    def _register_api_services(self) -> None:
        """One local APIService per served group-version, as kube-apiserver's aggregator
        registers them at start (`v1.`, `v1.apps`, ...), Available."""
        rtype = resources.by_kind("APIService")
        for group, versions in resources.groups().items():
            for version in versions:
                group_priority, version_priority = resources.API_SERVICE_PRIORITY.get(
                    (group, version), (1000, 15))
                name = f"{version}.{group}"
                spec: dict[str, Any] = {"group": group} if group else {}
                spec |= {"version": version, "groupPriorityMinimum": group_priority,
                         "versionPriority": version_priority}
                self.ops.create(rtype, None, {"metadata": {"name": name, "labels": {
                    "kube-aggregator.kubernetes.io/automanaged": "onstart"}}, "spec": spec})
                stored = self.ops.get(rtype, None, name)
                self.ops.update(rtype, None, name, {**stored, "status": {"conditions": [{
                    "type": "Available", "status": "True",
                    "lastTransitionTime": stored["metadata"]["creationTimestamp"],
                    "reason": "Local",
                    "message": "Local APIServices are always available"}]}},
                    subresource="status")

    def reset_counts(self) -> None:
        """Zero the request counters (e.g. between the phases of a benchmark)."""
        self.request_count.clear()
        self.resource_count.clear()
        self.request_log.clear()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
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
                return await handle_control(self, request)
            except APIError as e:
                return status_response(e)
            except Exception as e:  # noqa: BLE001
                log.exception("control request %s %s failed", request.method, path)
                return status_response(internal_error(f"{type(e).__name__}: {e}"))
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
            warnings: list[str] = []
            token = request_warnings.set(warnings)
            dup_token = request_duplicates.set([])
            try:
                response = await self._dispatch(request)
            finally:
                request_warnings.reset(token)
                request_duplicates.reset(dup_token)
            if warnings and not response.prepared:
                for w in warnings:
                    escaped = w.replace("\\", "\\\\").replace('"', '\\"')
                    response.headers.add("Warning", f'299 - "{escaped}"')
            status = response.status
            return response
        except APIError as e:
            status = e.code
            return status_response(e)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except web.HTTPException as e:  # e.g. 413 from aiohttp for an oversized body
            status = e.status
            if e.status == 413:
                return status_response(APIError(
                    413, "RequestEntityTooLarge",
                    f"Request entity too large: limit is {_MAX_BODY}"))
            return status_response(APIError(e.status, (e.reason or "").replace(" ", ""),
                                             e.text or e.reason or ""))
        except Exception as e:  # noqa: BLE001 - the contract: never an unhandled error
            log.exception("unexpected error on %s %s", request.method, request.path_qs)
            return status_response(internal_error(f"{type(e).__name__}: {e}"))
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
        fv = _field_validation(q.get("fieldValidation", ""), method)
        if method == "GET":
            if watch:
                return await serve_watch(self, request, target)
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
                    return json_response(tables.table(rtype, listed["items"], meta,
                                              q.get("includeObject", "Metadata")))
                return self._list_response(listed)
            if sub == "scale":
                return json_response(self.ops.get_scale(rtype, ns, name))
            if sub == "log":
                if self.pod_streams is not None:
                    return await serve_log(self, request, self.ops.get(rtype, ns, name), q)
                return self._pod_log(ns, name, q)
            if sub == "exec":
                return await serve_exec(self, request, self.ops.get(rtype, ns, name), q)
            obj = self.ops.get(rtype, ns, name)
            if sub is None and tables.wants_table(request.headers.get("Accept", "")):
                return json_response(tables.table(rtype, [obj], {
                    "resourceVersion": obj["metadata"]["resourceVersion"]},
                    q.get("includeObject", "Metadata")))
            return json_response(obj)
        if method == "POST" and sub == "exec":  # SPDY clients POST: refused there
            return await serve_exec(self, request, self.ops.get(rtype, ns, name), q)
        if method == "POST":
            body = await read_body(request)
            if sub == "binding" or rtype.kind == "Binding":
                return json_response(self.ops.bind(ns, body, pod_name=name if sub else None), 201)
            if sub == "token":
                return json_response(self.ops.token_request(ns, name, body), 201)
            if name is not None:
                raise method_not_allowed()
            return json_response(self.ops.create(rtype, ns, body, field_validation=fv,
                                         dry_run=dry_run), 201)
        if name is None and method == "DELETE":
            body = await read_body(request, optional=True)
            return json_response(self.ops.delete_collection(
                rtype, ns, label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"), options=self._delete_options(q, body)))
        if name is None:
            raise method_not_allowed()
        if method == "PUT":
            body = await read_body(request)
            if sub == "scale":
                return json_response(self.ops.update_scale(rtype, ns, name, body))
            if sub == "finalize":
                sub = None
            return json_response(self.ops.update(rtype, ns, name, body, subresource=sub,
                                         field_validation=fv, dry_run=dry_run))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "")
            body = await read_body(request, yaml_ok=ctype.startswith(APPLY_PATCH))
            if sub == "scale":
                return json_response(self.ops.update_scale(rtype, ns, name, body,
                                                           content_type=ctype))
            existed = self.store.raw(rtype, ns, name) is not None
            obj = self.ops.patch(rtype, ns, name, body, ctype, subresource=sub,
                                 field_validation=fv, dry_run=dry_run)
            return json_response(obj, 200 if existed else 201)
        if method == "DELETE":
            body = await read_body(request, optional=True)
            deleted = self.ops.delete(rtype, ns, name, self._delete_options(q, body),
                                      dry_run=dry_run)
            if rtype.kind in _RETURNS_DELETED_OBJECT or self.store.raw(rtype, ns, name):
                return json_response(deleted)  # still there (finalizers, grace) or such a kind
            details = ordered_details({"name": name, "group": rtype.group,
                                       "kind": rtype.plural,
                                       "uid": deleted["metadata"].get("uid")})
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Success", "details": details})
        raise method_not_allowed()

    def _pod_log(self, ns: str | None, name: str, q: Any) -> web.Response:
        """`kubectl logs`: text from `pod_log_source` (set by a kubelet that runs pods)."""
        pod = self.ops.get(resources.by_kind("Pod"), ns, name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise bad_request(f"a container name must be specified for pod {name}, choose one "
                              f"of: [{' '.join(map(str, containers))}]")
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        text = self.pod_log_source(ns or "", name, container) if self.pod_log_source else None
        if text is None:
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                              f"ContainerCreating")
        tail = q.get("tailLines")
        if tail and tail.isdigit():
            text = "".join(text.splitlines(keepends=True)[-int(tail):]) if int(tail) else ""
        return web.Response(text=text, content_type="text/plain")

    def _list_response(self, listed: dict) -> web.Response:
        """A list whose items are the stored versions' cached encodings."""
        head = {k: v for k, v in listed.items() if k != "items"}
        body = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"items":[' + \
            b",".join(self.store.encode(o, list_item=True) for o in listed["items"]) + b"]}"
        return web.Response(body=body, content_type="application/json")

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

    # ---------------------------------------------------------------- non-resource

    def _non_resource(self, path: str) -> web.Response:
        if path == "/version":
            return json_response(discovery.version_info(self.kube_version))
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return json_response(discovery.api_versions(f"{self.host}:{self.port}"))
        if path == "/apis":
            return json_response(discovery.api_group_list())
        parts = [p for p in path.split("/") if p]
        doc = None
        if path == "/openapi/v3":
            return json_response(discovery.openapi_v3_index())
        if path == "/openapi/v2":
            # clients before 1.27 (Debian's kubectl 1.20) only read the protobuf v2 document;
            # an empty one makes them leave validation to the server, which is strict here
            return web.Response(
                body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if path.startswith("/openapi/v3/"):
            doc = discovery.openapi_v3_document(path[len("/openapi/v3/"):])
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
        if doc is None:
            raise PageNotFound()
        return json_response(doc)
