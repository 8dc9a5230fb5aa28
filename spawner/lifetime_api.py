"""The hub's side of server lifetimes: a small API under the hub, and its home page showing them.

Enable both in the hub's configuration (kdash_hub.z2jh does it when `custom.kdash.spawner`
is set)::

    from kdash_hub.spawner import lifetime_api
    lifetime_api.install(c)

Routes (under /hub/api/):

- `GET  kdash/lifetime/<user>[/<server>]`: the server's lifetime (scope `read:servers` on it);
- `POST kdash/lifetime/<user>[/<server>]` {"extend_by": "2h"} or {"lifetime": "1d"}: extend
  it within the flavor's bound (scope `servers` on it: the owner or an admin; anyone else gets
  403/404 as for the hub's own server API);
- `GET  kdash/lifetimes`: every running server's deadline, for the culler (unfiltered
  `read:servers`, which its role already holds).

Changing a lifetime needs no access to Kubernetes: the deadline is the hub's (spawner state,
saved in its database) and is never read from the cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from . import lifetime
from .refusals import refusal

TEMPLATE_PATH = str(Path(__file__).parent / "templates")  # home.html (chooser.html is ours)


class _LifetimeBase(APIHandler):
    def _spawner(self, user_name: str, server_name: str) -> Any:
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_spawners:
            raise web.HTTPError(404, f"{user_name} has no server named '{server_name}'")
        spawner = user.spawners[server_name]
        current = getattr(spawner, "kdash_lifetime", None)
        if not spawner.ready or current is None:
            raise refusal(409, "This server is not running with a lifetime; start "
                                        "it from a profile that has one.")
        return spawner, current


class LifetimeHandler(_LifetimeBase):
    """One server's lifetime: read it, or extend it (the owner or an admin)."""

    @needs_scope("read:servers")
    async def get(self, user_name: str, server_name: str = "") -> None:
        spawner, current = self._spawner(user_name, server_name)
        self.write(json.dumps(lifetime.view(current, spawner.lifetime_flavor(current))))

    @needs_scope("servers")
    async def post(self, user_name: str, server_name: str = "") -> None:
        spawner, current = self._spawner(user_name, server_name)
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        flavor = spawner.lifetime_flavor(current)  # the bound as configured now
        extended = lifetime.extend(current, flavor, body if isinstance(body, dict) else {})
        spawner.kdash_lifetime = extended
        spawner.orm_spawner.state = spawner.get_state()
        self.db.commit()
        self.log.info("Lifetime of %s extended by %s to %s (deadline %s)", spawner._log_name,
                      self.current_user.name, extended.seconds,
                      lifetime.iso(extended.deadline))
        self.write(json.dumps(lifetime.view(extended, flavor)))


class LifetimesHandler(APIHandler):
    """Every running server's deadline, for the culler."""

    @needs_scope("read:servers")
    async def get(self) -> None:
        if "read:servers" not in self.expanded_scopes:  # a filtered scope is not enough
            raise web.HTTPError(403, "Listing lifetimes needs the read:servers scope on all "
                                     "servers.")
        now = time.time()
        out = []
        running = self.db.query(orm.Spawner).filter(orm.Spawner.server_id.isnot(None))
        for orm_spawner in running:
            user = self.users[orm_spawner.user]
            spawner = user.spawners.get(orm_spawner.name)
            current = getattr(spawner, "kdash_lifetime", None)
            if spawner is None or current is None:
                continue
            out.append({"user": user.name, "server": orm_spawner.name,
                        **lifetime.view(current, spawner.lifetime_flavor(current), now)})
        self.write(json.dumps({"servers": out}))


def handlers() -> list[tuple[str, type]]:
    """For `c.JupyterHub.extra_handlers` (the hub puts its base URL in front)."""
    return [
        (r"/api/kdash/lifetimes", LifetimesHandler),
        (r"/api/kdash/lifetime/([^/]+)/?", LifetimeHandler),
        (r"/api/kdash/lifetime/([^/]+)/([^/]+)/?", LifetimeHandler),
    ]


def install(c: Any) -> None:
    """Add the routes and the home page to the hub config `c` (keeping what is there)."""
    routes = list(c.JupyterHub.get("extra_handlers", None) or [])
    c.JupyterHub.extra_handlers = routes + [h for h in handlers() if h not in routes]
    paths = list(c.JupyterHub.get("template_paths", None) or [])
    if TEMPLATE_PATH not in paths:
        c.JupyterHub.template_paths = [TEMPLATE_PATH, *paths]
