"""The web UI: list, new (a form made from the template's variables), details with events
and logs, the buttons for stop/start/extend/delete, and the kubeconfig page."""

from __future__ import annotations

from urllib.parse import quote

from jupyterhub.services.auth import check_scopes
from tornado import web

from kdash_hub.durations import format_duration
from kdash_hub.templating.values import parse_bool

from .connection import connection_and_notebook
from .handlers import LauncherHandler
from .instances import LauncherError
from .kubeconfig import TokenStore, send_kubeconfig
from .notebookenv import set_notebook_env
from .serverlifetime import EXTEND_SCOPE, HubLifetimes, HubRefused

UI_ACTIONS = ("stop", "start", "extend", "delete", "connection", "notebook")


class ServerLifetimes:
    """The signed-in user's own notebook servers' lifetimes (serverlifetime.py): asked of
    the hub with the user's own token, for the name the hub's login gave, nothing else."""

    def __init__(self, page: LauncherHandler):
        self.page = page

    def hub(self) -> HubLifetimes | None:
        page = self.page
        token = page.hub_auth.get_token(page)
        if not page.is_user or not token:
            return None
        return HubLifetimes(page.hub_auth.api_url, token, page.current_user["name"])

    def can_extend(self) -> bool:
        user = self.page.current_user
        return bool(check_scopes(f"{EXTEND_SCOPE}={user['name']}",
                                 set(user.get("scopes") or [])))

    async def shown(self) -> dict:
        """What the page shows: `servers` (None: the hub didn't tell) and `can_extend`."""
        hub = self.hub()
        servers = await hub.running() if hub is not None else None
        return {"servers": servers, "can_extend": self.can_extend()}


class ListPage(LauncherHandler):
    async def get(self) -> None:
        everyone = self.get_argument("all", "") == "1" and self.actor.admin
        instances, invalid = await self.manager.list_checked(self.actor, everyone)
        self.set_header("Cache-Control", "no-store")
        self.render("list.html", instances=instances, everyone=everyone, invalid=invalid,
                    is_admin=self.actor.admin and self.manager.settings.admin_access,
                    templates=self.manager.catalog.sorted(),
                    message=self.get_argument("message", ""),
                    lifetimes=await ServerLifetimes(self).shown())


class ServerLifetimeExtend(LauncherHandler):
    """POST (the list page's form, with its _xsrf): extend one of the signed-in user's own
    servers through the hub, which checks the bound; back to the list with its sentence."""

    async def get(self) -> None:
        raise web.HTTPError(405)

    async def post(self) -> None:
        hub = ServerLifetimes(self).hub()
        if hub is None:
            raise LauncherError(403, "only hub users have notebook servers")
        server = self.get_body_argument("server", "")
        try:
            extended = await hub.extend(server, self.get_body_argument("by", ""))
            done = (f"{extended.label} now stops at {extended.deadline} "
                    f"(in {extended.remaining}).")
        except HubRefused as e:
            done = e.message
        self.redirect(f"{self.manager.settings.service_prefix}?message=" + quote(done),
                      status=303)


class EmbedHome(LauncherHandler):
    """The signed-in user's own side services, for the frame on the hub's home page (never
    everyone's, even for an admin: it is their home page)."""

    async def get(self) -> None:
        instances, _ = await self.manager.list_checked(self.actor, False)
        self.render("embed_home.html", instances=instances)


class NewPage(LauncherHandler):
    async def get(self, template_id: str | None = None) -> None:
        if template_id is None:
            self.render("templates.html", templates=self.manager.catalog.sorted())
            return
        self._form(template_id)

    def _form(self, template_id: str, error: str = "", form: dict | None = None,
              status: int = 200) -> None:
        template = self.manager.catalog.get(template_id)
        if template is None:
            raise LauncherError(404, f"no template {template_id!r}")
        self.set_status(status)
        self.render("new.html", template=template, error=error, form=form or {})

    async def post(self, template_id: str | None = None) -> None:
        template = self.manager.catalog.get(template_id or "")
        if template is None:
            raise LauncherError(404, f"no template {template_id!r}")
        form = {k: self.get_body_argument(k) for k in self.request.body_arguments
                if k != "_xsrf"}
        values = {k.removeprefix("var_"): v for k, v in form.items() if k.startswith("var_")}
        for var in template.user_variables:  # unchecked checkboxes send nothing
            if var.type == "boolean":
                values[var.name] = parse_bool(values.get(var.name) or "false")
        try:
            instance = await self.manager.launch(
                self.actor, template.id, values, form.get("name") or None,
                form.get("ttl") or None)
        except LauncherError as e:
            self._form(template.id, e.message, form, e.status)
            return
        self.redirect(f"{self.manager.settings.service_prefix}instances/"
                      f"{quote(instance['owner'])}/{instance['name']}")


