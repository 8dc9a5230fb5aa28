"""refresh_user per backend, so group and account changes take effect at the next refresh.

LDAP: the service account re-reads the account and its groups (gone -> login again).
OIDC: the stored refresh token is exchanged (refused -> login again) and the new id_token
and userinfo give the current groups. Both go through the account-binding check again, with
the account's current auth_state (so the bindings are kept, and still hold). A backend that
is *down* keeps the current auth: an outage must not log everybody out. Nothing here can
raise TypeError for an LDAP user (the inherited OAuthenticator.refresh_user did). A user who
is no longer allowed, or whose directory account is gone, also loses their Kubernetes
ServiceAccount (approval.py `revoke_cluster_access`): their tokens end with the login.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .discovery import ProviderUnavailable
from .errors import LoginRefused
from .ldap_backend import DirectoryUnavailable

if TYPE_CHECKING:
    from .base import KDashAuthenticator


async def refresh_user(auth: KDashAuthenticator, user: Any, handler: Any) -> bool | dict:
    if not auth.enable_auth_state:
        return True
    state = await user.get_auth_state() or {}
    backend = state.get("backend") or ("ldap" if auth.ldap else "")
    if backend == "ldap":
        model = await _refresh_ldap(auth, user.name, state, handler)
        if model is None:  # the directory says the account is gone: disabled
            await auth.revoke_cluster_access(user)
            return False
    elif backend.startswith("oidc:"):
        model = await _refresh_oidc(auth, user.name, backend.split(":", 1)[1], state, handler)
    else:
        auth.log.info("No known backend for %s (%r); login required", user.name, backend)
        return False
    if isinstance(model, dict) and not auth.check_allowed(user.name, model):
        auth.log.info("%s is no longer allowed (groups %s); login required",
                      user.name, model.get("groups"))
        await auth.revoke_cluster_access(user)  # blocked: their Kubernetes tokens end too
        return False
    return model


async def _refresh_ldap(auth: KDashAuthenticator, name: str, state: dict,
                        handler: Any) -> bool | dict | None:
    """The refreshed model; True to keep the current auth; False to log in again; None when
    the account is gone from the directory."""
    if auth.ldap is None:
        return False
    if not auth.ldap.can_lookup:
        return True  # nothing to check with (warned at start-up)
    uid = (state.get("backends", {}).get("ldap") or {}).get("uid") or name
    try:
        identity = await auth.ldap.lookup(uid)
    except DirectoryUnavailable as e:
        auth.log.warning("Keeping auth of %s: directory unavailable (%s)", name, e)
        return True
    if identity is None:
        auth.log.info("LDAP account of %s is gone; login required", name)
        return None
    try:
        model = await auth.ldap_model(handler, identity, state=state)
    except LoginRefused as e:
        auth.log.info("Refresh of %s refused (%s); login required", name, e)
        return False
    return model if model["name"] == name else False


async def _refresh_oidc(auth: KDashAuthenticator, name: str, provider: str, state: dict,
                        handler: Any) -> bool | dict:
    backend = auth.oidc.get(provider)
    detail = (state.get("backends") or {}).get(f"oidc:{provider}") or {}
    refresh_token = detail.get("refresh_token")
    if backend is None or not refresh_token:
        return False
    params = backend.build_refresh_token_request_params(refresh_token)
    try:
        token_info = await backend.get_token_info(None, params)
        model = await auth.oidc_model(handler, backend, token_info, previous=detail,
                                      state=state)
    except (ProviderUnavailable, DirectoryUnavailable) as e:
        auth.log.warning("Keeping auth of %s: %s unavailable (%s)", name, provider, e)
        return True
    except LoginRefused as e:
        auth.log.info("Refresh of %s at %s refused (%s); login required", name, provider, e)
        return False
    return model if model["name"] == name else False
