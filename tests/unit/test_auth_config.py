"""Configuration of KDashAuthenticator is validated at start-up, naming the setting."""

from __future__ import annotations

import pytest

from kdash_hub.authenticator.groups import profiles_and_quota
from kdash_hub.authenticator.usernames import UsernameRefused, UsernameRule
from tests.fixtures.oidc import make_authenticator

LDAP = {"server_address": "127.0.0.1", "bind_dn_template": ["uid={username},dc=x"]}


@pytest.mark.parametrize("providers, message", [
    ({"Bad Id": {"issuer": "https://a", "client_id": "x"}}, "provider ids"),
    ({"kc": {"client_id": "x"}}, "oidc_providers['kc']['issuer'] is required"),
    ({"kc": {"issuer": "https://a"}}, "['client_id'] is required"),
    ({"kc": {"issuer": "http://sso.example.org", "client_id": "x"}}, "must use https"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "scope": ["profile"]}},
     "must include 'openid'"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "trusted": "yes"}},
     "['trusted'] must be True or False"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "clientid": "y"}}, "unknown keys"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "ldap_link_claim": 1}},
     "['ldap_link_claim'] must be a string"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "ldap_link_claim": "uid",
             "ldap_link_attribute": "uid)(objectClass=*"}}, "must be an LDAP attribute name"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "ldap_link_attribute": "uid"}},
     "needs ['ldap_link_claim']"),
    ({"kc": {"issuer": "https://a", "client_id": "x", "ldap_link_claim": "preferred_username"}},
     "['ldap_link_claim'] needs LDAP with LDAPBackend.lookup_dn_search_user"),
])
def test_bad_provider_config_names_the_setting(providers, message):
    with pytest.raises(Exception) as err:
        make_authenticator(ldap=LDAP, providers=providers)
    assert "KDashAuthenticator.oidc_providers" in str(err.value)
    assert message in str(err.value)


def test_ldap_config_checked():
    with pytest.raises(ValueError, match="LDAPBackend.server_address"):
        make_authenticator(ldap={"bind_dn_template": ["uid={username},dc=x"]})
    with pytest.raises(ValueError, match="bind_dn_template or LDAPBackend.lookup_dn"):
        make_authenticator(ldap={"server_address": "127.0.0.1"})


def test_nobody_could_log_in():
    with pytest.raises(ValueError, match="enable_ldap is False and oidc_providers is empty"):
        make_authenticator()


def test_tls_verification_on_by_default():
    auth = make_authenticator(ldap=LDAP, providers={
        "kc": {"issuer": "https://sso.example.org", "client_id": "x"}})
    import ssl

    assert auth.ldap.tls_kwargs["validate"] == ssl.CERT_REQUIRED
    assert auth.ldap.tls_strategy.name == "before_bind"
    assert auth.oidc["kc"].validate_server_cert is True
    assert auth.oidc["kc"].enable_pkce is True
    assert auth.manage_groups and auth.enable_auth_state


def test_username_rule():
    rule = UsernameRule()
    assert rule.ldap_username(" Alice ") == "alice"
    assert rule.oidc_username("gh", "Alice", trusted=True) == "alice"
    assert rule.oidc_username("gh", "Alice", trusted=False) == "gh-alice"
    for bad in ("a" * 65, "1abc", "a b", "al\u0131ce", "a/b", "..", "-x"):
        with pytest.raises(UsernameRefused):
            rule.check(bad)


def test_username_hook_replaces_the_rule():
    auth = make_authenticator(ldap=LDAP, username_hook=lambda backend, ident: "x" + ident["uid"])
    assert auth._username("ldap", {"uid": "bob"}, "bob") == "xbob"


def test_profiles_and_quota_union_and_max():
    profiles, quota = profiles_and_quota(["a", "b", "c"], {
        "a": {"profiles": ["small"], "quota": {"cpu": 2}},
        "b": {"profiles": ["gpu", "small"], "quota": {"cpu": 8, "gpu": 1}},
    })
    assert profiles == ["gpu", "small"] and quota == {"cpu": 8, "gpu": 1}


def test_login_page_html_lists_form_and_buttons():
    auth = make_authenticator(ldap=LDAP, providers={
        "kc": {"issuer": "https://sso.example.org", "client_id": "x", "display_name": "SSO"}})
    from jinja2 import Template

    html = Template(auth.get_custom_html("/hub/")).render(
        authenticator=auth, xsrf="T0K", next="", login_url="/hub/login",
        login_error="<b>bad</b>", username="")
    assert 'name="_xsrf" value="T0K"' in html and 'name="password"' in html
    assert 'href="/hub/oauth_login/kc?next="' in html and "Sign in with SSO" in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html  # escaped


def test_ldapauthenticator_settings_apply_to_the_backend():
    from traitlets.config import Config

    from kdash_hub.authenticator import KDashAuthenticator

    c = Config()
    c.LDAPAuthenticator.server_address = "ldap.example.org"
    c.LDAPAuthenticator.bind_dn_template = ["uid={username},dc=x"]
    c.LDAPBackend.server_port = 1389
    auth = KDashAuthenticator(config=c)
    assert (auth.ldap.server_address, auth.ldap.server_port) == ("ldap.example.org", 1389)
    assert auth.get_handlers(None) == []  # no providers: no OAuth routes
