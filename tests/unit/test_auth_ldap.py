"""KDashAuthenticator's LDAP form login against a real slapd (in-process authenticator)."""

from __future__ import annotations

import socket
import time

import pytest

from kdash_hub.authenticator.errors import LoginRefused
from tests.fixtures.ldap import ldap_settings
from tests.fixtures.oidc import FakeHandler, FakeUser, make_authenticator


def login(auth, username, password):
    return auth.get_authenticated_user(FakeHandler(), {"username": username,
                                                       "password": password})


def count_connections(auth, monkeypatch) -> list:
    calls: list = []
    original = auth.ldap.get_connection

    def counting(userdn, password):
        calls.append(userdn)
        return original(userdn, password)

    monkeypatch.setattr(auth.ldap, "get_connection", counting)
    return calls


async def test_login_gives_uid_gid_groups_and_email(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    model = await login(auth, "alice", "alice-pw")
    state = model["auth_state"]
    assert model["name"] == "alice"
    assert model["groups"] == ["admins", "gpu-users"]  # groupOfNames/member
    assert (state["backend"], state["uid"], state["gid"]) == ("ldap", 2001, 2001)
    assert state["email"] == "alice@example.org"
    assert state["display_name"] == "Alice Liddell"
    assert state["backends"]["ldap"]["dn"] == slapd.user_dn("alice")


async def test_posix_group_membership(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    model = await login(auth, "bob", "bob-pw")
    assert model["groups"] == ["datasci", "gpu-users"]  # posixGroup/memberUid + member


async def test_lookup_dn_search_then_bind(slapd):
    settings = ldap_settings(slapd, lookup_dn=True, bind_dn_template=[],
                             lookup_dn_user_dn_attribute="uid")
    auth = make_authenticator(ldap=settings)
    model = await login(auth, "carol", "carol-pw")
    assert model["name"] == "carol" and model["auth_state"]["uid"] == 2003


async def test_wrong_password_is_plain_failure(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    assert await login(auth, "alice", "wrong") is None
    assert await login(auth, "nobody", "x") is None


async def test_username_normalised_before_checks(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    assert (await login(auth, "  ALICE ", "alice-pw"))["name"] == "alice"
    # NFKC folds fullwidth letters to the same account
    assert (await login(auth, "\uff41lice", "alice-pw"))["name"] == "alice"


@pytest.mark.parametrize("username, reason", [
    ("*)(uid=*", "may only contain"),
    ("alice,ou=x", "may only contain"),
    ("alice)(|(uid=*", "may only contain"),
    ("\u00e5lice", "may only contain"),
    ("a" * 200, "at most 64"),
    ("", "Enter a username"),
])
async def test_bad_usernames_refused_before_any_bind(slapd, monkeypatch, username, reason):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    calls = count_connections(auth, monkeypatch)
    with pytest.raises(LoginRefused) as err:
        await login(auth, username, "alice-pw")
    assert err.value.status_code == 403 and reason in err.value.message
    assert calls == []


@pytest.mark.parametrize("password, reason", [
    ("", "Enter your password"), ("   ", "Enter your password"),
    ("x" * 5000, "too long"),
])
async def test_empty_or_huge_password_refused_before_any_bind(slapd, monkeypatch, password,
                                                              reason):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    calls = count_connections(auth, monkeypatch)
    with pytest.raises(LoginRefused) as err:
        await login(auth, "alice", password)
    assert reason in err.value.message
    assert calls == []


async def test_starttls_and_ldaps_with_certificate_validation(slapd_tls):
    for strategy in ("before_bind", "on_connect"):
        auth = make_authenticator(ldap=ldap_settings(slapd_tls, tls=strategy))
        assert (await login(auth, "bob", "bob-pw"))["name"] == "bob", strategy


async def test_untrusted_certificate_is_refused_by_default(slapd_tls):
    settings = ldap_settings(slapd_tls, tls="before_bind")
    del settings["tls_kwargs"]  # no CA configured: the self-signed chain must not pass
    auth = make_authenticator(ldap=settings)
    with pytest.raises(LoginRefused) as err:
        await login(auth, "bob", "bob-pw")
    assert err.value.status_code == 503 and "directory is unavailable" in err.value.message


async def test_directory_down_reported_quickly(slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh))
    slapd_fresh.stop()
    t0 = time.monotonic()
    with pytest.raises(LoginRefused) as err:
        await login(auth, "alice", "alice-pw")
    assert err.value.status_code == 503
    assert "directory is unavailable" in err.value.message
    assert time.monotonic() - t0 < 3


async def test_directory_not_answering_times_out(slapd):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts TCP, never answers LDAP
    try:
        settings = ldap_settings(slapd, server_port=silent.getsockname()[1], receive_timeout=1)
        auth = make_authenticator(ldap=settings, oidc_providers={})
        t0 = time.monotonic()
        with pytest.raises(LoginRefused) as err:
            await login(auth, "alice", "alice-pw")
        assert err.value.status_code == 503
        assert time.monotonic() - t0 < 4
    finally:
        silent.close()


async def test_admin_and_allowed_groups(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd), allow_all=False,
                              allowed_groups={"gpu-users"}, admin_groups={"admins"})
    alice = await login(auth, "alice", "alice-pw")
    bob = await login(auth, "bob", "bob-pw")
    assert alice["admin"] is True and bob["admin"] is False
    assert await login(auth, "carol", "carol-pw") is None  # not in an allowed group


async def test_group_profiles_and_quota(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd), group_profiles={
        "gpu-users": {"profiles": ["gpu"], "quota": {"gpu": 1, "cpu": 4}},
        "admins": {"profiles": ["large"], "quota": {"gpu": 4}},
    })
    state = (await login(auth, "alice", "alice-pw"))["auth_state"]
    assert state["profiles"] == ["gpu", "large"]
    assert state["quota"] == {"gpu": 4, "cpu": 4}


async def test_refresh_sees_removed_group_then_removed_user(slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh))
    model = await login(auth, "alice", "alice-pw")
    user = FakeUser("alice", model["auth_state"])
    same = await auth.refresh_user(user)
    assert same["groups"] == ["admins", "gpu-users"]
    slapd_fresh.remove_from_group("alice", "gpu-users")
    refreshed = await auth.refresh_user(user)
    assert refreshed["groups"] == ["admins"]
    assert refreshed["auth_state"]["groups"] == ["admins"]
    slapd_fresh.delete_user("alice")
    assert await auth.refresh_user(user) is False