async def show_details(page: LauncherHandler, owner: str, name: str, message: str = "",
                       reveal: bool = False) -> None:
    """The instance page; with `reveal` (the owner's POST) the password in it, not cached."""
    info = await page.manager.details(page.actor, owner, name)
    conn, notebook = await connection_and_notebook(page.manager, page.actor, owner, name,
                                                   reveal=reveal, is_user=page.is_user)
    if reveal:
        page.set_header("Cache-Control", "no-store")
    page.render("details.html", i=info, message=message, conn=conn, notebook=notebook,
                owner_view=page.actor.name == owner and page.is_user)


class DetailsPage(LauncherHandler):
    async def get(self, owner: str, name: str) -> None:
        await show_details(self, owner, name, message=self.get_argument("message", ""))


class ActionPage(LauncherHandler):
    async def post(self, owner: str, name: str, action: str) -> None:
        if action not in UI_ACTIONS:
            raise web.HTTPError(404)
        prefix = self.manager.settings.service_prefix
        if action == "delete":
            await self.manager.delete(self.actor, owner, name)
            self.redirect(f"{prefix}?message=" + quote(f"deleted {name}"))
            return
        if action == "connection":
            await show_details(self, owner, name, reveal=True)
            return
        done = f"{action} done"
        if action == "notebook":
            enabled = self.get_body_argument("enabled", "") == "1"
            done = (await set_notebook_env(self.manager, self.actor, owner, name, enabled,
                                           as_=self.get_body_argument("as", "env"),
                                           is_user=self.is_user))["message"]
        if action == "extend":
            try:
                done = (await self.manager.extend(self.actor, owner, name,
                                                  self.get_body_argument("by", "1h")))["message"]
            except LauncherError as e:
                if e.status != 409:
                    raise
                done = e.message  # at the cap already: said on the page, nothing changed
        elif action == "stop":
            await self.manager.stop(self.actor, owner, name)
        elif action == "start":
            await self.manager.start(self.actor, owner, name)
        self.redirect(f"{prefix}instances/{quote(owner)}/{name}?message=" + quote(done))


class KubeconfigPage(LauncherHandler):
    """kubectl access: the caller's own namespace, server, token lifetime and expiry. The
    token goes only into the downloaded file, never into this page. There is no way to name
    another user here: everything comes from the signed-in hub user."""

    async def get(self) -> None:
        await self.show(message=self.get_argument("message", ""))

    async def show(self, message: str = "", error: str = "", status: int = 200) -> None:
        if not self.is_user:
            raise LauncherError(403, "only hub users have a namespace")
        store = TokenStore(self.manager)
        store.check_enabled()
        settings = self.manager.settings
        username = self.current_user["name"]
        current = None if error else await store.current(username)
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.render("kubeconfig.html", namespace=settings.user_namespace(username),
                    server=settings.kubeconfig_server_url,
                    lifetime=format_duration(settings.kubeconfig_token_seconds),
                    current=current,
                    left=format_duration(current.seconds_left()) if current else "",
                    message=message, error=error)


class KubeconfigDownload(LauncherHandler):
    """The kubeconfig file with the current token (one is made when there is none)."""

    async def get(self) -> None:
        if not self.is_user:
            raise LauncherError(403, "only hub users have a namespace")
        store = TokenStore(self.manager)
        store.check_enabled()
        username = self.current_user["name"]
        minted = await store.current(username) or await store.renew(username)
        send_kubeconfig(self, await store.kubeconfig(username, minted), minted.expires)


class KubeconfigRenew(KubeconfigPage):
    """POST (with the form's _xsrf, like every launcher form): a fresh current token.
    Tokens handed out before stay valid until their own expiry."""

    async def get(self) -> None:
        raise web.HTTPError(405)

    async def post(self) -> None:
        if not self.is_user:
            raise LauncherError(403, "only hub users have a namespace")
        store = TokenStore(self.manager)
        try:
            minted = await store.renew(self.current_user["name"])
        except LauncherError as e:
            if e.status == 501:
                raise
            await self.show(error=e.message, status=e.status)
            return
        self.redirect(f"{self.manager.settings.service_prefix}kubeconfig?message="
                      + quote(f"New token made; it expires at {minted.expires}."), status=303)


def ui_routes(prefix: str) -> list[tuple[str, type]]:
    return [
        (prefix + r"?", ListPage),
        (prefix + r"embed/home/?", EmbedHome),
        (prefix + r"server-lifetime", ServerLifetimeExtend),
        (prefix + r"new/?", NewPage),
        (prefix + r"new/([^/]+)/?", NewPage),
        (prefix + r"instances/([^/]+)/([^/]+)/?", DetailsPage),
        (prefix + r"instances/([^/]+)/([^/]+)/([a-z]+)", ActionPage),
        (prefix + r"kubeconfig/?", KubeconfigPage),
        (prefix + r"kubeconfig/download", KubeconfigDownload),
        (prefix + r"kubeconfig/renew", KubeconfigRenew),
    ]
