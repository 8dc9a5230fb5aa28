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
     "backends": {"ldap": {...}, "oidc:<p>": {... tokens ...}}}  # per-backend detail
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

from . import groups as groupmodel
from . import refresh
from .errors import LoginRefused
from .handlers import OIDC_PROVIDER_KEY, OIDCCallbackHandler, OIDCLoginHandler
from .ldap_backend import DirectoryUnavailable, LDAPBackend, LDAPIdentity
from .oidc_backend import OIDCBackend
from .providers import ProviderSettings, parse_providers
from .usernames import DEFAULT_PATTERN, UsernameRule

TEMPLATE = Path(__file__).with_name("templates") / "login.html"


class KDashAuthenticator(Authenticator):
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
                    "trusted": True,          # usernames map to LDAP uids (default False)
                    "scope": ["openid", "profile", "email", "groups"],
                    "username_claim": "preferred_username",
                    "groups_claim": "groups",  # dotted path allowed
                    "callback_url": "",        # default: guessed from the request
                    "validate_server_cert": True,
                },
            }

        Endpoints and keys come from the issuer's discovery document, fetched on first use.
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
        help="Look users of trusted OIDC providers up in LDAP (service account) for "
             "uid/gid/groups.")
    max_password_length = Int(
        1024, config=True, help="Longer passwords are refused before contacting LDAP.")

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
            return []
        return [(r"/oauth_login/([a-z][a-z0-9-]*)", OIDCLoginHandler),
                (r"/oauth_callback/([a-z][a-z0-9-]*)", OIDCCallbackHandler)]

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

    async def ldap_model(self, handler: Any, identity: LDAPIdentity) -> dict:
        """auth model for an LDAP account (login and refresh)."""
        username = self._username("ldap", {"uid": identity.uid, "dn": identity.dn},
                                  self.rule.ldap_username(identity.uid))
        detail = {"dn": identity.dn, "uid": identity.uid, "groups": identity.groups,
                  "attributes": _jsonable(identity.attributes)}
        return await self._model(
            handler, username, "ldap", identity.uid, detail, groups=identity.groups,
            uid=_int(identity.first("uidNumber")), gid=_int(identity.first("gidNumber")),
            email=identity.first("mail"),
            display_name=identity.first("displayName") or identity.first("cn"))

    async def _authenticate_oidc(self, handler: Any, backend: OIDCBackend) -> dict:
        params = backend.build_access_tokens_request_params(handler, None)
        token_info = await backend.get_token_info(handler, params)
        return await self.oidc_model(handler, backend, token_info)

    async def oidc_model(self, handler: Any, backend: OIDCBackend, token_info: dict,
                         previous: dict | None = None) -> dict:
        """auth model for an OIDC identity from a verified token response."""
        p = backend.provider
        claims = await backend.token_to_user(token_info)
        name = backend.claim(claims, p.username_claim)
        if not isinstance(name, str) or not name:
            raise LoginRefused(403, f"{p.display_name} did not say who you are "
                               f"(no {p.username_claim!r} claim).")
        username = self._username(p.backend_name, {"claims": claims, "trusted": p.trusted},
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
        uid = gid = None
        if p.trusted and self.ldap and self.ldap.can_lookup and self.lookup_oidc_users_in_ldap:
            try:
                found = await self.ldap.lookup(username)
            except DirectoryUnavailable as e:
                self.log.warning("LDAP lookup of OIDC user %s skipped: %s", username, e)
                found = None
            if found:
                uid, gid = _int(found.first("uidNumber")), _int(found.first("gidNumber"))
                grp = sorted(set(grp) | set(found.groups))
                detail["ldap"] = {"dn": found.dn, "groups": found.groups}
        return await self._model(
            handler, username, p.backend_name, claims["sub"], detail, groups=grp, uid=uid,
            gid=gid, email=claims.get("email"), display_name=claims.get("name"),
            exclusive=not p.trusted)

    async def _model(self, handler: Any, username: str, backend: str, subject: str,
                     detail: dict, *, groups: list[str], uid: int | None, gid: int | None,
                     email: str | None, display_name: str | None,
                     exclusive: bool = False) -> dict:
        existing = await self._existing_state(handler, username)
        identities = dict(existing.get("identities") or {})
        bound = identities.get(backend)
        if backend != "ldap" and bound is not None and bound != subject:
            raise LoginRefused(403, f"The account {username!r} belongs to a different "
                               "identity at this provider.")
        if exclusive and existing and bound is None:
            raise LoginRefused(403, f"The account {username!r} already exists and was not "
                               "created through this provider.")
        identities[backend] = subject
        backends = dict(existing.get("backends") or {})
        backends[backend] = detail
        groups = groupmodel.clean_groups(groups)
        profiles, quota = groupmodel.profiles_and_quota(groups, self.group_profiles)
        auth_state = {
            "backend": backend, "uid": uid, "gid": gid, "groups": groups, "email": email,
            "display_name": display_name, "profiles": profiles, "quota": quota,
            "identities": identities, "backends": backends,
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
        return await refresh.refresh_user(self, user, handler)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
