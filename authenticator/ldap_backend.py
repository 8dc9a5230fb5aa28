"""The LDAP backend: ldapauthenticator's LDAPAuthenticator, hardened and made non-blocking.

What it adds to the upstream class (whose traits all still apply, also as
`c.LDAPAuthenticator.*`): TLS certificates validated by default, connect/receive timeouts
so a dead directory is reported in seconds, no blocking of the hub's event loop (ldap3 is
synchronous; we run it in a thread), a full group lookup (groupOfNames/member and
posixGroup/memberUid) and a service-account lookup used for refresh and for giving OIDC
users their uid/gid.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core.exceptions import (
    LDAPBindError,
    LDAPCommunicationError,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from ldap3.core.tls import Tls
from ldap3.utils.conv import escape_filter_chars
from ldapauthenticator import LDAPAuthenticator
from ldapauthenticator.ldapauthenticator import TlsStrategy
from traitlets import Float, Int, List, Unicode, default

from .errors import LoginRefused


class DirectoryUnavailable(LoginRefused):
    """The LDAP server could not be reached (down, timeout, TLS failure)."""

    def __init__(self, detail: str):
        super().__init__(
            503, "The user directory is unavailable right now. Try again in a few minutes.",
            detail)


@dataclass
class LDAPIdentity:
    """What the directory says about one account."""

    uid: str
    dn: str
    groups: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)

    def first(self, name: str) -> Any:
        value = self.attributes.get(name)
        if isinstance(value, list):
            return value[0] if value else None
        return value


@dataclass
class _LoginBinds:
    """What one login's upstream `authenticate` did: every connection it opened (unbound at
    the end; upstream leaves them to the garbage collector) and the user's own bind, as
    upstream hands it to `get_user_attributes(conn, userdn)`."""

    opened: list[ldap3.Connection] = field(default_factory=list)
    user_conn: ldap3.Connection | None = None
    user_dn: str | None = None


# Set only for the duration of one `login` (its own thread and event loop): connections
# opened outside a login (lookups) are not recorded.
_LOGIN: contextvars.ContextVar[_LoginBinds | None] = contextvars.ContextVar(
    "kdash_ldap_login", default=None)


class LDAPBackend(LDAPAuthenticator):
    """One directory. Owned by KDashAuthenticator; configure as `c.LDAPBackend.*`."""

    connect_timeout = Float(
        3.0, config=True,
        help="Seconds to wait for a TCP/TLS connection to the LDAP server before telling the "
             "user that the directory is unavailable.")
    receive_timeout = Int(
        5, config=True, help="Seconds (whole) to wait for any single LDAP response.")
    max_password_length = Int(
        1024, config=True,
        help="Longer passwords are refused before any bind (protects the directory).")
    group_search_base = Unicode(
        "", config=True,
        help="Where to look for the user's groups (e.g. 'ou=groups,dc=example,dc=org'). "
             "Empty: no group lookup (groups are then only the matched allowed_groups).")
    group_membership_filter = Unicode(
        "(|(&(objectClass=groupOfNames)(member={userdn}))"
        "(&(objectClass=groupOfUniqueNames)(uniqueMember={userdn}))"
        "(&(objectClass=posixGroup)(memberUid={uid})))",
        config=True,
        help="Filter for the user's groups under group_search_base; {userdn} and {uid} are "
             "replaced with escaped values.")
    group_name_attribute = Unicode(
        "cn", config=True, help="Attribute of a group entry used as the hub group name.")
    user_search_attribute = Unicode(
        "uid", config=True,
        help="Attribute holding the username, used by the service-account lookup (refresh, "
             "uid/gid for OIDC users). Defaults to user_attribute when that is set.")

    @default("auth_state_attributes")
    def _auth_state_attributes_default(self) -> list[str]:
        return ["uidNumber", "gidNumber", "mail", "displayName", "cn"]

    @default("tls_kwargs")
    def _tls_kwargs_default(self) -> dict:
        return {"validate": ssl.CERT_REQUIRED}

    allowed_groups = List(
        config=True, allow_none=True, default_value=None,
        help="LDAP group DNs (upstream semantics): if set, only their members may log in via "
             "LDAP. Hub-level group rules are KDashAuthenticator.allowed_groups/admin_groups.")

    # -- connections --------------------------------------------------------------------

    def _server(self) -> ldap3.Server:
        tls_kwargs = {"validate": ssl.CERT_REQUIRED, **self.tls_kwargs}
        return ldap3.Server(
            self.server_address, port=self.server_port,
            use_ssl=self.tls_strategy == TlsStrategy.on_connect, tls=Tls(**tls_kwargs),
            connect_timeout=self.connect_timeout, get_info=ldap3.NONE,
        )

    def get_connection(self, userdn: str | None, password: str | None):
        """A bound connection, None on wrong credentials, DirectoryUnavailable when unreachable."""
        auto_bind = (ldap3.AUTO_BIND_TLS_BEFORE_BIND
                     if self.tls_strategy == TlsStrategy.before_bind else ldap3.AUTO_BIND_NO_TLS)
        try:
            conn = ldap3.Connection(
                self._server(), user=userdn, password=password, auto_bind=auto_bind,
                receive_timeout=self.receive_timeout, raise_exceptions=False,
            )
        except LDAPBindError:
            return None
        except (LDAPCommunicationError, LDAPStartTLSError, LDAPResponseTimeoutError,
                OSError) as e:
            self.log.error("LDAP server %s:%s unreachable: %s",
                           self.server_address, self.server_port, e)
            raise DirectoryUnavailable(str(e)) from e
        binds = _LOGIN.get()
        if binds is not None:
            binds.opened.append(conn)
        return conn

    def get_user_attributes(self, conn: ldap3.Connection, userdn: str) -> dict:
        """Upstream calls this with the user's own bound connection and DN once the password
        was accepted: the group lookup below runs on that connection."""
        binds = _LOGIN.get()
        if binds is not None:
            binds.user_conn, binds.user_dn = conn, userdn
        return super().get_user_attributes(conn, userdn)

    # -- login --------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> LDAPIdentity | None:
        """Check a (normalised) username and password. None means wrong credentials."""
        if not password or not password.strip() or len(password) > self.max_password_length:
            return None  # never reaches the directory
        return await asyncio.to_thread(self._login_sync, username, password)

    def _login_sync(self, username: str, password: str) -> LDAPIdentity | None:
        """Upstream's `authenticate` (synchronous ldap3 inside a coroutine) awaited on an
        event loop of this worker thread, so the hub's loop never blocks on the directory."""
        binds = _LoginBinds()
        _LOGIN.set(binds)  # this thread's context only (asyncio.to_thread copies it)
        try:
            result = asyncio.run(self._upstream_authenticate(username, password))
            if not result:
                return None
            if binds.user_conn is None or binds.user_dn is None:
                raise RuntimeError("ldapauthenticator accepted a login without calling "
                                   "get_user_attributes(conn, userdn)")
            state = result["auth_state"]
            if self.allowed_groups and not state.get("ldap_groups"):
                # upstream leaves this to its check_allowed, which the hub calls only on the
                # hub's authenticator (KDashAuthenticator), never on this backend
                raise LoginRefused(403, "Your directory account is not a member of a group "
                                   "allowed to use this hub.", f"{result['name']}: not in "
                                   "LDAPBackend.allowed_groups")
            identity = LDAPIdentity(uid=result["name"], dn=binds.user_dn,
                                    attributes=state.get("user_attributes") or {})
            identity.groups = self._groups(binds.user_conn, binds.user_dn, identity.uid) or [
                _rdn_value(g) for g in state.get("ldap_groups", [])]
            return identity
        except (LDAPCommunicationError, LDAPResponseTimeoutError) as e:
            raise DirectoryUnavailable(str(e)) from e
        finally:
            for conn in binds.opened:
                _unbind(conn)
            _LOGIN.set(None)

    async def _upstream_authenticate(self, username: str, password: str) -> dict | None:
        return await self.authenticate(None, {"username": username, "password": password})

    def _groups(self, conn: ldap3.Connection, userdn: str, uid: str) -> list[str]:
        if not self.group_search_base:
            return []
        conn.search(
            self.group_search_base,
            self.group_membership_filter.format(
                userdn=escape_filter_chars(userdn), uid=escape_filter_chars(uid)),
            search_scope=ldap3.SUBTREE, attributes=[self.group_name_attribute],
        )
        names = []
        for entry in conn.entries:
            value = entry.entry_attributes_as_dict.get(self.group_name_attribute) or []
            names.extend(str(v) for v in value[:1])
        return sorted(set(names))

    # -- lookups without the user's password (refresh, OIDC users) ----------------------

    @property
    def can_lookup(self) -> bool:
        """Lookups need the service account: anonymous searches usually see nothing, and
        "not found" would log everybody out at the next refresh."""
        return bool(self.lookup_dn_search_user)

    @property
    def username_attribute(self) -> str:
        """The attribute holding usernames (user_attribute, else user_search_attribute)."""
        return self.user_attribute or self.user_search_attribute

    async def lookup(self, username: str) -> LDAPIdentity | None:
        """The account `username` as the service account sees it; None if it doesn't exist."""
        return await self.find(self.username_attribute, username)

    async def find(self, attribute: str, value: str) -> LDAPIdentity | None:
        """The one account whose `attribute` equals `value` (None for none or several)."""
        return await asyncio.to_thread(self._find_sync, attribute, value)

    def _find_sync(self, attribute: str, value: str) -> LDAPIdentity | None:
        conn = self.get_connection(self.lookup_dn_search_user, self.lookup_dn_search_password)
        if conn is None:
            raise DirectoryUnavailable("service account bind failed (lookup_dn_search_user)")
        name_attr = self.username_attribute
        try:
            ok = conn.search(
                self.user_search_base or "", f"({attribute}={escape_filter_chars(value)})",
                search_scope=ldap3.SUBTREE,
                attributes=sorted({*self.auth_state_attributes, name_attr}),
            )
            if conn.result.get("result") not in (0, 32) and not ok:
                raise DirectoryUnavailable(f"user search failed: {conn.result}")
            if len(conn.entries) != 1:
                return None
            entry = conn.entries[0]
            attributes = entry.entry_attributes_as_dict
            names = next((v for k, v in attributes.items() if k.lower() == name_attr.lower()),
                         None) or []
            if attribute.lower() == name_attr.lower():
                uid = value
            elif len(names) == 1 and isinstance(names[0], str):
                uid = names[0]
            else:
                return None  # no single username on the entry: not an account we can name
            identity = LDAPIdentity(uid=uid, dn=entry.entry_dn, attributes=attributes)
            identity.groups = self._groups(conn, entry.entry_dn, uid)
            return identity
        except (LDAPCommunicationError, LDAPResponseTimeoutError) as e:
            raise DirectoryUnavailable(str(e)) from e
        finally:
            _unbind(conn)


def _rdn_value(dn: str) -> str:
    first = dn.split(",", 1)[0]
    return first.split("=", 1)[-1]


def _unbind(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001 - a dead socket has nothing left to close
        pass
