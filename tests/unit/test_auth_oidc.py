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


async def test_trusted_provider_maps_to_ldap_user_only_under_the_admins_rule(oidc_provider,
                                                                            slapd):
    """The old `trusted` mapping (preferred_username == LDAP uid) needs the explicit rule."""
    auth = make_authenticator(ldap=ldap_settings(slapd), providers=idp(
        oidc_provider, trusted=True, ldap_link_claim="preferred_username"))
    model, _ = await oidc_login(auth)
    state = model["auth_state"]
    assert model["name"] == "alice"  # same hub user as the LDAP uid
    assert state["backend"] == "oidc:idp"
    assert (state["uid"], state["gid"]) == (2001, 2001)  # from the directory entry
    assert state["email"] == "alice@example.org"
    assert set(model["groups"]) == {"admins", "gpu-users"}
    assert state["identities"] == {"ldap": "alice", "oidc:idp": "alice"}
    assert state["links"] == {"ldap": "rule", "oidc:idp": "rule"}
    detail = state["backends"]["oidc:idp"]
    assert detail["refresh_token"] and detail["sub"] == "alice"


async def test_trusted_provider_without_rule_cannot_reach_a_directory_account(oidc_provider,
                                                                             slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd),
                              providers=idp(oidc_provider, trusted=True))
    # the directory user never signed in to the hub: the name is still theirs
    with pytest.raises(LoginRefused) as err:
        await oidc_login(auth)
    assert err.value.status_code == 403
    assert ("The username 'alice' belongs to an account that signs in with username and "
            "password") in err.value.message
    assert "link Test IdP to it on the account-linking page" in err.value.message
    # after alice's first LDAP sign-in the account is bound to her directory account
    ldap_model = await auth.get_authenticated_user(
        FakeHandler(), {"username": "alice", "password": "alice-pw"})
    alice = FakeUser("alice", ldap_model["auth_state"])
    with pytest.raises(LoginRefused, match="belongs to an account that signs in with"):
        await oidc_login(auth, users={"alice": alice})
    # an IdP user with no directory account of that name gets an account of their own
    model, _ = await oidc_login(auth, "dave", "dave-idp")
    assert model["name"] == "dave" and model["auth_state"]["uid"] is None
    assert model["auth_state"]["links"] == {"oidc:idp": "created"}


async def test_rule_on_another_claim_and_attribute(oidc_provider, slapd):
    """`email` claim == directory `mail`: the identity reaches that entry's account."""
    auth = make_authenticator(ldap=ldap_settings(slapd), providers=idp(
        oidc_provider, ldap_link_claim="email", ldap_link_attribute="mail"))
    model, _ = await oidc_login(auth)
    assert model["name"] == "alice"  # not idp-alice: the rule names the directory account
    assert model["auth_state"]["identities"]["ldap"] == "alice"
    # an identity whose claim matches no entry is an ordinary (prefixed) account
    model, _ = await oidc_login(auth, "dave", "dave-idp")
    assert model["name"] == "idp-dave" and "ldap" not in model["auth_state"]["identities"]


async def test_rule_does_not_reach_an_account_bound_to_another_directory_account(
        oidc_provider, slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd), providers=idp(
        oidc_provider, trusted=True, ldap_link_claim="preferred_username"))
    squatted = FakeUser("alice", {"identities": {"oidc:other": "x"},
                                  "links": {"oidc:other": "created"}})
    with pytest.raises(LoginRefused, match="belongs to an account that signs in with"):
        await oidc_login(auth, users={"alice": squatted})


async def test_untrusted_provider_cannot_take_over_existing_account(oidc_provider):
    auth = make_authenticator(providers=idp(oidc_provider))
    owner = FakeUser("idp-alice", {"identities": {"ldap": "idp-alice"},
                                   "links": {"ldap": "created"}})
    with pytest.raises(LoginRefused, match="belongs to an account that signs in with"):
        await oidc_login(auth, users={"idp-alice": owner})
    bound = FakeUser("idp-alice", {"identities": {"oidc:idp": "someone-else"},
                                   "links": {"oidc:idp": "created"}})
    with pytest.raises(LoginRefused, match="belongs to a different account at Test IdP"):
        await oidc_login(auth, users={"idp-alice": bound})


async def test_state_of_0_1_keeps_only_the_account_maker(oidc_provider, slapd):
    """0.1 bound provider identities silently; after the upgrade they must be linked."""
    auth = make_authenticator(ldap=ldap_settings(slapd),
                              providers=idp(oidc_provider, trusted=True))
    legacy = FakeUser("alice", {"backend": "oidc:idp",
                                "identities": {"ldap": "alice", "oidc:idp": "alice"}})
    with pytest.raises(LoginRefused, match="belongs to an account that signs in with"):
        await oidc_login(auth, users={"alice": legacy})
    model = await auth.get_authenticated_user(
        FakeHandler(users={"alice": legacy}), {"username": "alice", "password": "alice-pw"})
    assert model["auth_state"]["identities"] == {"ldap": "alice"}


