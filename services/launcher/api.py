"""The REST API (JSON) — the same operations as the UI, for notebooks and scripts.

Authorised by hub API tokens that carry `access:services!service=kdash-launcher`.
Documented in openapi.yaml next to this file.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from .connection import connection, connection_and_notebook
from .handlers import SECURITY_HEADERS, LauncherHandler
from .instances import LauncherError
from .notebookenv import set_notebook_env

# `connection` (POST): the connection details with the password, for the owner only;
# `notebook` (POST {"enabled": bool, "as": "env"|"file"}): its details in the owner's
# notebook (variables, the default, or files), or not
ACTIONS = ("stop", "start", "extend", "connection", "notebook")


class APIHandler(LauncherHandler):
    api = True

    def check_xsrf_cookie(self) -> None:
        # token requests don't need xsrf; cookie requests go through the hub's check
        if getattr(self, "_token_authenticated", False):
            return
        super().check_xsrf_cookie()

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise LauncherError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise LauncherError(400, "the request body must be a JSON object")
        return body


class WhoAmIHandler(APIHandler):
    async def get(self) -> None:
        user = self.current_user
        self.write_json({"name": user["name"], "kind": user.get("kind", "user"),
                         "admin": self.actor.admin})


class TemplatesHandler(APIHandler):
    async def get(self, template_id: str | None = None) -> None:
        catalog = self.manager.catalog
        if template_id is None:
            self.write_json({"templates": [t.summary() for t in catalog.sorted()]})
            return
        template = catalog.get(template_id)
        if template is None:
            raise LauncherError(404, f"no template {template_id!r}")
        self.write_json(template.summary())


class InstancesHandler(APIHandler):
    async def get(self) -> None:
        everyone = self.get_argument("all", "") in ("1", "true", "yes")
        instances, invalid = await self.manager.list_checked(self.actor, everyone)
        self.write_json({"instances": instances, "invalid_records": invalid})

    async def post(self) -> None:
        if not self.is_user:
            raise LauncherError(403, "only hub users have instances (this token is a service's)")
        body = self.json_body()
        unknown = set(body) - {"template", "name", "values", "ttl"}
        if unknown:
            raise LauncherError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        instance = await self.manager.launch(
            self.actor, body.get("template"), body.get("values"), body.get("name"),
            body.get("ttl"))
        self.set_header("Location", f"{self.manager.settings.service_prefix}api/instances/"
                                    f"{instance['owner']}/{instance['name']}")
        self.write_json(instance, 201)


class InstanceHandler(APIHandler):
    async def get(self, owner: str, name: str) -> None:
        info = await self.manager.details(self.actor, owner, name)
        info["connection"], info["notebook"] = await connection_and_notebook(
            self.manager, self.actor, owner, name)
        self.write_json(info)

    async def delete(self, owner: str, name: str) -> None:
        await self.manager.delete(self.actor, owner, name)
        self.set_status(204)
        self.finish()


class InstanceActionHandler(APIHandler):
    async def post(self, owner: str, name: str, action: str) -> None:
        if action not in ACTIONS:
            raise web.HTTPError(404)
        body = self.json_body()
        if action == "connection":
            self.set_header("Cache-Control", "no-store")
            result = await connection(self.manager, self.actor, owner, name, reveal=True,
                                      is_user=self.is_user)
        elif action == "notebook":
            enabled, as_ = body.get("enabled"), body.get("as", "env")
            if type(enabled) is not bool or set(body) - {"enabled", "as"}:
                raise LauncherError(400, 'give {"enabled": true} or {"enabled": false}, and'
                                         ' optionally "as": "env" or "file"')
            if not isinstance(as_, str):
                raise LauncherError(400, '"as" is "env" or "file"')
            result = await set_notebook_env(self.manager, self.actor, owner, name, enabled,
                                            as_=as_, is_user=self.is_user)
        elif action == "extend":
            result = await self.manager.extend(self.actor, owner, name, body.get("by"))
        elif action == "stop":
            result = await self.manager.stop(self.actor, owner, name)
        else:
            result = await self.manager.start(self.actor, owner, name)
        self.write_json(result)


class ReconcileHandler(APIHandler):
    """Admins: the reconciler's last pass (decisions, orphan objects, invalid records);
    POST runs a pass now."""

    def _reconciler(self):
        if not (self.actor.admin and self.is_user):
            raise LauncherError(403, "only hub admins see the reconciler's report")
        reconciler = self.settings.get("reconciler")
        if reconciler is None:
            raise LauncherError(503, "the reconciler isn't running")
        return reconciler

    async def get(self) -> None:
        reconciler = self._reconciler()
        last = reconciler.last
        self.write_json({"passes": reconciler.passes,
                         "last": last.as_dict() if last else None})

    async def post(self) -> None:
        reconciler = self._reconciler()
        report = await reconciler.run_once()
        self.write_json({"passes": reconciler.passes, "last": report.as_dict()})


def api_routes(prefix: str) -> list[tuple[str, type]]:
    from .datasetspage import DatasetAPI, DatasetsAPI  # it builds on APIHandler

    base = prefix + "api/"
    return [
        (base + r"whoami", WhoAmIHandler),
        (base + r"templates/?", TemplatesHandler),
        (base + r"templates/([^/]+)", TemplatesHandler),
        (base + r"instances/?", InstancesHandler),
        (base + r"instances/([^/]+)/([^/]+)/?", InstanceHandler),
        (base + r"instances/([^/]+)/([^/]+)/([a-z]+)", InstanceActionHandler),
        (base + r"reconcile", ReconcileHandler),
        (base + r"datasets/?", DatasetsAPI),
        (base + r"datasets/([^/]+)", DatasetAPI),
        (base + r".*", NotFoundAPIHandler),
    ]


class NotFoundAPIHandler(APIHandler):
    def prepare(self) -> None:  # unknown API paths: 404 JSON without a login round trip
        raise LauncherError(404, f"no API endpoint {self.request.path}")


class DefaultHandler(web.RequestHandler):
    """Paths no route matches: a JSON 404 under the API, tornado's page elsewhere (no
    authentication: nothing is served)."""

    def set_default_headers(self) -> None:
        for key, value in SECURITY_HEADERS.items():
            self.set_header(key, value)

    def prepare(self) -> None:
        raise web.HTTPError(404)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if "/api" not in self.request.path:
            super().write_error(status_code, **kwargs)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code,
                                "message": f"no API endpoint {self.request.path}"}))