async def test_refresh_drops_user_leaving_allowed_groups(slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh), allow_all=False,
                              allowed_groups={"gpu-users"})
    model = await login(auth, "bob", "bob-pw")
    user = FakeUser("bob", model["auth_state"])
    assert (await auth.refresh_user(user))["name"] == "bob"
    slapd_fresh.remove_from_group("bob", "gpu-users")
    assert await auth.refresh_user(user) is False


async def test_refresh_keeps_auth_while_directory_is_down(slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh))
    model = await login(auth, "alice", "alice-pw")
    slapd_fresh.stop()
    assert await auth.refresh_user(FakeUser("alice", model["auth_state"])) is True


async def test_refresh_of_user_without_auth_state_is_not_a_type_error(slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd))
    refreshed = await auth.refresh_user(FakeUser("bob", None))
    assert refreshed["name"] == "bob" and refreshed["auth_state"]["uid"] == 2002


async def test_refresh_without_service_account_keeps_auth(slapd):
    settings = ldap_settings(slapd)
    del settings["lookup_dn_search_user"], settings["lookup_dn_search_password"]
    auth = make_authenticator(ldap=settings)
    model = await login(auth, "alice", "alice-pw")
    assert model["groups"] == ["admins", "gpu-users"]  # the user's own bind reads groups
    assert await auth.refresh_user(FakeUser("alice", model["auth_state"])) is True


def record_connections(auth, monkeypatch) -> list:
    """Every connection the backend opens (to check they are all closed afterwards)."""
    opened: list = []
    original = auth.ldap.get_connection

    def recording(userdn, password):
        conn = original(userdn, password)
        if conn is not None:
            opened.append(conn)
        return conn

    monkeypatch.setattr(auth.ldap, "get_connection", recording)
    return opened