async def test_linking_binds_the_identity_for_the_signed_in_user(oidc_provider, slapd):
    auth = make_authenticator(ldap=ldap_settings(slapd),
                              providers=idp(oidc_provider, trusted=True))
    ldap_model = await auth.get_authenticated_user(
        FakeHandler(), {"username": "alice", "password": "alice-pw"})
    alice = FakeUser("alice", ldap_model["auth_state"])
    backend = auth.oidc["idp"]
    handler = await oidc_callback_handler(backend, "alice", "alice-idp")
    token_info = await backend.get_token_info(
        handler, backend.build_access_tokens_request_params(handler, None))
    username, claims, detail, _ = await auth.oidc_identity(backend, token_info)
    assert await auth.link_identity(alice, "oidc:idp", claims["sub"], username, detail)
    assert alice.auth_state["links"] == {"ldap": "created", "oidc:idp": "user"}
    model, _ = await oidc_login(auth, users={"alice": alice})
    assert model["name"] == "alice" and model["auth_state"]["uid"] == 2001
    # only an identity mapping to the same username can be linked
    bob = FakeUser("bob", {"identities": {"ldap": "bob"}, "links": {"ldap": "created"}})
    with pytest.raises(LoginRefused, match="belongs to the hub user 'alice', not 'bob'"):
        await auth.link_identity(bob, "oidc:idp", claims["sub"], username, detail)
    # a second identity of the same provider cannot be added on top
    with pytest.raises(LoginRefused, match="already has a different Test IdP sign-in"):
        await auth.link_identity(alice, "oidc:idp", "other-sub", "alice", detail)


async def test_two_first_sign_ins_racing_for_one_name_cannot_both_claim_it(oidc_provider):
    auth = make_authenticator(providers={
        "idp": provider_settings(oidc_provider, trusted=True, callback_url=TEST_CALLBACK),
        "other": provider_settings(oidc_provider, client_id="other", trusted=True,
                                   callback_url=TEST_CALLBACK, display_name="Other")})
    first, _ = await oidc_login(auth, "dave", "dave-idp")  # not yet saved by the hub
    assert first["name"] == "dave"
    with pytest.raises(LoginRefused, match="being set up right now") as err:
        await oidc_login(auth, "dave", "dave-idp", pid="other")
    assert err.value.status_code == 409


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


@pytest.mark.parametrize("claims, reason", [
    ({"aud": ["hub", "other"]}, "several audiences without azp"),
    ({"aud": ["hub", "other"], "azp": "other"}, "azp is not this client"),
    ({"aud": ["other", "hub"], "azp": "evil"}, "azp is not this client"),
    ({"aud": "hub", "azp": "other"}, "azp is not this client"),
    ({"aud": ["hub"], "azp": "other"}, "azp is not this client"),
])
def test_azp_of_another_client_or_missing_for_several_audiences_is_refused(keypair, claims,
                                                                          reason):
    """Finding 9: a token minted for another client (which lists us as an extra audience)
    must not sign anybody in here."""
    key, jwks = keypair
    with pytest.raises(id_token.InvalidIdToken, match="could not be verified") as err:
        _check(_signed(key, "k1", **claims), jwks)
    assert reason in err.value.log_message


@pytest.mark.parametrize("claims", [
    {"aud": ["hub", "other"], "azp": "hub"}, {"aud": ["other", "hub"], "azp": "hub"},
    {"aud": "hub", "azp": "hub"}, {"aud": ["hub"]}, {"aud": "hub"},
])
def test_azp_naming_this_client_passes(keypair, claims):
    key, jwks = keypair
    assert _check(_signed(key, "k1", **claims), jwks)["sub"] == "x"


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


async def test_directory_down_leaves_oidc_working_for_bound_accounts(oidc_provider,
                                                                    slapd_fresh):
    auth = make_authenticator(ldap=ldap_settings(slapd_fresh),
                              providers=idp(oidc_provider, trusted=True))
    dave_model, _ = await oidc_login(auth, "dave", "dave-idp")
    dave = FakeUser("dave", dave_model["auth_state"])
    slapd_fresh.stop()
    with pytest.raises(LoginRefused) as err:
        await auth.get_authenticated_user(FakeHandler(), {"username": "alice",
                                                          "password": "alice-pw"})
    assert "or sign in with Test IdP" in err.value.message
    model, _ = await oidc_login(auth, "dave", "dave-idp", users={"dave": dave})
    assert model["name"] == "dave"
    # a NEW account can't be checked against the directory now: refused, not guessed
    with pytest.raises(LoginRefused) as err:
        await oidc_login(auth)
    assert err.value.status_code == 503
    assert "user directory is unavailable" in err.value.message


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
