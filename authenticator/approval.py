"""Onboarding approval: new users wait for an admin before they get anything.

Where decisions live, and why there: three hub groups, `kdash-pending`, `kdash-approved`
and `kdash-rejected`. A user's state is the group they are in; the decision record (who,
when, why) is in that group's `properties` under the username. Groups and their properties
are in the hub database, which only the hub writes (the groups REST API refuses membership
changes while the authenticator manages groups, and properties need `admin:groups`), so
decisions survive restarts. auth_state is NOT used: the hub replaces it at every login.

Because `manage_groups` makes every login and refresh replace a user's groups with the
model's, the state group is carried into each model (`with_state_group`). Every door to a
server goes through `Authenticator.pre_spawn_start` (REST spawn, named servers, the spawn
page), which refuses before the spawner runs: no namespace, no pod. The launcher reads the
state group from the user model it gets from the hub (launcher/handlers.py).

A rejection also ends what the user's Kubernetes tokens can do: the spawner deletes their
ServiceAccount (`revoke_cluster_access`, spawner/revoke.py); an approved start makes it
again. The hub's home and spawn pages send a pending or rejected user to the waiting page
(they come before the hub's own routes: `Authenticator.get_handlers`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.handlers.pages import HomeHandler, SpawnHandler
from jupyterhub.scopes import Scope
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Set
from traitlets.config import LoggingConfigurable

PENDING, APPROVED, REJECTED = "kdash-pending", "kdash-approved", "kdash-rejected"
STATE_GROUPS = {PENDING: "pending", APPROVED: "approved", REJECTED: "rejected"}
GROUP_OF = {v: k for k, v in STATE_GROUPS.items()}
PAGE_PATH = "kdash/approvals"
STATUS_PATH = "kdash/approval"
API_PATH = "api/kdash/approvals"
MAX_REASON = 500
TEMPLATES = Path(__file__).with_name("templates")


class ApprovalRefused(web.HTTPError):
    """A decision that can't be made (unknown user, admin, vanished): nothing changed."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.message = message
        self.jupyterhub_message = message


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_of(orm_user: orm.User | None) -> tuple[str | None, dict]:
    """('pending'|'approved'|'rejected'|None, record) from the user's state group."""
    if orm_user is None:
        return None, {}
    for g in orm_user.groups:
        if g.name in STATE_GROUPS:
            return STATE_GROUPS[g.name], dict((g.properties or {}).get(orm_user.name) or {})
    return None, {}


def _group(db: Any, name: str) -> orm.Group:
    group = orm.Group.find(db, name)
    if group is None:
        group = orm.Group(name=name)
        db.add(group)
    return group


def record_state(db: Any, username: str, state: str, record: dict,
                 orm_user: orm.User | None = None) -> None:
    """Write `record` into the state group's properties (and move the user there if they
    exist yet; a new user joins it through the login model's groups)."""
    for name in STATE_GROUPS:
        group = _group(db, name)
        props = dict(group.properties or {})
        if name == GROUP_OF[state]:
            props[username] = record
        else:
            props.pop(username, None)
        group.properties = props
        if orm_user is not None:
            if name == GROUP_OF[state] and group not in orm_user.groups:
                orm_user.groups.append(group)
            elif name != GROUP_OF[state] and group in orm_user.groups:
                orm_user.groups.remove(group)
    db.commit()


def refusal_message(state: str | None, record: dict, base_url: str = "/hub/") -> str:
    where = url_path_join(base_url, STATUS_PATH)
    if state == "rejected":
        why = f" Reason: {record['reason']}" if record.get("reason") else ""
        return (f"An administrator declined your account, so it can't start servers or "
                f"services.{why} Contact an administrator if this is a mistake.")
    return ("Your account is waiting for an administrator's approval: no server or service "
            f"can start until then. See {where} for its status.")


