"""Prometheus metrics of the culler, in a registry of its own (one per culler instance)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class CullerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.culled = Counter("kdash_culler_culled_servers", "Servers stopped by the culler",
                              ["profile", "reason"], registry=r)
        self.would_cull = Counter("kdash_culler_dry_run_servers",
                                  "Servers the culler would have stopped (dry run)",
                                  ["profile", "reason"], registry=r)
        self.culled_users = Counter("kdash_culler_culled_users",
                                    "Hub users deleted after a long inactivity", registry=r)
        self.expired_instances = Counter("kdash_culler_expired_instances",
                                         "Side-service instances stopped/deleted at expiry",
                                         ["action"], registry=r)
        self.errors = Counter("kdash_culler_errors", "Errors by kind", ["kind"], registry=r)
        self.cycle = Histogram("kdash_culler_cycle_duration_seconds",
                               "Duration of one cull cycle", buckets=CYCLE_BUCKETS, registry=r)
        self.servers = Gauge("kdash_culler_running_servers",
                             "Running servers seen in the last cycle", ["profile"], registry=r)
        self.pending_stops = Gauge("kdash_culler_pending_stops",
                                   "Stops the hub accepted (202) and hasn't finished",
                                   registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: CullerMetrics, prefix: str = "/") -> web.Application:
    """An aiohttp app serving the metrics at /metrics and at <service prefix>metrics."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    paths = {"/metrics", prefix.rstrip("/") + "/metrics"}
    for path in sorted(paths):
        app.router.add_get(path, handle)
    return app
