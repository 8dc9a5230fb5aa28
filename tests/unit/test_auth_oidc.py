"""KDashAuthenticator's OIDC login against a real oidc-provider (in-process authenticator)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kdash_hub.authenticator import id_token
from kdash_hub.authenticator.errors import LoginRefused
from kdash_hub.dev.oidc import client
from kdash_hub.dev.ports import free_port
from tests.fixtures.ldap import ldap_settings
from tests.fixtures.oidc import (
    TEST_CALLBACK,
    FakeHandler,
    FakeUser,
    demo_users,
    make_authenticator,
    oidc_callback_handler,
    provider_settings,
)


def idp(provider, **extra) -> dict:
    return {"idp": provider_settings(provider, callback_url=TEST_CALLBACK, **extra)}


async def oidc_login(auth, login="alice", password="alice-idp", users=None, pid="idp"):
    handler = await oidc_callback_handler(auth.oidc[pid], login, password, users=users)
    return await auth.get_authenticated_user(handler, {"kdash_oidc_provider": pid}), handler


async def test_trusted_provider_maps_to_ldap_user_with_uid_gid(oidc_provider, slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd),
                              providers=idp(oidc_provider, trusted=True))
    model, _ = await oidc_login(auth)
    state = model["auth_state"]
    assert model["name"] == "alice"  # same hub user as the LDAP uid
    assert state["backend"] == "oidc:idp"
    assert (state["uid"], state["gid"]) == (2001, 2001)  # looked up in LDAP
    assert state["email"] == "alice@example.org"
    assert set(model["groups"]) == {"admins", "gpu-users"}
    detail = state["backends"]["oidc:idp"]
    assert detail["refresh_token"] and detail["sub"] == "alice"


async def test_untrusted_provider_gets_prefixed_names_and_groups(oidc_provider):
    auth = make_authenticator(providers=idp(oidc_provider), admin_groups={"admins"})
    model, _ = await oidc_login(auth)
    assert model["name"] == "idp-alice"
    assert model["groups"] == ["idp-admins", "idp-gpu-users"]
    assert model["admin"] is False  # an untrusted IdP cannot claim our admin group
    assert model["auth_state"]["uid"] is None


async def test_untrusted_provider_cannot_take_over_existing_account(oidc_provider):
    auth = make_authenticator(providers=idp(oidc_provider))
    owner = FakeUser("idp-alice", {"identities": {"ldap": "idp-alice"}})
    with pytest.raises(LoginRefused, match="not created through this provider"):
        await oidc_login(auth, users={"idp-alice": owner})
    bound = FakeUser("idp-alice", {"identities": {"oidc:idp": "someone-else"}})
    with pytest.raises(LoginRefused, match="different identity"):
        await oidc_login(auth, users={"idp-alice": bound})


async def test_replayed_code_is_refused(oidc_provider):
    auth = make_authenticator(providers=idp(oidc_provider))
    handler = await oidc_callback_handler(auth.oidc["idp"], "dave", "dave-idp")
    first = await auth.get_authenticated_user(handler, {"kdash_oidc_provider": "idp"})
    assert first["name"] == "idp-dave"
    with pytest.raises(LoginRefused, match="already used code") as err:
        await auth.get_authenticated_user(handler, {"kdash_oidc_provider": "idp"})
    assert err.value.status_code == 403


async def test_nonce_from_another_login_is_refused(oidc_provider):
    auth = make_authenticator(providers=idp(oidc_provider))
    handler = await oidc_callback_handler(auth.oidc["idp"], "dave", "dave-idp")
    handler.nonce_secret = b"another-hub-secret-of-32-bytes!!"
    with pytest.raises(LoginRefused, match="could not be verified") as err:
        await auth.get_authenticated_user(handler, {"kdash_oidc_provider": "idp"})
    assert "nonce mismatch" in err.value.log_message


async def test_token_for_another_audience_is_refused(oidc_provider):
    auth = make_authenticator(providers={
        "idp": provider_settings(oidc_provider, callback_url=TEST_CALLBACK),
        "other": provider_settings(oidc_provider, client_id="other", callback_url=TEST_CALLBACK),
    })
    handler = await oidc_callback_handler(auth.oidc["other"], "dave", "dave-idp")
    backend = auth.oidc["other"]
    params = backend.build_access_tokens_request_params(handler, None)
    token_info = await backend.get_token_info(handler, params)  # valid for "other"
    with pytest.raises(id_token.InvalidIdToken) as err:
        await auth.oidc["idp"].verify_id_token(token_info["id_token"], None)
    assert "another client" in err.value.log_message


def _signed(key, kid: str, **claims) -> str:
    now = int(time.time())
    body = {"iss": "https://idp.test", "aud": "hub", "sub": "x", "iat": now, "exp": now + 60,
            **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def keypair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}


def _check(token, jwks, **kw):
    found = id_token.key_for(token, jwks)
    if found is None:
        raise id_token.InvalidIdToken("no key")
    args = {"issuer": "https://idp.test", "client_id": "hub", "nonce": None, **kw}
    return id_token.verify(token, *found, **args)


def test_id_token_checks(keypair):
    key, jwks = keypair
    assert _check(_signed(key, "k1"), jwks)["sub"] == "x"
    now = int(time.time())
    cases = {
        "expired": _signed(key, "k1", exp=now - 1),
        "another client": _signed(key, "k1", aud="other"),
        "another issuer": _signed(key, "k1", iss="https://evil.test"),
        "nonce": _signed(key, "k1", nonce="abc"),
    }
    for reason, token in cases.items():
        with pytest.raises(id_token.InvalidIdToken) as err:
            _check(token, jwks, nonce="xyz" if reason == "nonce" else None)
        assert reason in err.value.log_message


def test_wrongly_signed_and_unsigned_id_tokens(keypair):
    _, jwks = keypair
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(id_token.InvalidIdToken, match="could not be verified") as err:
        _check(_signed(stranger, "k1"), jwks)
    assert "signature" in err.value.log_message
    assert id_token.key_for(_signed(stranger, "k9"), jwks) is None  # unknown kid
    for alg, k in (("none", None), ("HS256", "secret-secret-secret-secret-123")):
        token = jwt.encode({"sub": "x"}, k, algorithm=alg)
        with pytest.raises(id_token.InvalidIdToken) as err:
            id_token.key_for(token, jwks)
        assert "not allowed" in err.value.log_message


async def test_refresh_uses_refresh_token_and_sees_group_and_account_removal(
        oidc_provider_factory):
    provider = oidc_provider_factory(clients=[client("hub", [TEST_CALLBACK])])
    auth = make_authenticator(providers=idp(provider, trusted=True))
    model, _ = await oidc_login(auth)
    user = FakeUser("alice", model["auth_state"])
    users = demo_users()
    users["alice"]["claims"]["groups"] = ["gpu-users"]
    provider.set_users(users)
    refreshed = await auth.refresh_user(user)
    assert refreshed["groups"] == ["gpu-users"]
    assert refreshed["auth_state"]["backends"]["oidc:idp"]["refresh_token"]
    user.auth_state = refreshed["auth_state"]
    del users["alice"]
    provider.set_users(users)
    assert await auth.refresh_user(user) is False


async def test_refresh_keeps_auth_while_provider_is_down(oidc_provider_factory):
    provider = oidc_provider_factory(clients=[client("hub", [TEST_CALLBACK])])
    auth = make_authenticator(providers=idp(provider, trusted=True))
    model, _ = await oidc_login(auth)
    provider.stop()
    assert await auth.refresh_user(FakeUser("alice", model["auth_state"])) is True


async def test_provider_down_leaves_ldap_working(slapd):
    dead = f"http://127.0.0.1:{free_port()}"
    auth = make_authenticator(ldap=ldap_settings(slapd), providers={
        "idp": {"issuer": dead, "client_id": "hub", "display_name": "Down IdP"}})
    t0 = time.monotonic()
    with pytest.raises(LoginRefused) as err:
        await auth.oidc["idp"].ensure_endpoints()
    assert err.value.status_code == 503
    assert "Sign-in with Down IdP is unavailable" in err.value.message
    assert time.monotonic() - t0 < 6
    model = await auth.get_authenticated_user(FakeHandler(), {"username": "alice",
                                                              "password": "alice-pw"})
    assert model["name"] == "alice"


async def test_directory_down_leaves_oidc_working(oidc_provider, slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh),
                              providers=idp(oidc_provider, trusted=True))
    slapd_fresh.stop()
    with pytest.raises(LoginRefused) as err:
        await auth.get_authenticated_user(FakeHandler(), {"username": "alice",
                                                          "password": "alice-pw"})
    assert "or sign in with Test IdP" in err.value.message
    model, _ = await oidc_login(auth)
    assert model["name"] == "alice" and model["auth_state"]["uid"] is None


async def test_unusable_provider_usernames_are_refused_clearly(oidc_provider_factory):
    users = demo_users()
    users["j\u00fcrgen"] = {"password": "pw", "claims": {"preferred_username": "J\u00fcrgen"}}
    users["long"] = {"password": "pw", "claims": {"preferred_username": "l" * 200}}
    provider = oidc_provider_factory(clients=[client("hub", [TEST_CALLBACK])], users=users)
    auth = make_authenticator(providers=idp(provider, trusted=True))
    with pytest.raises(LoginRefused, match="may only contain"):
        await oidc_login(auth, "j\u00fcrgen", "pw")
    with pytest.raises(LoginRefused, match="at most 64"):
        await oidc_login(auth, "long", "pw")