async def test_upstream_authenticate_that_really_awaits_still_works(slapd, monkeypatch):
    """Upstream's coroutine is awaited on an event loop, not stepped by hand: an upstream
    release whose authenticate awaits something keeps working."""
    import asyncio

    auth = make_authenticator(ldap=ldap_settings(slapd))
    upstream = auth.ldap.authenticate
    awaited: list = []

    async def awaiting(handler, data):
        await asyncio.sleep(0.01)
        awaited.append(data["username"])
        return await upstream(handler, data)

    monkeypatch.setattr(auth.ldap, "authenticate", awaiting)
    model = await login(auth, "alice", "alice-pw")
    assert awaited == ["alice"]
    assert model["groups"] == ["admins", "gpu-users"]
    assert model["auth_state"]["backends"]["ldap"]["dn"] == slapd.user_dn("alice")


async def test_dn_and_groups_come_from_the_users_own_bind(slapd, monkeypatch):
    """Several bind templates and the service-account lookup open several connections: the DN
    and groups are those of the bind that accepted the password, and every connection is
    closed afterwards."""
    settings = ldap_settings(slapd, lookup_dn=True, lookup_dn_user_dn_attribute="uid",
                             bind_dn_template=[f"uid={{username}},ou=nowhere,{slapd.base_dn}",
                                               f"uid={{username}},{slapd.people_dn}"])
    auth = make_authenticator(ldap=settings)
    opened = record_connections(auth, monkeypatch)
    model = await login(auth, "bob", "bob-pw")
    assert model["auth_state"]["backends"]["ldap"]["dn"] == slapd.user_dn("bob")
    assert model["groups"] == ["datasci", "gpu-users"]
    assert len(opened) == 2  # the service account's lookup, bob's own bind
    assert all(conn.closed for conn in opened)


async def test_connections_of_a_failed_login_are_closed(slapd, monkeypatch):
    auth = make_authenticator(ldap=ldap_settings(slapd, lookup_dn=True,
                                                 lookup_dn_user_dn_attribute="uid"))
    opened = record_connections(auth, monkeypatch)
    assert await login(auth, "alice", "wrong") is None
    assert opened and all(conn.closed for conn in opened)


async def test_ldap_backend_allowed_groups_are_enforced(slapd):
    """`c.LDAPBackend.allowed_groups` (upstream semantics: group DNs) lets in only their
    members; upstream checks it in its check_allowed, which the hub never calls on a backend."""
    settings = ldap_settings(slapd, allowed_groups=[f"cn=gpu-users,{slapd.groups_dn}"])
    auth = make_authenticator(ldap=settings)
    assert (await login(auth, "bob", "bob-pw"))["name"] == "bob"
    with pytest.raises(LoginRefused) as err:
        await login(auth, "carol", "carol-pw")
    assert err.value.status_code == 403 and "not a member" in err.value.message
    assert await login(auth, "carol", "wrong") is None  # wrong password: still plain failure


class FormHandler:
    """The hub's LoginHandler as authenticate sees it: form fields, no OAuth state cookie."""

    def __init__(self, args: dict) -> None:
        self.args = args

    def get_argument(self, name: str, default=None):
        return self.args.get(name, default)

    def find_user(self, name: str):
        return None


async def test_login_form_cannot_be_turned_into_an_oidc_login(slapd):
    """The form posts every field as login data: a forged `kdash_oidc_provider` field (with a
    `code`) is a clear 400, not an OIDC login attempt that fails with a 500."""
    auth = make_authenticator(ldap=ldap_settings(slapd), providers={
        "idp": {"issuer": "http://127.0.0.1:9/idp", "client_id": "hub"}})
    data = {"username": "alice", "password": "alice-pw", "kdash_oidc_provider": "idp",
            "code": "stolen-or-made-up"}
    with pytest.raises(LoginRefused) as err:
        await auth.get_authenticated_user(FormHandler(data), data)
    assert err.value.status_code == 400 and "through its button" in err.value.message