class ApprovalMixin(LoggingConfigurable):
    """The settings and hooks of onboarding approval, mixed into KDashAuthenticator."""

    require_approval = Bool(
        False, config=True,
        help="Onboarding approval: a new user who signs in (LDAP or OIDC) waits for an "
             "admin's approval (at /hub/kdash/approvals or /hub/api/kdash/approvals) before "
             "any server, namespace or side service is made for them. Hub admins and "
             "members of `auto_approve_groups` are approved automatically. Decisions are "
             "kept in the hub groups kdash-pending/kdash-approved/kdash-rejected.")
    auto_approve_groups = Set(
        config=True,
        help="With require_approval: members of these hub groups (as the login names them) "
             "are approved automatically at sign-in. A rejection by an admin still wins.")

    # -- login and refresh -----------------------------------------------------------------

    async def get_authenticated_user(self, handler: Any, data: Any) -> dict | None:
        model = await super().get_authenticated_user(handler, data)  # type: ignore[misc]
        if isinstance(model, dict) and self.require_approval:
            model = self.with_state_group(handler.db, model)
        return model

    def with_state_group(self, db: Any, model: dict) -> dict:
        """Carry the user's state group into a login/refresh model (and decide a new user:
        pending, or approved automatically)."""
        if not isinstance(model, dict) or model.get("groups") is None:
            return model
        name = model["name"]
        orm_user = orm.User.find(db, name)
        state, record = state_of(orm_user)
        groups = [g for g in model["groups"] if g not in STATE_GROUPS]
        if state in (None, "pending"):
            auto = self._auto_reason(name, model, orm_user)
            if auto:
                state, record = "approved", {"by": "auto", "at": _now(), "reason": auto}
                record_state(db, name, state, record, orm_user)
                self.log.info("Onboarding: %s approved automatically (%s)", name, auto)
            elif state is None:
                state, record = "pending", {"since": _now(), "by": None, "reason": ""}
                record_state(db, name, state, record, orm_user)
                self.log.info("Onboarding: %s is waiting for approval", name)
        return {**model, "groups": [*groups, GROUP_OF[state]]}

    def _auto_reason(self, name: str, model: dict, orm_user: orm.User | None) -> str:
        if model.get("admin") or name in self.admin_users or (orm_user and orm_user.admin):
            return "hub admin"
        hit = sorted(set(model.get("groups") or []) & self.auto_approve_groups)
        return f"member of the group {hit[0]!r} (auto_approve_groups)" if hit else ""

    # -- every spawn (REST, named servers, the spawn page) -----------------------------------

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        await _maybe(super().pre_spawn_start(user, spawner))  # type: ignore[misc]
        if not self.require_approval:
            return
        state, record = state_of(user.orm_user)
        if state != "approved" and not user.admin:
            self.log.warning("Onboarding: refused a start of %s's server %r (%s)", user.name,
                             spawner.name, state or "no decision")
            hub_url = getattr(getattr(spawner, "hub", None), "base_url", None) or "/hub/"
            raise ApprovalRefused(403, refusal_message(state, record, hub_url))

    # -- decisions ---------------------------------------------------------------------------

    async def decide(self, db: Any, users: Any, admin_name: str, username: str,
                     decision: str, reason: str) -> tuple[bool, dict]:
        """Approve or reject; returns (changed, status). Refuses with a clear message and
        changes nothing when the decision can't be made."""
        if decision not in ("approve", "reject"):
            raise ApprovalRefused(400, "decision must be 'approve' or 'reject'")
        reason = (reason or "").strip()
        if len(reason) > MAX_REASON:
            raise ApprovalRefused(400, f"the reason is longer than {MAX_REASON} characters")
        if decision == "reject" and not reason:
            raise ApprovalRefused(400, "a rejection needs a reason (the user sees it)")
        orm_user = orm.User.find(db, username) if username else None
        if orm_user is None:
            raise ApprovalRefused(404, f"there is no hub user {username!r} (users appear "
                                       "here after their first sign-in)")
        state, record = state_of(orm_user)
        wanted = "approved" if decision == "approve" else "rejected"
        if state == wanted:
            return False, self.status(orm_user, f"{username} is already {wanted} (by "
                                                f"{record.get('by')} at {record.get('at')})")
        if decision == "reject" and orm_user.admin:
            raise ApprovalRefused(409, f"{username} is a hub admin and can't be rejected; "
                                       "remove their admin rights first")
        if decision == "approve":
            await self._check_still_in_directory(users[orm_user], username)
        new = {"by": admin_name, "at": _now(), "reason": reason,
               "previous": {"state": state, **{k: v for k, v in record.items()
                                               if k != "previous"}} if state else None}
        record_state(db, username, wanted, new, orm_user)
        self.log.info("Onboarding: %s %s %s (%s)", admin_name, wanted, username, reason)
        message = f"{username} is now {wanted}"
        if wanted == "rejected":
            message += await self.revoke_cluster_access(users[orm_user])
        return True, self.status(orm_user, message)

    async def revoke_cluster_access(self, user: Any) -> str:
        """Delete the user's ServiceAccount through their default spawner (one that made
        it: KDashSpawner), so their tokens stop working; a note for the admin's message."""
        revoke = getattr(getattr(user, "spawner", None), "revoke_cluster_access", None)
        if revoke is None:
            return ""
        try:
            deleted = await revoke()
        except Exception as e:  # the decision stands; the admin is told what is left
            self.log.exception("Onboarding: could not revoke %s's cluster access", user.name)
            return (f"; but their Kubernetes ServiceAccount could not be deleted ({e}), so "
                    "tokens they downloaded work until they expire: delete it by hand")
        return "; their Kubernetes tokens no longer work" if deleted else ""

    async def _check_still_in_directory(self, user: Any, username: str) -> None:
        ldap = getattr(self, "ldap", None)
        if ldap is None or not getattr(ldap, "can_lookup", False):
            return
        state = await user.get_auth_state() or {}
        uid = (state.get("identities") or {}).get("ldap")
        if uid is None and state.get("backend") == "ldap":
            uid = username
        if uid is None:
            return
        try:
            entry = await ldap.lookup(uid)
        except Exception as e:  # the directory is down: don't approve blind
            raise ApprovalRefused(503, f"can't check that {username} is still in the user "
                                       f"directory ({e}); try again later") from e
        if entry is None:
            raise ApprovalRefused(409, f"{username} is no longer in the user directory "
                                       f"(uid {uid!r}); nothing was changed")

    @staticmethod
    def status(orm_user: orm.User, message: str = "") -> dict:
        state, record = state_of(orm_user)
        out = {"name": orm_user.name, "state": state or "none", "admin": bool(orm_user.admin),
               "record": record}
        if message:
            out["message"] = message
        return out

    def all_status(self, db: Any) -> list[dict]:
        rows = []
        for name in STATE_GROUPS:
            group = orm.Group.find(db, name)
            for u in (group.users if group else []):
                rows.append(self.status(u))
        return sorted(rows, key=lambda r: (r["state"] != "pending", r["name"]))

    def approval_handlers(self) -> list[tuple[str, type]]:
        if not self.require_approval:
            return []
        return [(rf"/{API_PATH}", ApprovalsAPIHandler),
                (rf"/{API_PATH}/([^/]+)", ApprovalsAPIHandler),
                (rf"/{PAGE_PATH}", ApprovalsPageHandler),
                (rf"/{STATUS_PATH}", ApprovalStatusHandler),
                (r"/home", GatedHomeHandler),
                (r"/spawn", GatedSpawnHandler),
                (r"/spawn/([^/]+)", GatedSpawnHandler),
                (r"/spawn/([^/]+)/([^/]+)", GatedSpawnHandler)]


