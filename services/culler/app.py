"""`CullerApp`: the kdash-culler service's settings (traitlets) and its main loop.

Run by the hub as a managed service (`python -m kdash_hub.services.culler --config=FILE`,
the file written from `custom.kdash.culler` by kdash_hub.z2jh), or by hand with
`kdash-hub culler`. Every setting is checked at startup; a bad one stops the service with
the setting's name.

Where the per-server opt-out lives: in the hub, as the `servers` property of the hub group
`opt_out_group` (default `kdash-cull-opt-out`), e.g. `{"servers": ["alice/", "bob/gpu"]}`
("user/" is the default server). Only admins can edit group properties
(`PUT /hub/api/groups/kdash-cull-opt-out/properties`), and the culler reads it once per
cycle (it needs `read:groups`). `user_options` was not used for it: users set those
themselves when they start a server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

from traitlets import Bool, Dict, Float, Int, List, TraitError, TraitType, Unicode, default
from traitlets.config import Application

from kdash_hub.durations import parse_duration

from .clock import Clock
from .culler import Culler, CullerOptions
from .hubapi import HubAPI
from .logs import JSONFormatter, log
from .metrics import CullerMetrics, metrics_app
from .rules import RuleError, RuleSet, parse_rule


class ConfigError(ValueError):
    """A setting that can't be used; the message starts with the setting's name."""


class Duration(TraitType):
    """A duration setting: seconds, or "90s", "30m", "1h", "8h30m", "2d", "never"."""

    default_value: Any = None
    info_text = 'a duration (seconds, or e.g. "90m", "1h", "8h30m", "2d", "never")'

    def validate(self, obj: Any, value: Any) -> Any:
        try:
            parse_duration(value)
        except ValueError as e:
            raise TraitError(f"{_owner(self, obj)}.{self.name}: {e}") from None
        return value


def _owner(trait: TraitType, obj: Any) -> str:
    return getattr(getattr(trait, "this_class", None), "__name__", type(obj).__name__)


class CullRule(Dict):
    """One rule, {"idle": DURATION, "max_age": DURATION}, checked when set."""

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)
        try:
            parse_rule(f"{_owner(self, obj)}.{self.name}", self.name, value)
        except RuleError as e:
            raise TraitError(str(e)) from None
        return value


class CullRules(Dict):
    """Rules by name (profile slug or group), each checked when set."""

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)
        for key, rule in value.items():
            try:
                parse_rule(f"{_owner(self, obj)}.{self.name}[{key!r}]", str(key), rule)
            except RuleError as e:
                raise TraitError(str(e)) from None
        return value


class CullerApp(Application):
    name = "kdash-culler"
    description = "Stop idle and old servers with per-profile and per-group rules."

    aliases = {
        "config": "CullerApp.config_file",
        "log-level": "Application.log_level",
        "api-url": "CullerApp.hub_api_url",
        "cull-every": "CullerApp.cull_every",
        "metrics-port": "CullerApp.metrics_port",
    }
    flags = {
        "dry-run": ({"CullerApp": {"dry_run": True}}, "Log what would be culled, stop nothing."),
        "once": ({"CullerApp": {"once": True}}, "Run one cycle and exit."),
    }

    config_file = Unicode("", help="A config file (.py or .json) to load.").tag(config=True)

    hub_api_url = Unicode(
        help="The hub's REST API URL. Default: $JUPYTERHUB_API_URL, set by the hub for its "
             "managed services.",
    ).tag(config=True)

    @default("hub_api_url")
    def _default_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    api_token = Unicode(
        help="Hub API token. Default: $JUPYTERHUB_API_TOKEN (the service's token). Scopes: "
             "list:users, read:users, read:servers, delete:servers, read:groups (opt-outs), "
             "access:servers (check_server_status), admin:users (cull_users_after).",
    ).tag(config=True)

    @default("api_token")
    def _default_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_prefix = Unicode(
        help="URL prefix of this service behind the hub's proxy (metrics are served at "
             "<prefix>metrics). Default: $JUPYTERHUB_SERVICE_PREFIX or /services/kdash-culler/.",
    ).tag(config=True)

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/kdash-culler/")

    cull_every = Duration("5m", help="Time between two cull cycles.").tag(config=True)

    once = Bool(False, help="Run a single cycle and exit (for cron jobs and checks).").tag(
        config=True)

    dry_run = Bool(False, help="Log (and count in metrics) what would be culled; stop "
                               "nothing, delete nothing.").tag(config=True)

    default_rule = CullRule(
        {"idle": "8h", "max_age": "never"},
        help='The rule of servers no other rule matches: {"idle": DURATION, "max_age": '
             'DURATION}; "never" means no limit.',
    ).tag(config=True)

    profile_rules = CullRules(
        {},
        help='Rules by profile slug (the server\'s user_options.profile), e.g. {"gpu": '
             '{"idle": "1h", "max_age": "8h"}, "cpu": {"idle": "8h"}}. Fields a rule leaves '
             "out come from default_rule.",
    ).tag(config=True)

    group_rules = CullRules(
        {},
        help='Rules by hub group, applied over the profile rule, e.g. {"long-jobs": '
             '{"idle": "12h"}}; for a member of several such groups the most lenient '
             "value of each field wins.",
    ).tag(config=True)

    known_profiles = List(
        Unicode(), [],
        help="The profile slugs that exist (the spawner's profile_list slugs). When set, a "
             "profile rule naming any other profile stops the culler at startup.",
    ).tag(config=True)

    exempt_admins = Bool(False, help="Never cull admins' servers.").tag(config=True)

    exempt_groups = List(Unicode(), [], help="Members of these hub groups are never culled "
                                             "(neither servers nor users).").tag(config=True)

    opt_out_group = Unicode(
        "kdash-cull-opt-out",
        help='Hub group whose "servers" property lists servers an admin exempted, as '
             '"user/server" ("user/" for the default server). Empty: no opt-outs.',
    ).tag(config=True)

    check_server_status = Bool(
        False,
        help="Before culling a server for idleness, ask the server (/api/status through the "
             "proxy): newer kernel/terminal activity counts, and open kernel connections or "
             "busy kernels keep it. Needs the access:servers scope.",
    ).tag(config=True)

    server_base_url = Unicode(
        "",
        help="Where the proxy serves user servers (e.g. http://proxy-public). Default: the "
             "scheme and host of hub_api_url.",
    ).tag(config=True)

    remove_named_servers = Bool(
        False, help="Delete culled named servers from the hub (their data stays).",
    ).tag(config=True)

    cull_users_after = Duration(
        "never",
        help="Delete hub users (never admins, never their data) with no running server and "
             "no activity for this long. Needs admin:users.",
    ).tag(config=True)

    server_lifetimes = Bool(
        True,
        help="Stop servers past the lifetime their user chose (flavors with `lifetime`, "
             "KDashSpawner). Deadlines are read from the hub (GET /hub/api/kdash/lifetimes, "
             "kdash_hub.spawner.lifetime_api; needs read:servers on all servers), never from "
             "the cluster. A hub without that API: nothing is stopped for its lifetime.",
    ).tag(config=True)

    side_services = Bool(
        False, help="Also stop or delete side services (launcher instances) past their TTL.",
    ).tag(config=True)

    kubeconfig = Unicode(
        "", help="Kubeconfig for side_services. Default: in-cluster config, else ~/.kube/config.",
    ).tag(config=True)

    concurrency = Int(20, help="At most this many hub API requests at once.").tag(config=True)
    page_size = Int(200, help="Users per page when listing (the hub caps it at its "
                              "api_page_max_limit).").tag(config=True)
    retries = Int(5, help="Retries of a failed hub/Kubernetes request (exponential "
                          "backoff).").tag(config=True)
    backoff_base = Float(0.5, help="First retry delay in seconds (doubles each "
                                   "retry).").tag(config=True)
    backoff_max = Float(30.0, help="Longest retry delay in seconds.").tag(config=True)

    metrics_port = Int(
        -1,
        help="Port of the Prometheus metrics endpoint (/metrics and <service_prefix>metrics)."
             " -1: the port of $JUPYTERHUB_SERVICE_URL when the hub gives the service a url, "
             "else none; 0: none.",
    ).tag(config=True)
    metrics_ip = Unicode("127.0.0.1", help="Address the metrics endpoint binds to.").tag(
        config=True)

    log_style = Unicode("json", help='"json" (one object per line) or "text".').tag(
        config=True)

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO  # every decision to cull is logged at INFO

    # --- setup ------------------------------------------------------------------------

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            directory, filename = os.path.split(os.path.abspath(self.config_file))
            self.load_config_file(filename, path=directory)
            self.parse_command_line(argv)  # the command line wins over the file
        self.setup_logging()
        self.check()

    def setup_logging(self) -> None:
        handler = logging.StreamHandler()
        if self.log_style == "json":
            handler.setFormatter(JSONFormatter())
        log.handlers[:] = [handler]
        log.setLevel(self.log_level)
        log.propagate = False

    def seconds(self, name: str) -> float | None:
        return parse_duration(getattr(self, name))

    def check(self) -> RuleSet:
        """Validate every setting; ConfigError names the one at fault."""
        for name in ("cull_every", "cull_users_after"):
            try:
                parse_duration(getattr(self, name))
            except ValueError as e:
                raise ConfigError(f"CullerApp.{name}: {e}") from None
        if not self.seconds("cull_every"):
            raise ConfigError("CullerApp.cull_every: must be more than 0")
        for name in ("concurrency", "page_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CullerApp.{name}: must be at least 1")
        if self.retries < 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise ConfigError("CullerApp.retries/backoff_base/backoff_max: can't be negative")
        if self.log_style not in ("json", "text"):
            raise ConfigError(f"CullerApp.log_style: {self.log_style!r} is not json or text")
        if not self.api_token:
            raise ConfigError("CullerApp.api_token: not set (nor $JUPYTERHUB_API_TOKEN)")
        try:
            return RuleSet.from_config(self.default_rule, self.profile_rules, self.group_rules,
                                       self.known_profiles)
        except RuleError as e:
            raise ConfigError(str(e)) from None

    def options(self) -> CullerOptions:
        parts = urlsplit(self.hub_api_url)
        return CullerOptions(
            dry_run=self.dry_run,
            exempt_admins=self.exempt_admins,
            exempt_groups=frozenset(self.exempt_groups),
            opt_out_group=self.opt_out_group,
            check_server_status=self.check_server_status,
            server_base_url=self.server_base_url or f"{parts.scheme}://{parts.netloc}",
            remove_named_servers=self.remove_named_servers,
            cull_users_after=self.seconds("cull_users_after"),
            side_services=self.side_services,
            server_lifetimes=self.server_lifetimes,
        )

    def make_hub(self) -> HubAPI:
        return HubAPI(self.hub_api_url, self.api_token, concurrency=self.concurrency,
                      page_size=self.page_size, retries=self.retries,
                      backoff_base=self.backoff_base, backoff_max=self.backoff_max)

    async def make_side_services(self) -> Any:
        from kubernetes_asyncio.client import ApiClient, Configuration
        from kubernetes_asyncio.config import load_incluster_config, load_kube_config

        from kdash_hub.kube import KubeResources, without_environment_lookups

        from .sideservices import SideServiceExpiry

        configuration = Configuration()
        if not self.kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            load_incluster_config(client_configuration=configuration)
        else:
            await load_kube_config(config_file=self.kubeconfig or None,
                                   client_configuration=configuration)
        api_client = ApiClient(configuration=configuration)
        without_environment_lookups(api_client)
        kube = KubeResources(api_client)
        return SideServiceExpiry(kube, retries=self.retries, backoff_base=self.backoff_base,
                                 backoff_max=self.backoff_max)

    def make_culler(self, *, clock: Clock | None = None, hub: HubAPI | None = None,
                    side_services: Any = None, metrics: CullerMetrics | None = None
                    ) -> Culler:
        """The Culler these settings describe (tests pass their clock and clients)."""
        return Culler(hub or self.make_hub(), self.check(), self.options(), clock=clock,
                      metrics=metrics, side_services=side_services)

    def metrics_bind_port(self) -> int:
        if self.metrics_port >= 0:
            return self.metrics_port
        service_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
        return urlsplit(service_url).port or 0 if service_url else 0

    # --- run --------------------------------------------------------------------------

    async def run(self) -> None:
        from aiohttp import web

        side = await self.make_side_services() if self.side_services else None
        culler = self.make_culler(side_services=side)
        runner = None
        port = self.metrics_bind_port()
        if port and not self.once:
            runner = web.AppRunner(metrics_app(culler.metrics, self.service_prefix))
            await runner.setup()
            await web.TCPSite(runner, self.metrics_ip, port).start()
        log.info("kdash-culler started", extra={"event": "start", "fields": {
            "dry_run": self.dry_run, "cull_every": self.seconds("cull_every"),
            "metrics_port": port, "hub_api_url": self.hub_api_url}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if self.once:
                await culler.run_once()
            else:
                await culler.run_forever(self.seconds("cull_every") or 300, stop=stop)
        finally:
            await culler.hub.close()
            if side is not None:
                await side.kube.api_client.close()
            if runner is not None:
                await runner.cleanup()

    def start(self) -> None:
        asyncio.run(self.run())


def main(argv: list[str] | None = None) -> int:
    app = CullerApp()
    try:
        app.initialize(argv)
    except (ConfigError, TraitError, RuleError) as e:
        print(f"kdash-culler: configuration error: {e}", file=sys.stderr)
        return 1  # the exit code traitlets uses for bad config on the command line
    app.start()
    return 0
