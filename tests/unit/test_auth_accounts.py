"""The account-binding rules (accounts.py) on their own, and the reverse direction: an LDAP
sign-in against an account a provider identity made (real slapd)."""

from __future__ import annotations

import pytest

from kdash_hub.authenticator import accounts
from kdash_hub.authenticator.accounts import Bindings, PendingClaims, decide
from kdash_hub.authenticator.errors import LoginRefused
from tests.fixtures.ldap import ldap_settings
from tests.fixtures.oidc import FakeHandler, FakeUser, make_authenticator


def describe(backend: str) -> str:
    return {"ldap": "your password"}.get(backend, backend.upper())


def run(bindings, backend, subject, ruled=None):
    return decide("alice", bindings, backend, subject, ruled_ldap_uid=ruled,
                  describe=describe, link_url="/hub/link-accounts")


def test_a_new_account_is_made_by_the_first_identity():
    d = run(Bindings(), "oidc:a", "s1")
    assert d.bindings.to_state() == {"identities": {"oidc:a": "s1"},
                                     "links": {"oidc:a": "created"}}
    assert d.new == ["oidc:a"]
    assert run(d.bindings, "oidc:a", "s1").new == []  # bound: signs in, nothing new


def test_another_backend_is_refused_with_the_way_to_sign_in_and_to_link():
    made = run(Bindings(), "ldap", "alice").bindings
    with pytest.raises(accounts.AccountRefused) as err:
        run(made, "oidc:a", "s1")
    message = err.value.message
    assert "belongs to an account that signs in with your password" in message
    assert "link OIDC:A to it" in message and "/hub/link-accounts" in message
    assert made.identities == {"ldap": "alice"}  # nothing bound by the attempt
    reverse = run(Bindings(), "oidc:a", "s1").bindings
    with pytest.raises(accounts.AccountRefused, match="signs in with OIDC:A"):
        run(reverse, "ldap", "alice")


def test_a_different_subject_of_a_bound_backend_is_refused():
    made = run(Bindings(), "oidc:a", "s1").bindings
    with pytest.raises(accounts.AccountRefused, match="different account at OIDC:A"):
        run(made, "oidc:a", "s2")
    ldap = run(Bindings(), "ldap", "alice").bindings
    with pytest.raises(accounts.AccountRefused, match="different directory account"):
        run(ldap, "ldap", "alice2")


def test_the_admins_rule_binds_only_to_its_directory_account():
    ruled = run(Bindings(), "oidc:a", "s1", ruled="alice").bindings
    assert ruled.links == {"ldap": "rule", "oidc:a": "rule"}
    assert run(ruled, "ldap", "alice").new == []  # the directory user signs in as well
    made = run(Bindings(), "ldap", "alice").bindings
    assert run(made, "oidc:a", "s1", ruled="alice").new == ["oidc:a"]
    with pytest.raises(accounts.AccountRefused):
        run(run(Bindings(), "ldap", "alice").bindings, "oidc:a", "s1", ruled="someone-else")
    with pytest.raises(accounts.AccountRefused):  # made by another provider: not the rule's
        run(run(Bindings(), "oidc:b", "x").bindings, "oidc:a", "s1", ruled="alice")


@pytest.mark.parametrize("state, kept", [
    (None, {}),
    ({}, {}),
    ({"identities": {"ldap": "alice", "oidc:a": "s"}, "backend": "oidc:a"}, {"ldap": "alice"}),
    ({"identities": {"oidc:a": "s", "oidc:b": "t"}, "backend": "oidc:b"}, {"oidc:b": "t"}),
    ({"identities": {"oidc:a": "s"}, "backend": "ldap"}, {"oidc:a": "s"}),
    ({"identities": {"ldap": "a", "oidc:a": "s"}, "links": {"ldap": "created"}},
     {"ldap": "a"}),  # an identity without a recorded link is not honoured
])
def test_state_written_by_0_1(state, kept):
    assert Bindings.from_state(state).identities == kept


def test_pending_claims_hold_a_name_for_one_identity():
    pending = PendingClaims(window=30)
    assert pending.claim("alice", "ldap", "alice")
    assert pending.claim("alice", "ldap", "alice")  # the same identity again
    assert not pending.claim("alice", "oidc:a", "s1")
    expired = PendingClaims(window=0)
    assert expired.claim("bob", "ldap", "bob") and expired.claim("bob", "oidc:a", "s")


async def test_ldap_sign_in_to_an_account_a_provider_made_is_refused(slapd):
    """The reverse of finding 6: the LDAP login of the same name is checked as well."""
    auth = make_authenticator(ldap=ldap_settings(slapd), oidc_providers={
        "idp": {"issuer": "https://sso.example.org", "client_id": "x",
                "display_name": "Example SSO", "trusted": True}})
    made = FakeUser("bob", {"identities": {"oidc:idp": "bob-at-sso"},
                            "links": {"oidc:idp": "created"}, "groups": ["admins"]})
    with pytest.raises(LoginRefused) as err:
        await auth.get_authenticated_user(FakeHandler(users={"bob": made}),
                                          {"username": "bob", "password": "bob-pw"})
    assert err.value.status_code == 403
    assert ("The username 'bob' belongs to an account that signs in with Example SSO. Sign "
            "in that way; or, if that account is yours, sign in that way and link username "
            "and password to it on the account-linking page (/hub/link-accounts)."
            ) == err.value.message
    # the owner, signed in with the provider, links the directory account: then it works
    identity = await auth.ldap.login("bob", "bob-pw")
    await auth.link_identity(made, "ldap", identity.uid, auth.ldap_username(identity),
                             auth.ldap_detail(identity))
    model = await auth.get_authenticated_user(FakeHandler(users={"bob": made}),
                                              {"username": "bob", "password": "bob-pw"})
    assert model["name"] == "bob" and model["auth_state"]["links"]["ldap"] == "user"


def test_auth_state_is_required_with_several_sign_in_methods():
    with pytest.raises(ValueError, match="enable_auth_state is False with more than one"):
        make_authenticator(
            ldap={"server_address": "127.0.0.1", "bind_dn_template": ["uid={username},dc=x"]},
            oidc_providers={"kc": {"issuer": "https://sso.example.org", "client_id": "x"}},
            enable_auth_state=False)
    single = make_authenticator(
        ldap={"server_address": "127.0.0.1", "bind_dn_template": ["uid={username},dc=x"]},
        enable_auth_state=False)
    assert single.ldap is not None


def test_trusted_providers_next_to_ldap_need_the_service_account():
    """Without it a provider user could take a directory user's name by being first."""
    ldap = {"server_address": "127.0.0.1", "bind_dn_template": ["uid={username},dc=x"]}
    with pytest.raises(ValueError, match="are trusted .*LDAPBackend.lookup_dn_search_user"):
        make_authenticator(ldap=ldap, oidc_providers={"kc": {
            "issuer": "https://sso.example.org", "client_id": "x", "trusted": True}})
    untrusted = make_authenticator(ldap=ldap, oidc_providers={"kc": {
        "issuer": "https://sso.example.org", "client_id": "x"}})
    assert untrusted.oidc["kc"].provider.trusted is False
