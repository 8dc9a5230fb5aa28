"""kdash-launcher as a hub-managed JupyterHub service: a tornado app configured with
traitlets (`python -m kdash_hub.services.launcher [--config FILE]`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from tornado import web
from traitlets import Bytes, Dict, Instance, Integer, Unicode, default
from traitlets.config import Application

from kdash_hub.kube import KubeResources, without_environment_lookups
from kdash_hub.templating import Catalog, load_configmaps, load_directories

from .api import DefaultHandler, api_routes
from .datasetspage import datasets_routes
from .forwardauth import forwardauth_routes
from .handlers import SECURITY_HEADERS
from .hubapi import HubClient
from .instances import InstanceManager
from .kubeconfig import kubeconfig_routes
from .proxy import proxy_routes
from .reconcile import Reconciler
from .settings import LauncherSettings
from .ui import ui_routes

WEB_DIR = Path(__file__).parent / "web"


class StaticFiles(web.StaticFileHandler):
    """The launcher's script and styles, with the security headers of its pages."""

    def set_default_headers(self) -> None:
        for key, value in SECURITY_HEADERS.items():
            self.set_header(key, value)


class LauncherApp(Application):
    name = "kdash-launcher"
    description = "Templated side services next to the notebook (a JupyterHub service)."
    classes = [LauncherSettings, HubOAuth]
    aliases = {"config": "LauncherApp.config_file", "port": "LauncherApp.port",
               "ip": "LauncherApp.ip", "log-level": "Application.log_level"}

    config_file = Unicode("", help="A Python config file (c.LauncherSettings.x = ...).").tag(
        config=True)
    ip = Unicode(help="Address to listen on (default: from JUPYTERHUB_SERVICE_URL).").tag(
        config=True)
    port = Integer(help="Port to listen on (default: from JUPYTERHUB_SERVICE_URL).").tag(
        config=True)
    kubeconfig = Unicode(
        "", help="Kubeconfig to use; empty: in-cluster config, else $KUBECONFIG / ~/.kube.",
    ).tag(config=True)
    tornado_settings = Dict(help="Extra tornado Application settings.").tag(config=True)
    cookie_secret = Bytes(
        help="Signs the launcher's login cookies. Default: derived from the service's hub API"
             " token, so logins survive restarts and are shared by replicas.",
    ).tag(config=True)

    @default("cookie_secret")
    def _default_cookie_secret(self) -> bytes:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            return os.urandom(32)
        return hashlib.sha256(b"kdash-launcher-cookie-secret:" + token.encode()).digest()
    launcher = Instance(LauncherSettings)
    catalog = Instance(Catalog)

    @default("ip")
    def _default_ip(self) -> str:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")
                        ).hostname or "127.0.0.1"

    @default("port")
    def _default_port(self) -> int:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")
                        ).port or 10101

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.parse_command_line(argv)  # the command line wins over the file
        self.launcher = LauncherSettings(parent=self)

    async def api_client(self) -> k8s_client.ApiClient:
        configuration = k8s_client.Configuration()
        if self.kubeconfig:
            await k8s_config.load_kube_config(config_file=self.kubeconfig,
                                              client_configuration=configuration)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                await k8s_config.load_kube_config(client_configuration=configuration)
        api_client = k8s_client.ApiClient(configuration)
        without_environment_lookups(api_client)
        return api_client

    async def load_catalog(self, kube: KubeResources) -> Catalog:
        s = self.launcher
        catalog = load_directories(s.template_dirs, Catalog(skip_ingress=s.skip_ingress),
                                   allowed_kinds=s.allowed_kinds)
        if s.template_configmap_namespace:
            cms = await kube.list("ConfigMap", s.template_configmap_namespace,
                                  label_selector=s.template_configmap_selector or None)
            load_configmaps(cms, catalog, s.allowed_kinds)
        for error in catalog.errors:
            self.log.error("template not loaded: %s", error)
        for template in catalog.templates.values():
            for note in template.skipped:
                self.log.info("%s: left out %s", template.source, note)
        self.log.info("templates: %s", ", ".join(catalog.templates) or "none")
        return catalog

    def make_app(self, manager: InstanceManager) -> web.Application:
        prefix = self.launcher.service_prefix
        hub_auth = HubOAuth.instance(parent=self, cache_max_age=60)
        routes = [
            (prefix + "oauth_callback", HubOAuthCallbackHandler),
            (prefix + r"static/(.*)", StaticFiles, {"path": str(WEB_DIR / "static")}),
            *kubeconfig_routes(prefix), *forwardauth_routes(prefix), *datasets_routes(prefix),
            *api_routes(prefix), *proxy_routes(prefix), *ui_routes(prefix),
        ]
        return web.Application(
            routes, manager=manager, hub_auth=hub_auth,
            template_path=str(WEB_DIR / "templates"),
            cookie_secret=self.cookie_secret, log_function=self._log_request,
            default_handler_class=DefaultHandler,  # JSON 404 under api, else the page
            **self.tornado_settings,
        )

    def _log_request(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        level = self.log.info if status < 400 else self.log.warning
        level("%d %s %s %.1fms", status, handler.request.method, handler.request.uri,
              1000 * handler.request.request_time())

    async def serve(self) -> None:
        api = await self.api_client()
        kube = KubeResources(api)
        self.catalog = await self.load_catalog(kube)
        manager = InstanceManager(kube, self.launcher, self.catalog)
        app = self.make_app(manager)
        hub_auth = app.settings["hub_auth"]  # the service's own token asks for namespaces
        manager.hub = HubClient(hub_auth.api_url, hub_auth.api_token,
                                self.launcher.namespace_request_timeout)
        reconciler = app.settings["reconciler"] = Reconciler(
            manager, grace=self.launcher.reconcile_grace, logger=self.log)
        server = app.listen(self.port, self.ip, xheaders=True)
        # launches a crash cut short are finished or undone now, and then periodically
        reconciling = asyncio.create_task(
            reconciler.run_forever(self.launcher.reconcile_interval))
        self.log.info("kdash-launcher on http://%s:%d%s", self.ip, self.port,
                      self.launcher.service_prefix)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        reconciling.cancel()
        server.stop()
        await api.close()

    def start(self) -> None:
        asyncio.run(self.serve())


def main(argv: list[str] | None = None) -> None:
    app = LauncherApp.instance()
    app.initialize(argv)
    app.start()
