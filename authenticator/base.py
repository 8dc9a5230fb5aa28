"""KDashAuthenticator: one login page for an LDAP directory and any number of OIDC providers.

Composition, not inheritance: it owns one `LDAPBackend` (ldapauthenticator) and one
`OIDCBackend` (oauthenticator) per configured provider, and keeps the things that must be
the same whatever the backend in one place: the username rule, groups (managed hub groups,
admin/allowed groups, group -> profiles/quota), the auth_state handed to the spawner,
and refresh.

auth_state (encrypted by JupyterHub, see `enable_auth_state`)::

    {"backend": "ldap" | "oidc:<provider>", "uid": int|None, "gid": int|None,
     "groups": [str], "email": str|None, "display_name": str|None,
     "profiles": [str], "quota": {...},            # from group_profiles
     "identities": {"ldap": "<uid>", "oidc:<p>": "<sub>"},   # account bindings
     "links": {"ldap": "created", "oidc:<p>": "rule" | "user"},  # how each was bound
     "backends": {"ldap": {...}, "oidc:<p>": {... tokens ...}}}  # per-backend detail

Which identity may reach which account is decided in accounts.py: nothing binds silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.traitlets import Callable
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Dict, Int, Set, Unicode, default, validate

from . import accounts, refresh
from . import groups as groupmodel
from .approval import ApprovalMixin
from .discovery import ProviderUnavailable
from .errors import LoginRefused
from .handlers import (
    LINK_PATH,
    OIDC_PROVIDER_KEY,
    LinkLDAPHandler,
    LinkOIDCHandler,
    LinkPageHandler,
    OIDCCallbackHandler,
    OIDCLoginHandler,
    OIDCLogoutHandler,
)
from .ldap_backend import DirectoryUnavailable, LDAPBackend, LDAPIdentity
from .oidc_backend import OIDCBackend
from .providers import ProviderSettings, parse_providers
from .usernames import DEFAULT_PATTERN, UsernameRule

TEMPLATE = Path(__file__).with_name("templates") / "login.html"


class KDashAuthenticator(ApprovalMixin, Authenticator):
    """LDAP form + OIDC buttons, one username and group model, auth_state for the spawner."""

    enable_ldap = Bool(
        True, config=True,
        help="Offer the username/password form backed by LDAP (configure it with "
             "`c.LDAPBackend.*`; every `c.LDAPAuthenticator.*` setting applies too).")
    oidc_providers = Dict(
        config=True,
        help="""OIDC providers, one login button each. Keys are provider ids (a-z, 0-9, -),
        used in URLs (/hub/oauth_login/<id>, /hub/oauth_callback/<id>) and usernames::

            c.KDashAuthenticator.oidc_providers = {
                "keycloak": {
                    "issuer": "https://sso.example.org/realms/main",   # required
                    "client_id": "jupyterhub",                         # required
                    "client_secret": "...",
                    "display_name": "Example SSO",
                    "trusted": True,          # names and groups used as they are
                    "scope": ["openid", "profile", "email", "groups"],
                    "username_claim": "preferred_username",
                    "groups_claim": "groups",  # dotted path allowed
                    "callback_url": "",        # default: guessed from the request
                    "validate_server_cert": True,
                    "ldap_link_claim": "",     # off; see below
                    "ldap_link_attribute": "", # default LDAPBackend.user_attribute
                    "end_session": True,       # logout ends the provider's session too
                    "post_logout_redirect_uri": "",  # default: this hub's /hub/login
                },
            }

        Endpoints and keys come from the issuer's discovery document, fetched on first use.

        `trusted`: the provider's usernames are hub usernames as they are, and its groups
        are hub groups (so they can grant `admin_groups`); an untrusted provider's users are
        `<provider>-<name>` with groups `<provider>-<group>`. Being trusted does NOT let a
        provider identity into an account of the LDAP directory or of another provider: a
        provider user whose name belongs to such an account is refused, with a message
        telling them to sign in the other way and link their accounts on the
        account-linking page (/hub/link-accounts).

        `ldap_link_claim` (off by default) is the admin's rule that this provider is
        federated with the LDAP directory: "the value of this claim is the directory
        attribute `ldap_link_attribute` (default: the username attribute) of the SAME
        person". A provider identity whose claim matches exactly one directory entry signs
        in to that directory user's hub account — admin rights, uid/gid and groups
        included — without a password. Turn it on only for a provider that takes the value
        from this directory (e.g. a `uidNumber` claim, or `preferred_username` of an IdP
        whose accounts ARE the directory's) and where nobody can choose or change it.
        Needs `LDAPBackend.lookup_dn_search_user` (the rule is checked against the
        directory at every sign-in).

        `end_session` (on by default): logging out of the hub also ends the user's session
        at the provider they signed in with (OIDC RP-initiated logout), if its discovery
        document advertises an `end_session_endpoint`: the browser goes there with the
        sign-in's id_token as `id_token_hint`, `client_id` and `post_logout_redirect_uri`,
        and the provider sends it back to `post_logout_redirect_uri` (default: the hub's
        login page as the browser reached it, e.g. https://hub.example.org/hub/login). That
        URI must be registered at the provider for this client (Keycloak: "Valid post
        logout redirect URIs"; oidc-provider: `post_logout_redirect_uris`), or the provider
        refuses the logout. Without the endpoint, for LDAP users, and with `end_session`
        False, logout is the hub's own logout only.
        """)
    valid_username_pattern = Unicode(
        DEFAULT_PATTERN, config=True,
        help="Hub usernames (after NFKC folding and lowercasing) must match this regex.")
    max_username_length = Int(
        64, config=True, help="Longest accepted username (longer ones are refused early).")
    untrusted_username_template = Unicode(
        "{provider}-{username}", config=True,
        help="Username of a user of an *untrusted* provider ({provider}, {username}). "
             "Trusted providers' usernames are used as they are, like LDAP uids.")
    username_hook = Callable(
        None, allow_none=True, config=True,
        help="Optional `hook(backend, identity) -> username` replacing the default rule. "
             "`backend` is 'ldap' or 'oidc:<id>'; `identity` has uid/claims/trusted.")
    allowed_groups = Set(
        config=True,
        help="Hub group names (from LDAP or OIDC) whose members may log in. Members are "
             "re-checked at every refresh.")
    admin_groups = Set(
        config=True,
        help="Members of these groups are hub admins; when set, admin status follows "
             "group membership (plus admin_users).")
    group_profiles = Dict(
        config=True,
        help="""Group -> {"profiles": [...], "quota": {...}} for the spawner. A user gets the
        union of their groups' profiles and the largest quota value per key, in
        auth_state["profiles"] / auth_state["quota"].""")
    lookup_oidc_users_in_ldap = Bool(
        True, config=True,
        help="OIDC users whose hub account is bound to a directory account (by the "
             "provider's `ldap_link_claim` rule or a link the user made) get uid/gid and "
             "groups from that account (service-account lookup).")
    ldap_display_name = Unicode(
        "username and password", config=True,
        help="How messages name the LDAP form ('… signs in with <this>'), e.g. "
             "'your university account'.")
    max_password_length = Int(
        1024, config=True, help="Longer passwords are refused before contacting LDAP.")
    custom_403_message = Unicode(
        "You signed in, but this account may not use this hub: it is not in a group "
        "allowed here. If it should be, ask the hub's administrators to add it to one.",
        config=True,
        help="What a person whose provider sign-in worked but who may not use the hub (not "
             "in `allowed_groups`/`allowed_users`, or blocked) reads on the 403 page. The "
             "name and role are oauthenticator's, whose callback handler shows it. The LDAP "
             "form keeps JupyterHub's own refusal (the form again, with a 403).")

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self) -> bool:
        return True

    @validate("oidc_providers")
    def _validate_providers(self, proposal: Any) -> dict:
        parse_providers(proposal.value)
        return proposal.value

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.rule = UsernameRule(self.valid_username_pattern, self.max_username_length,
                                 self.untrusted_username_template)
        self.providers: dict[str, ProviderSettings] = {
            p.id: p for p in parse_providers(self.oidc_providers)}
        self.ldap: LDAPBackend | None = None
        if self.enable_ldap:
            self.ldap = LDAPBackend(parent=self)
            self._check_ldap_config(self.ldap)
            if not self.ldap.can_lookup:
                self.log.warning(
                    "LDAPBackend.lookup_dn_search_user is not set: LDAP accounts and groups are "
                    "not re-checked at refresh, and OIDC users get no uid/gid from LDAP")
        if not self.ldap and not self.providers:
            raise ValueError("KDashAuthenticator: enable_ldap is False and oidc_providers is "
                             "empty, so nobody could log in. Configure at least one.")
        self.oidc: dict[str, OIDCBackend] = {
            pid: OIDCBackend(p, parent=self) for pid, p in self.providers.items()}
        self._check_binding_config()
        self.pending = accounts.PendingClaims()

    def _check_binding_config(self) -> None:
        """Account bindings live in auth_state; rules need the directory to check them."""
        if not self.enable_auth_state and (bool(self.ldap) + len(self.providers)) > 1:
            raise ValueError(
                "KDashAuthenticator.enable_auth_state is False with more than one sign-in "
                "method: the hub could not record which identities own an account, so one "
                "method could sign in to another's accounts. Enable auth_state "
                "(JUPYTERHUB_CRYPT_KEY) or configure a single sign-in method.")
        trusted = [p.id for p in self.providers.values() if p.trusted]
        if self.ldap and not self.ldap.can_lookup and trusted:
            raise ValueError(
                f"KDashAuthenticator.oidc_providers {trusted} are trusted (their usernames "
                "are hub usernames, like directory uids) but LDAPBackend.lookup_dn_search_user "
                "is not set: the hub could not tell whether a new provider account takes the "
                "name of a directory user. Set the service account, or make them untrusted.")
        for p in self.providers.values():
            if p.ldap_link_claim and not (self.ldap and self.ldap.can_lookup):
                raise ValueError(
                    f"KDashAuthenticator.oidc_providers[{p.id!r}]['ldap_link_claim'] needs "
                    "LDAP with LDAPBackend.lookup_dn_search_user: the rule is checked "
                    "against the directory at every sign-in.")

    @staticmethod
    def _check_ldap_config(ldap: LDAPBackend) -> None:
        if not ldap.server_address:
            raise ValueError("LDAPBackend.server_address is not set (or set "
                             "KDashAuthenticator.enable_ldap = False to use only OIDC)")
        if not ldap.bind_dn_template and not ldap.lookup_dn:
            raise ValueError("LDAPBackend.bind_dn_template or LDAPBackend.lookup_dn must be "
                             "configured")
        if ldap.lookup_dn and not (ldap.user_search_base and ldap.user_attribute):
            raise ValueError("LDAPBackend.lookup_dn needs LDAPBackend.user_search_base and "
                             "LDAPBackend.user_attribute")

    # -- hub integration -----------------------------------------------------------------

    def oidc_backend(self, provider: str) -> OIDCBackend:
        backend = self.oidc.get(provider)
        if backend is None:
            raise web.HTTPError(404, f"No OIDC provider {provider!r} is configured")
        return backend

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        if not self.oidc:
            return self.approval_handlers()
        return [*self.approval_handlers(), (r"/oauth_login/([a-z][a-z0-9-]*)", OIDCLoginHandler),
                (r"/oauth_callback/([a-z][a-z0-9-]*)", OIDCCallbackHandler),
                (rf"/{LINK_PATH}", LinkPageHandler),
                (rf"/{LINK_PATH}/ldap", LinkLDAPHandler),
                (rf"/{LINK_PATH}/oidc/([a-z][a-z0-9-]*)", LinkOIDCHandler),
                (r"/logout", OIDCLogoutHandler)]

    async def end_session_url(self, user: Any, hub_login_url: str) -> str:
        """Where logout sends `user` to end their provider session ("" = plain hub logout).

        The provider is the one the user last signed in with (auth_state["backend"]); its
        id_token from that sign-in is the `id_token_hint`. Without auth_state, a hub whose
        only sign-in method is one provider uses that provider with its client_id alone.
        """
        state = await user.get_auth_state() if self.enable_auth_state else None
        if state:
            backend = str(state.get("backend") or "")
            detail = (state.get("backends") or {}).get(backend) or {}
            id_token = detail.get("id_token") if isinstance(detail, dict) else None
        elif not self.enable_auth_state and not self.ldap and len(self.oidc) == 1:
            backend, id_token = f"oidc:{next(iter(self.oidc))}", None
        else:
            return ""
        if not backend.startswith("oidc:"):
            return ""  # LDAP: the hub's own logout is all there is
        oidc = self.oidc.get(backend.split(":", 1)[1])
        if oidc is None:
            return ""  # a provider removed from the configuration since that sign-in
        after = oidc.provider.post_logout_redirect_uri or hub_login_url
        try:
            return await oidc.end_session_url(id_token if isinstance(id_token, str) else None,
                                              after)
        except ProviderUnavailable as e:
            self.log.warning("Logout of %s: %s is unreachable, so its session is not ended: "
                             "%s", user.name, oidc.provider.display_name, e.log_message)
            return ""

    def login_url(self, base_url: str) -> str:
        if self.auto_login and not self.ldap and len(self.oidc) == 1:
            return url_path_join(base_url, "oauth_login", next(iter(self.oidc)))
        return super().login_url(base_url)

    @property
    def login_providers(self) -> list[ProviderSettings]:
        return list(self.providers.values())

    def get_custom_html(self, base_url: str) -> str:
        """Our login box; the hub renders it (jinja) with its login context, in login.html."""
        setup = (f"{{% set base_url = {json.dumps(base_url)} %}}"
                 f"{{% set show_form = {bool(self.ldap)!r} %}}"
                 "{% set providers = authenticator.login_providers %}")
        return setup + TEMPLATE.read_text()

    # -- authentication ------------------------------------------------------------------

    async def authenticate(self, handler: Any, data: dict | None) -> dict | None:
        data = data or {}
        if OIDC_PROVIDER_KEY in data:
            if not callable(getattr(handler, "get_state_cookie", None)):
                # the login form posts every field as data: only the OAuth callback (which
                # holds the state cookie and the PKCE verifier) may start an OIDC login
                raise LoginRefused(400, "Sign in with a provider through its button.")
            return await self._authenticate_oidc(handler, self.oidc_backend(
                data[OIDC_PROVIDER_KEY]))
        if not self.ldap:
            raise LoginRefused(403, "Password sign-in is not enabled here; use a sign-in "
                               "button.")
        username = self.rule.check(data.get("username") or "")
        password = data.get("password") or ""
        if not password.strip():
            raise LoginRefused(403, "Enter your password.")
        if len(password) > self.max_password_length:
            raise LoginRefused(403, "That password is too long.")
        try:
            identity = await self.ldap.login(username, password)
        except DirectoryUnavailable as e:
            raise self._directory_unavailable(e) from e
        if identity is None:
            return None
        return await self.ldap_model(handler, identity)

    def _directory_unavailable(self, e: DirectoryUnavailable) -> DirectoryUnavailable:
        if self.providers:
            names = " or ".join(p.display_name for p in self.providers.values())
            e.message = e.jupyterhub_message = (
                f"The user directory is unavailable right now. Try again in a few minutes, "
                f"or sign in with {names}.")
        return e

    def _username(self, backend: str, identity: dict, default: str) -> str:
        if self.username_hook is None:
            return default
        return self.rule.check(self.username_hook(backend, identity))

    def describe(self, backend: str) -> str:
        """How a message names a sign-in method ('Example SSO', 'username and password')."""
        if backend == accounts.LDAP:
            return self.ldap_display_name
        p = self.providers.get(backend.split(":", 1)[-1])
        return p.display_name if p else backend

    def link_url(self, handler: Any) -> str:
        hub = getattr(handler, "hub", None)
        return url_path_join(getattr(hub, "base_url", "/hub/"), LINK_PATH)

    def ldap_username(self, identity: LDAPIdentity) -> str:
        """The hub username of a directory account (the same rule for every backend)."""
        return self._username("ldap", {"uid": identity.uid, "dn": identity.dn},
                              self.rule.ldap_username(identity.uid))

    async def ldap_model(self, handler: Any, identity: LDAPIdentity,
                         state: dict | None = None) -> dict:
        """auth model for an LDAP account (login and refresh; `state`: the current one)."""
        username = self.ldap_username(identity)
        detail = self.ldap_detail(identity)
        decision = await self._bind(handler, username, accounts.LDAP, identity.uid,
                                    state=state)
        return self._auth_model(
            username, accounts.LDAP, detail, decision,
            groups=identity.groups, uid=_int(identity.first("uidNumber")),
            gid=_int(identity.first("gidNumber")), email=identity.first("mail"),
            display_name=identity.first("displayName") or identity.first("cn"))

    @staticmethod
    def ldap_detail(identity: LDAPIdentity) -> dict:
        return {"dn": identity.dn, "uid": identity.uid, "groups": identity.groups,
                "attributes": _jsonable(identity.attributes)}

    async def _authenticate_oidc(self, handler: Any, backend: OIDCBackend) -> dict:
        params = backend.build_access_tokens_request_params(handler, None)
        token_info = await backend.get_token_info(handler, params)
        return await self.oidc_model(handler, backend, token_info)

    async def oidc_identity(self, backend: OIDCBackend, token_info: dict,
                            previous: dict | None = None) -> tuple[str, dict, dict,
                                                                   LDAPIdentity | None]:
        """(hub username, claims, backend detail, directory entry named by the admin's rule)
        for a verified token response."""
        p = backend.provider
        claims = await backend.token_to_user(token_info)
        ruled = await self._ruled_entry(backend, claims)
        if ruled is not None:
            username = self.ldap_username(ruled)
        else:
            name = backend.claim(claims, p.username_claim)
            if not isinstance(name, str) or not name:
                raise LoginRefused(403, f"{p.display_name} did not say who you are "
                                   f"(no {p.username_claim!r} claim).")
            username = self._username(p.backend_name,
                                      {"claims": claims, "trusted": p.trusted},
                                      self.rule.oidc_username(p.id, name, p.trusted))
        raw_groups = backend.claim(claims, p.groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        grp = groupmodel.clean_groups(raw_groups)
        if not p.trusted:
            grp = groupmodel.untrusted_groups(p.id, grp)
        refresh_token = token_info.get("refresh_token") or (previous or {}).get("refresh_token")
        detail = {
            "issuer": p.issuer, "sub": claims["sub"], "groups": grp,
            "access_token": token_info.get("access_token"), "refresh_token": refresh_token,
            "id_token": token_info.get("id_token"),
            "expires_at": token_info["id_token_claims"].get("exp"),
            "claims": {k: claims.get(k) for k in ("preferred_username", "name", "email")},
        }
        return username, claims, detail, ruled

    async def _ruled_entry(self, backend: OIDCBackend, claims: dict) -> LDAPIdentity | None:
        """The directory entry the provider's `ldap_link_claim` rule names, if any."""
        p = backend.provider
        if not p.ldap_link_claim or self.ldap is None:
            return None
        value = backend.claim(claims, p.ldap_link_claim)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return None
        try:
            return await self.ldap.find(p.ldap_link_attribute or self.ldap.username_attribute,
                                        str(value))
        except DirectoryUnavailable as e:
            e.message = e.jupyterhub_message = (
                f"Sign-in with {p.display_name} needs the user directory, which is "
                "unavailable right now. Try again in a few minutes.")
            raise

    async def oidc_model(self, handler: Any, backend: OIDCBackend, token_info: dict,
                         previous: dict | None = None, state: dict | None = None) -> dict:
        """auth model for an OIDC identity from a verified token response."""
        p = backend.provider
        username, claims, detail, ruled = await self.oidc_identity(backend, token_info,
                                                                   previous)
        decision = await self._bind(handler, username, p.backend_name, claims["sub"],
                                    ruled_ldap_uid=ruled.uid if ruled else None, state=state)
        grp = list(detail["groups"])
        uid = gid = None
        entry = await self._bound_directory_entry(username, decision, ruled)
        if entry is not None:
            uid, gid = _int(entry.first("uidNumber")), _int(entry.first("gidNumber"))
            grp = sorted(set(grp) | set(entry.groups))
            detail["ldap"] = {"dn": entry.dn, "groups": entry.groups}
        return self._auth_model(
            username, p.backend_name, detail, decision, groups=grp,
            uid=uid, gid=gid, email=claims.get("email"), display_name=claims.get("name"))

    async def _bound_directory_entry(self, username: str, decision: accounts.Decision,
                                     ruled: LDAPIdentity | None) -> LDAPIdentity | None:
        """The directory account bound to this hub account (uid/gid/groups come from it)."""
        ldap_uid = decision.bindings.identities.get(accounts.LDAP)
        if ruled is not None and ruled.uid == ldap_uid:
            return ruled
        if (ldap_uid is None or not self.ldap or not self.ldap.can_lookup
                or not self.lookup_oidc_users_in_ldap):
            return None
        try:
            return await self.ldap.lookup(ldap_uid)
        except DirectoryUnavailable as e:
            self.log.warning("LDAP lookup for OIDC user %s skipped: %s", username, e)
            return None

    async def _bind(self, handler: Any, username: str, backend: str, subject: str, *,
                    ruled_ldap_uid: str | None = None,
                    state: dict | None = None) -> accounts.Decision:
        """May this identity sign in to `username`? Refuses with a clear message if not."""
        if state is None:
            state = await self._existing_state(handler, username)
        bindings = accounts.Bindings.from_state(state)
        link_url = self.link_url(handler)
        if (bindings.empty and backend != accounts.LDAP and ruled_ldap_uid is None
                and await self._directory_has(username, backend)):
            raise accounts.collision(username, None, backend, self.describe, link_url)
        creating = bindings.empty
        decision = accounts.decide(username, bindings, backend, subject,
                                   ruled_ldap_uid=ruled_ldap_uid, describe=self.describe,
                                   link_url=link_url)
        if creating and not self.pending.claim(username, backend, subject):
            raise accounts.AccountRefused(
                f"Another sign-in to the account {username!r} is being set up right now. "
                "Try again in a minute.", status=409)
        decision.previous = state
        return decision

    async def _directory_has(self, username: str, backend: str) -> bool:
        """Is `username` a directory account? (A new account of another backend may not take
        its name.) Unknown without a service account; refuses while the directory is down."""
        if self.ldap is None or not self.ldap.can_lookup:
            return False
        try:
            return await self.ldap.lookup(username) is not None
        except DirectoryUnavailable as e:
            raise accounts.AccountRefused(
                f"Sign-in with {self.describe(backend)} can't check right now that the "
                f"username {username!r} is free, because the user directory is "
                "unavailable. Try again in a few minutes.", str(e), status=503) from e

    def _auth_model(self, username: str, backend: str, detail: dict,
                    decision: accounts.Decision, *, groups: list[str], uid: int | None,
                    gid: int | None, email: str | None, display_name: str | None) -> dict:
        backends = dict(decision.previous.get("backends") or {})
        backends[backend] = detail
        groups = groupmodel.clean_groups(groups)
        profiles, quota = groupmodel.profiles_and_quota(groups, self.group_profiles)
        auth_state = {
            "backend": backend, "uid": uid, "gid": gid, "groups": groups, "email": email,
            "display_name": display_name, "profiles": profiles, "quota": quota,
            **decision.bindings.to_state(), "backends": backends,
        }
        admin = None
        if username in self.admin_users:
            admin = True
        elif self.admin_groups:
            admin = bool(set(groups) & self.admin_groups)
        return {"name": username, "admin": admin, "groups": groups, "auth_state": auth_state}

    async def _existing_state(self, handler: Any, username: str) -> dict:
        find = getattr(handler, "find_user", None)
        user = find(username) if find else None
        if user is None or not self.enable_auth_state:
            return {}
        return await user.get_auth_state() or {}

    # -- linking (the user, signed in, adds another sign-in method) ----------------------

    async def link_identity(self, user: Any, backend: str, subject: str, username: str,
                            detail: dict) -> bool:
        """Bind (backend, subject), which maps to `username`, to the signed-in `user`.

        Only an identity that maps to the user's own name can be linked (that is the case a
        collision refusal sends people here for). Returns False if it was linked already.
        """
        if username != user.name:
            raise accounts.AccountRefused(
                f"That sign-in belongs to the hub user {username!r}, not {user.name!r}: "
                "only an account with your username can be linked here.")
        state = await user.get_auth_state() or {}
        bindings = accounts.Bindings.from_state(state)
        bound = bindings.identities.get(backend)
        if bound == subject:
            return False
        if bound is not None:
            raise accounts.AccountRefused(
                f"Your account already has a different {self.describe(backend)} sign-in "
                "linked. Ask an administrator to unlink it first.")
        bindings.bind(backend, subject, accounts.USER)
        backends = dict(state.get("backends") or {})
        backends[backend] = detail
        await user.save_auth_state({**state, **bindings.to_state(), "backends": backends})
        self.log.info("%s linked %s identity %s", user.name, backend, subject)
        return True

    def check_allowed(self, username: str, authentication: dict | None = None) -> bool:
        if super().check_allowed(username, authentication):
            return True
        groups = set((authentication or {}).get("groups") or [])
        if self.allowed_groups and groups & self.allowed_groups:
            return True
        return False

    # -- refresh ---------------------------------------------------------------------------

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Per backend: LDAP re-reads the account and groups, OIDC uses the refresh token."""
        model = await refresh.refresh_user(self, user, handler)
        return self.with_state_group(user.db, model) if self.require_approval else model


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
