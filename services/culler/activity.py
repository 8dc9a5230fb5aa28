"""When a server was last used: the hub's record, and optionally the server's own word.

The hub's `last_activity` of a server lags (the proxy and the server report it every few
minutes) and knows nothing of a kernel computing silently. A Jupyter server's
`/api/status` gives the latest kernel/terminal/API activity and the number of kernel
connections; `/api/kernels` gives each kernel's execution state. Both are asked through
the proxy with the culler's token (it needs `access:servers`), with `no_track_activity`
so that asking doesn't count as activity itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .hubapi import HubAPI, HubAPIError


def parse_time(value: str | None) -> datetime | None:
    """An aware UTC datetime from the hub's ISO 8601 timestamps (naive means UTC)."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ServerActivity:
    """What the server itself says about its use."""

    last_activity: datetime | None
    connections: int = 0
    kernels: int = 0
    busy_kernels: int = 0

    @property
    def in_use(self) -> bool:
        """Someone is connected to a kernel, or a kernel is computing."""
        return self.connections > 0 or self.busy_kernels > 0


def server_activity(status: dict, kernels: list[dict] | None = None) -> ServerActivity:
    """Read `/api/status` (and `/api/kernels` when given)."""
    times = [parse_time(status.get("last_activity"))]
    busy = 0
    for kernel in kernels or []:
        times.append(parse_time(kernel.get("last_activity")))
        if kernel.get("execution_state") == "busy":
            busy += 1
    known = [t for t in times if t is not None]
    return ServerActivity(
        last_activity=max(known) if known else None,
        connections=int(status.get("connections") or 0),
        kernels=int(status.get("kernels") or 0),
        busy_kernels=busy,
    )


async def fetch_server_activity(hub: HubAPI, base_url: str, server_path: str
                                ) -> ServerActivity:
    """Ask the server at `base_url + server_path` (raises HubAPIError when it can't)."""
    root = base_url.rstrip("/") + "/" + server_path.strip("/") + "/"
    status = await hub.server_json(f"{root}api/status?no_track_activity=1")
    if not isinstance(status, dict):
        raise HubAPIError("GET", root, None, "not a Jupyter server status")
    kernels = None
    if int(status.get("kernels") or 0) and not int(status.get("connections") or 0):
        kernels = await hub.server_json(f"{root}api/kernels?no_track_activity=1")
    return server_activity(status, kernels if isinstance(kernels, list) else None)


def latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None
