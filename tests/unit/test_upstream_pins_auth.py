"""Pins for the upstream names and behaviours authenticator/ relies on (docs/upstream.md,
"Authenticator"). Each test fails when an upstream release changes the thing it names, so
an upgrade breaks CI, not logins. Versions: the ones tests/constraints/z2jh-4.4.0.txt pins
(oauthenticator 17.4.0, ldapauthenticator 2.0.2) and the dev environment's."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import ldapauthenticator
import pytest
from jupyterhub.handlers import BaseHandler
from ldapauthenticator import LDAPAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.auth import OAuth2Mixin

# -- oauthenticator: the state cookie format (private helpers) ----------------------------

def test_oauthenticator_state_helpers_round_trip():
    """handlers.py adds `provider`/`link_for` to upstream's state cookie and reads
    `state_id` back with these two private helpers."""
    from oauthenticator.oauth2 import _deserialize_state, _serialize_state

    state = {"state_id": "abc", "next_url": "/hub/home", "provider": "sso", "link_for": "x"}
    encoded = _serialize_state(state)
    assert isinstance(encoded, str)
    assert _deserialize_state(encoded) == state
    assert _deserialize_state(encoded.encode()) == state
    assert _deserialize_state("not base64 json!") == {}  # a forged cookie: no state_id


# -- oauthenticator: OAuthLoginHandler.get's steps ----------------------------------------

class _Settings:
    """What OAuthLoginHandler.get reads from `self.authenticator` (our OIDCBackend)."""

    client_id = "client-1"
    scope = ["openid", "email"]
    enable_pkce = True
    extra_authorize_params = {"prompt": "login"}

    def get_callback_url(self, handler: Any) -> str:
        return "https://hub.example/hub/oauth_callback/sso"


class _FakeLogin:
    """OAuthLoginHandler.get run on an object with just the steps it calls."""

    _generate_state_id = OAuthLoginHandler._generate_state_id
    _generate_pkce_params = OAuthLoginHandler._generate_pkce_params

    def __init__(self) -> None:
        self.authenticator = _Settings()
        self.calls: list[tuple[str, Any]] = []
        self.log = __import__("logging").getLogger("pin")

    def _get_next_url(self) -> str:
        return "/hub/spawn"

    def set_state_cookie(self, value: str) -> None:
        self.calls.append(("set_state_cookie", value))

    def authorize_redirect(self, **kwargs: Any) -> None:
        self.calls.append(("authorize_redirect", kwargs))


def test_oauth_login_get_sets_cookie_then_redirects_with_authenticator_settings():
    """OIDCLoginHandler reuses upstream's `get()`: it points `self.authenticator` at the
    provider's backend, adds to the state in `set_state_cookie` and sends the nonce (derived
    from the cookie's state_id) in `authorize_redirect`. That needs: both steps called, the
    cookie first, with a state_id equal to the `state` parameter's, and the settings read from
    `self.authenticator`."""
    from oauthenticator.oauth2 import _deserialize_state

    fake = _FakeLogin()
    OAuthLoginHandler.get(fake)  # type: ignore[arg-type]
    assert [name for name, _ in fake.calls] == ["set_state_cookie", "authorize_redirect"]
    cookie = _deserialize_state(fake.calls[0][1])
    kwargs = fake.calls[1][1]
    assert cookie["state_id"] and cookie["next_url"] == "/hub/spawn" and cookie["code_verifier"]
    assert _deserialize_state(kwargs["extra_params"]["state"]) == {"state_id": cookie["state_id"]}
    assert kwargs["extra_params"]["code_challenge_method"] == "S256"
    assert kwargs["extra_params"]["prompt"] == "login"
    assert kwargs["client_id"] == "client-1" and kwargs["scope"] == ["openid", "email"]
    assert kwargs["redirect_uri"] == "https://hub.example/hub/oauth_callback/sso"
    assert kwargs["response_type"] == "code"


def test_oauth_login_reads_authorize_url_from_authenticator():
    prop = OAuthLoginHandler.__dict__["_OAUTH_AUTHORIZE_URL"]
    assert isinstance(prop, property)

    class Holder:
        authenticator = type("A", (), {"authorize_url": "https://idp/authorize"})()

    assert prop.fget(Holder()) == "https://idp/authorize"


def test_tornado_authorize_redirect_takes_extra_params():
    params = inspect.signature(OAuth2Mixin.authorize_redirect).parameters
    assert "extra_params" in params and params["extra_params"].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


# -- oauthenticator: OAuthCallbackHandler.get's steps -------------------------------------

class _FakeCallback:
    get_state_cookie = OAuthCallbackHandler.get_state_cookie
    _state_cookie = None

    def __init__(self, user: Any) -> None:
        self.user = user
        self.calls: list[Any] = []
        self.authenticator = type("A", (), {"custom_403_message": "no"})()

    def get_secure_cookie(self, name: str) -> bytes:
        self.calls.append(("read cookie", name))
        return b"cookie-value"

    def clear_cookie(self, name: str) -> None:
        self.calls.append(("clear cookie", name))

    def check_arguments(self) -> None:
        self.calls.append("check_arguments")

    async def login_user(self, data: dict | None = None) -> Any:
        self.calls.append(("login_user", data))
        return self.user

    def get_next_url(self, user: Any) -> str:
        return "/hub/next"

    def redirect(self, url: str) -> None:
        self.calls.append(("redirect", url))


def test_oauth_callback_get_checks_then_logs_in_through_login_user():
    """OIDCCallbackHandler overrides `login_user(data)` to add the provider id, and lets
    upstream's `get()` do the rest."""
    fake = _FakeCallback(user=object())
    asyncio.run(OAuthCallbackHandler.get(fake))  # type: ignore[arg-type]
    assert fake.calls == ["check_arguments", ("login_user", None), ("redirect", "/hub/next")]
    refused = _FakeCallback(user=None)
    with pytest.raises(web.HTTPError) as err:
        asyncio.run(OAuthCallbackHandler.get(refused))  # type: ignore[arg-type]
    assert err.value.status_code == 403


