"""The hub's door to a user's namespace bundle without a server: a side service launched
before the first notebook gets the same namespace (quota, limits, network policy, accounts,
bindings) as a first start, made by the hub's identity, never by the launcher's.

Enable it in the hub's configuration (kdash_hub.z2jh does it when `custom.kdash.spawner`
is set), after the services are configured::

    from kdash_hub.spawner import namespace_api
    namespace_api.install(c)

Route (under /hub/api/): `POST kdash/namespace/<user>` -> `{"namespace": ..., "outcome":
"created"|"repaired"|"unchanged"}`. Allowed with the `servers` scope on that user (the user
themself; an admin) or with `PROVISION_SCOPE`, which `install` defines and gives the
launcher's service; anyone else gets 403, an unknown user 404. The user's default spawner
does the work (`KDashSpawner.ensure_namespace_bundle`: the bundle, and the home claim a
first start would make), after the authenticator's
`pre_spawn_start` (onboarding approval refuses a pending or rejected user there, as for a
start). A failure leaves the namespace without the bundle's completion mark, so the next
call (or start) finishes it.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from jupyterhub.utils import maybe_future
from tornado import web

PROVISION_SCOPE = "custom:kdash-namespaces:provision"
SCOPE_DESCRIPTION = "Provision a user's namespace bundle (as a first server start would)."
ROLE_NAME = "kdash-namespace-provisioner"
PROVISIONERS = ("kdash-launcher",)  # the services given PROVISION_SCOPE when configured


class NamespaceHandler(APIHandler):
    """Make (or repair) one user's namespace bundle through their default spawner."""

    def _may(self, user_name: str) -> bool:
        return any(has_scope(f"{scope}!user={user_name}", self.parsed_scopes, db=self.db)
                   for scope in ("servers", PROVISION_SCOPE))

    def _for_everyone(self) -> bool:
        return any(has_scope(scope, self.parsed_scopes) for scope in ("servers",
                                                                       PROVISION_SCOPE))

    async def post(self, user_name: str) -> None:
        if not self.current_user:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        user = self.find_user(user_name)
        if user is None:  # only a caller allowed for every user learns who doesn't exist
            if self._for_everyone():
                raise web.HTTPError(404, f"There is no hub user {user_name!r}.")
            raise web.HTTPError(403, f"Not allowed to prepare {user_name}'s namespace.")
        if not self._may(user_name):
            raise web.HTTPError(403, f"Not allowed to prepare {user_name}'s namespace.")
        spawner = user.spawner
        ensure = getattr(spawner, "ensure_namespace_bundle", None)
        if ensure is None:
            raise web.HTTPError(501, "This hub's spawner does not make user namespaces.")
        # the checks of a start (onboarding approval), and the user's groups for the quota
        await maybe_future(self.authenticator.pre_spawn_start(user, spawner))
        if not spawner.active and self.authenticator.enable_auth_state:
            await spawner.run_auth_state_hook(await user.get_auth_state())
        outcome = await ensure()
        caller = getattr(self.current_user, "name", "?")
        self.log.info("Namespace %s of %s %s (asked by %s)", spawner.namespace, user.name,
                      outcome, caller)
        self.write(json.dumps({"namespace": spawner.namespace, "outcome": outcome}))


def handlers() -> list[tuple[str, type]]:
    """For `c.JupyterHub.extra_handlers` (the hub puts its base URL in front)."""
    return [(r"/api/kdash/namespace/([^/]+)/?", NamespaceHandler)]


def install(c: Any, services: tuple[str, ...] = PROVISIONERS) -> None:
    """Add the route and PROVISION_SCOPE to the hub config `c`, and a role with that scope
    for those of `services` configured in `c` already (keeping what is there)."""
    routes = list(c.JupyterHub.get("extra_handlers", None) or [])
    c.JupyterHub.extra_handlers = routes + [h for h in handlers() if h not in routes]
    scopes = dict(c.JupyterHub.get("custom_scopes", None) or {})
    scopes.setdefault(PROVISION_SCOPE, {"description": SCOPE_DESCRIPTION})
    c.JupyterHub.custom_scopes = scopes
    configured = {s.get("name") for s in c.JupyterHub.get("services", None) or []}
    names = [s for s in services if s in configured]
    roles = list(c.JupyterHub.get("load_roles", None) or [])
    if names and not any(r.get("name") == ROLE_NAME for r in roles):
        c.JupyterHub.load_roles = [*roles, {
            "name": ROLE_NAME, "description": SCOPE_DESCRIPTION,
            "scopes": [PROVISION_SCOPE], "services": names}]
