"""The kubelet API a real kube-apiserver calls for `kubectl logs` and `kubectl exec`.

On the real control plane the API server doesn't run pods: for `pods/log` and `pods/exec`
it connects to the node's kubelet at the node's InternalIP and `daemonEndpoints.
kubeletEndpoint.Port`, over HTTPS, verifying the kubelet's serving certificate with the
cluster CA (`--kubelet-certificate-authority`) and presenting its own client certificate
(`--kubelet-client-certificate`). This server answers:

- `GET /containerLogs/{namespace}/{pod}/{container}` with the log options of PodLogOptions
  (`follow`, `tailLines`, `limitBytes`, `sinceSeconds`, `timestamps`, `previous`),
  streamed while following;
- `/exec/{namespace}/{pod}/{container}?command=...&input=&output=&error=&tty=` as a
  WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`), the command run in the container
  as its user (`Kubelet.start_exec`). The API server passes the client's WebSocket through
  only with its stream translation off (`TranslateStreamCloseWebsocketRequests=false`,
  otherwise it would speak SPDY to the kubelet, which this server doesn't);
- `GET /healthz`.

Only clients with a certificate of the cluster CA whose common name is one of
`allowed_users` (the API server's kubelet client) get in: 401 without one, 403 otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from .apiserver.status import APIError
from .apiserver.streaming import EXEC_PROTOCOLS, _pump_exec, log_options

if TYPE_CHECKING:
    from .kubelet import Kubelet

log = logging.getLogger("kdash_hub.localcluster.kubeletserver")

API_SERVER_CLIENT = "kube-apiserver-kubelet-client"
_TRUE = {"1", "true", "True"}


def _common_name(request: web.Request) -> str | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class KubeletServer:
    """HTTPS on `host:port` (port 0: any free one) for the node's kubelet (module docstring)."""

    def __init__(self, kubelet: Kubelet, host: str, *, cert: Path, key: Path, client_ca: Path,
                 port: int = 0, allowed_users: tuple[str, ...] = (API_SERVER_CLIENT,)):
        self.kubelet = kubelet
        self.host = host
        self.port = port
        self.allowed_users = allowed_users
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        context.load_cert_chain(str(cert), str(key))
        context.verify_mode = ssl.CERT_OPTIONAL  # no certificate: a 401, not a TLS error
        self.ssl_context = context
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self._exec)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _authenticate(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        user = _common_name(request)
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        if user not in self.allowed_users:
            return web.Response(status=403, text=f"Forbidden (user={user})")
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        try:
            options = log_options(request.query, pod)
        except APIError as e:
            return web.Response(status=400, text=str(e))
        from .kubelet import PodStreamError

        try:
            chunks = await self.kubelet.open_log(ns, pod, container, options)
        except PodStreamError as e:
            return web.Response(status=e.status, text=e.message)
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/plain", "Cache-Control": "no-cache, private"})
        if options.follow:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for chunk in chunks:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the API server (its client) left
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        return response

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        from .kubelet import PodStreamError

        ns, pod = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        q = request.query
        command = q.getall("command", [])
        # the API server asks the kubelet with its own names: input, output, error, tty
        want = {k: (q.get(k, "") or q.get(param, "")) in _TRUE
                for k, param in (("stdin", "input"), ("stdout", "output"),
                                 ("stderr", "error"), ("tty", "tty"))}
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="this kubelet speaks WebSocket "
                                "(v5.channel.k8s.io, v4.channel.k8s.io) for exec, not SPDY")
        try:
            session = await self.kubelet.start_exec(ns, pod, container, command,
                                                    tty=want["tty"], stdin=want["stdin"])
        except PodStreamError as e:
            return web.Response(status=e.status, text=e.message)
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
        try:
            await ws.prepare(request)
            await _pump_exec(ws, session, command, want)
        finally:
            session.kill()
            session.close()
        return ws
