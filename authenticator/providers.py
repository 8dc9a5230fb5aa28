"""Validation of `KDashAuthenticator.oidc_providers`, with errors that name the setting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

SETTING = "KDashAuthenticator.oidc_providers"
PROVIDER_ID = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class ProviderSettings:
    """One OIDC provider as configured (see KDashAuthenticator.oidc_providers help)."""

    id: str
    issuer: str
    client_id: str
    client_secret: str = ""
    display_name: str = ""
    trusted: bool = False
    scope: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    callback_url: str = ""
    validate_server_cert: bool = True
    # the admin's rule binding this provider's identities to directory accounts (off: "")
    ldap_link_claim: str = ""
    ldap_link_attribute: str = ""
    # RP-initiated logout: end the provider's session too, if its discovery document
    # advertises an end_session_endpoint; where it sends the browser back ("": hub login page)
    end_session: bool = True
    post_logout_redirect_uri: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def backend_name(self) -> str:
        return f"oidc:{self.id}"


KNOWN = {"issuer", "client_id", "client_secret", "display_name", "trusted", "scope",
         "username_claim", "groups_claim", "callback_url", "validate_server_cert",
         "ldap_link_claim", "ldap_link_attribute", "end_session", "post_logout_redirect_uri",
         "extra"}
LDAP_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")


def parse_providers(raw: dict[str, Any]) -> list[ProviderSettings]:
    """Check the dict trait; raise ValueError saying which key of which provider is wrong."""
    providers = []
    for pid, cfg in raw.items():
        where = f"{SETTING}[{pid!r}]"
        if not isinstance(pid, str) or not PROVIDER_ID.match(pid):
            raise ValueError(f"{where}: provider ids are 1-32 characters a-z, 0-9 and '-', "
                             "starting with a letter (they appear in URLs and usernames)")
        if not isinstance(cfg, dict):
            raise ValueError(f"{where} must be a dict, not {type(cfg).__name__}")
        unknown = set(cfg) - KNOWN
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(KNOWN)}")
        for key in ("issuer", "client_id"):
            if not isinstance(cfg.get(key), str) or not cfg.get(key):
                raise ValueError(f"{where}[{key!r}] is required (a non-empty string)")
        issuer = urlparse(cfg["issuer"])
        if issuer.scheme not in ("https", "http") or not issuer.netloc:
            raise ValueError(f"{where}['issuer'] must be an https:// URL, got {cfg['issuer']!r}")
        if issuer.scheme == "http" and issuer.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"{where}['issuer'] must use https (http is allowed only for "
                             "loopback development providers)")
        scope = cfg.get("scope", ProviderSettings.scope)
        if isinstance(scope, str):
            scope = scope.split()
        if "openid" not in scope:
            raise ValueError(f"{where}['scope'] must include 'openid'")
        for key in ("trusted", "validate_server_cert", "end_session"):
            if key in cfg and not isinstance(cfg[key], bool):
                raise ValueError(f"{where}[{key!r}] must be True or False")
        for key in ("ldap_link_claim", "ldap_link_attribute"):
            if key in cfg and not isinstance(cfg[key], str):
                raise ValueError(f"{where}[{key!r}] must be a string")
        attribute = cfg.get("ldap_link_attribute", "")
        if attribute and not LDAP_ATTRIBUTE.match(attribute):
            raise ValueError(f"{where}['ldap_link_attribute'] must be an LDAP attribute name "
                             "such as 'uid', 'uidNumber' or 'mail'")
        if attribute and not cfg.get("ldap_link_claim"):
            raise ValueError(f"{where}['ldap_link_attribute'] needs ['ldap_link_claim'] (the "
                             "claim whose value the attribute must equal)")
        after_logout = cfg.get("post_logout_redirect_uri", "")
        if after_logout and not _absolute_url(after_logout):
            raise ValueError(f"{where}['post_logout_redirect_uri'] must be an absolute http(s) "
                             f"URL (the hub's login page, registered at the provider), got "
                             f"{after_logout!r}")
        providers.append(ProviderSettings(
            id=pid, issuer=cfg["issuer"], client_id=cfg["client_id"],
            client_secret=cfg.get("client_secret", ""),
            display_name=cfg.get("display_name") or pid,
            trusted=cfg.get("trusted", False), scope=tuple(scope),
            username_claim=cfg.get("username_claim", "preferred_username"),
            groups_claim=cfg.get("groups_claim", "groups"),
            callback_url=cfg.get("callback_url", ""),
            validate_server_cert=cfg.get("validate_server_cert", True),
            ldap_link_claim=cfg.get("ldap_link_claim", ""),
            ldap_link_attribute=attribute,
            end_session=cfg.get("end_session", True),
            post_logout_redirect_uri=after_logout,
            extra=dict(cfg.get("extra", {})),
        ))
    return providers


def _absolute_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    url = urlparse(value)
    return url.scheme in ("https", "http") and bool(url.netloc) and not url.fragment