def test_oauth_callback_state_cookie_is_read_once():
    """OIDCCallbackHandler checks the arguments before upstream's get() checks them again:
    the second check must see the same cookie (upstream caches it and clears it once)."""
    fake = _FakeCallback(user=None)
    assert fake.get_state_cookie() == fake.get_state_cookie() == "cookie-value"
    assert fake.calls == [("read cookie", "oauthenticator-state"),
                          ("clear cookie", "oauthenticator-state")]


# -- jupyterhub -----------------------------------------------------------------------------

def test_jupyterhub_handler_authenticator_is_an_overridable_property():
    """OIDCLoginHandler overrides `authenticator` (a property reading settings)."""
    prop = BaseHandler.__dict__["authenticator"]
    assert isinstance(prop, property)

    class Holder:
        settings = {"authenticator": "the-hub-authenticator"}

    assert prop.fget(Holder()) == "the-hub-authenticator"


def test_jupyterhub_login_user_takes_data():
    params = inspect.signature(BaseHandler.login_user).parameters
    assert list(params)[:2] == ["self", "data"]
    assert inspect.iscoroutinefunction(BaseHandler.login_user)


# -- ldapauthenticator ----------------------------------------------------------------------

def test_ldapauthenticator_version_and_tls_strategy():
    """LDAPBackend imports TlsStrategy from the submodule (the package does not export it)."""
    from ldapauthenticator.ldapauthenticator import TlsStrategy

    assert ldapauthenticator.version_info[0] == 2
    assert {s.name for s in TlsStrategy} == {"before_bind", "on_connect", "insecure"}


def test_ldapbackend_overrides_keep_upstream_signatures():
    """Upstream calls get_connection(userdn=..., password=...) by keyword and
    get_user_attributes(conn, userdn) positionally; our overrides must accept both."""
    from kdash_hub.authenticator.ldap_backend import LDAPBackend

    for name in ("get_connection", "get_user_attributes"):
        ours = list(inspect.signature(getattr(LDAPBackend, name)).parameters)
        theirs = list(inspect.signature(getattr(LDAPAuthenticator, name)).parameters)
        assert ours == theirs, name
    assert inspect.iscoroutinefunction(LDAPAuthenticator.authenticate)


class _Conn:
    def __init__(self, userdn: str) -> None:
        self.user = userdn
        self.entries: list = []

    def search(self, **kwargs: Any) -> bool:
        return False


class _RecordingLDAP(LDAPAuthenticator):
    """Upstream's authenticate with connections that need no server."""

    def __init__(self, good_dn: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.good_dn = good_dn
        self.events: list[tuple[str, Any]] = []

    def get_connection(self, userdn: str, password: str) -> Any:
        self.events.append(("get_connection", userdn))
        return _Conn(userdn) if userdn == self.good_dn else None

    def get_user_attributes(self, conn: Any, userdn: str) -> dict:
        self.events.append(("get_user_attributes", (conn.user, userdn)))
        return {"mail": ["x@example.org"]}


def test_ldap_authenticate_hands_the_users_own_bind_to_get_user_attributes():
    """LDAPBackend takes the user's DN and bound connection (for the group lookup) from
    upstream's call to get_user_attributes(conn, userdn), made once, after the bind that
    accepted the password, with that bind's connection."""
    good = "uid=bob,ou=b,dc=x"
    auth = _RecordingLDAP(good, server_address="127.0.0.1",
                          bind_dn_template=["uid={username},ou=a,dc=x",
                                            "uid={username},ou=b,dc=x"])
    result = asyncio.run(auth.authenticate(None, {"username": "bob", "password": "pw"}))
    assert result == {"name": "bob", "auth_state": {
        "ldap_groups": [], "user_attributes": {"mail": ["x@example.org"]}}}
    assert auth.events == [("get_connection", "uid=bob,ou=a,dc=x"),
                           ("get_connection", good),
                           ("get_user_attributes", (good, good))]
    auth.events.clear()
    assert asyncio.run(auth.authenticate(None, {"username": "eve", "password": "pw"})) is None
    assert [e for e, _ in auth.events] == ["get_connection", "get_connection"]