async def _maybe(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value


def _is_admin(handler: Any) -> bool:
    """Unfiltered admin:users: hub admins and admin tokens (not a user's own scopes)."""
    scopes = getattr(handler, "parsed_scopes", {}) or {}
    return scopes.get("admin:users") == Scope.ALL


class ApprovalsAPIHandler(APIHandler):
    """GET the decisions (all, or one user); POST {"user", "decision", "reason"}. Admin."""

    def _admin(self) -> str:
        if self.current_user is None:
            raise web.HTTPError(403, "authentication required (a hub admin's API token)")
        if not _is_admin(self):
            raise web.HTTPError(403, "only hub admins decide onboarding approvals")
        return self.current_user.name

    async def get(self, name: str | None = None) -> None:
        self._admin()
        if name is None:
            self.write(json.dumps({"users": self.authenticator.all_status(self.db)}))
            return
        orm_user = orm.User.find(self.db, name)
        if orm_user is None:
            raise web.HTTPError(404, f"there is no hub user {name!r}")
        self.write(json.dumps(self.authenticator.status(orm_user)))

    async def post(self, name: str | None = None) -> None:
        admin = self._admin()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        user = name or body.get("user")
        if not isinstance(user, str) or not isinstance(body.get("reason", ""), str):
            raise web.HTTPError(400, "'user' and 'reason' must be strings")
        changed, status = await self.authenticator.decide(
            self.db, self.users, admin, user, str(body.get("decision", "")),
            body.get("reason", ""))
        self.set_status(200 if not changed else 201)
        self.write(json.dumps({**status, "changed": changed}))


class _Page(BaseHandler):
    async def _render(self, template: str, status: int = 200, **ns: Any) -> None:
        body = self.settings["jinja2_env"].from_string((TEMPLATES / template).read_text())
        # as the hub's render_template: its page.html hands the xsrf token to its scripts
        html = await body.render_async(**self.template_namespace,
                                       xsrf_token=self.xsrf_token.decode("ascii"), **ns)
        self.set_status(status)
        self.finish(html)


class ApprovalsPageHandler(_Page):
    """The admins' page: pending users first, each with approve/reject forms (XSRF)."""

    @web.authenticated
    async def get(self) -> None:
        await self._page()

    async def _page(self, notice: str = "", error: str = "", status: int = 200) -> None:
        if not self.current_user.admin:
            raise web.HTTPError(403, "only hub admins decide onboarding approvals")
        await self._render("approvals.html", status, rows=self.authenticator.all_status(
            self.db), notice=notice, error=error,
            action=url_path_join(self.hub.base_url, PAGE_PATH))

    @web.authenticated
    async def post(self) -> None:
        if not self.current_user.admin:
            raise web.HTTPError(403, "only hub admins decide onboarding approvals")
        try:
            changed, status = await self.authenticator.decide(
                self.db, self.users, self.current_user.name,
                self.get_body_argument("user", ""), self.get_body_argument("decision", ""),
                self.get_body_argument("reason", ""))
        except ApprovalRefused as e:
            await self._page(error=e.message, status=e.status_code)
            return
        await self._page(notice=status["message"])


class ApprovalStatusHandler(_Page):
    """The signed-in user's own state: the 'waiting for approval' page."""

    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        state, record = state_of(user.orm_user)
        if user.admin and state is None:
            state = "approved"
        await self._render("approval_status.html", state=state or "pending", record=record,
                           username=user.name)


def _to_waiting_page(handler: BaseHandler) -> bool:
    """Redirect a signed-in pending or rejected user to their status page; True if so."""
    user = handler.current_user
    if user is None or user.admin or not handler.authenticator.require_approval:
        return False
    state, _ = state_of(user.orm_user)
    if state not in ("pending", "rejected"):
        return False
    handler.redirect(url_path_join(handler.hub.base_url, STATUS_PATH))
    return True


class GatedHomeHandler(HomeHandler):
    """The hub's home page, except for users who aren't approved (the login lands here)."""

    @web.authenticated
    async def get(self) -> None:
        if not _to_waiting_page(self):
            await super().get()


class GatedSpawnHandler(SpawnHandler):
    """The hub's spawn page (where a login goes with redirect_to_server), likewise."""

    @web.authenticated
    def get(self, user_name: str | None = None, server_name: str = "") -> Any:
        if _to_waiting_page(self):
            return None
        return super().get(user_name, server_name)
