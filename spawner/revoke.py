"""Ending what a user's tokens can do: delete their ServiceAccount.

Tokens from the TokenRequest API (kubeconfig downloads) are bound to the account's UID, so
they stop working the moment it is gone. Called when the hub user is deleted
(`KDashSpawner.delete_forever`) and when onboarding approval rejects them. Only the account
goes: the namespace, its volumes and everything else stay (user data is never deleted here).
The bundle's completion mark goes too, so the next approved start makes the account again
whatever `bundle_drift_check` says.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources, api_error_message

from . import bundle


async def revoke_service_account(kube: KubeResources, namespace: str, account: str,
                                 username: str, log: Any) -> bool:
    """Delete `namespace/account` if the namespace is the pack's namespace of `username`.
    True when an account was deleted; False when there was none (or nothing of ours)."""
    ns = await kube.get("Namespace", namespace)
    if ns is None:
        return False
    labels = (ns.get("metadata") or {}).get("labels") or {}
    if not L.is_owned_by(ns, username) or labels.get(L.COMPONENT) != bundle.COMPONENT:
        log.warning("Not revoking %s/%s: %s is not kdash-hub's namespace of %s", namespace,
                    account, namespace, username)
        return False
    try:
        deleted = await kube.delete("ServiceAccount", account, namespace)
    except ApiException as e:
        log.error("Could not delete ServiceAccount %s/%s of %s (its tokens still work until"
                  " they expire): %s", namespace, account, username, api_error_message(e))
        raise
    annotations = (ns.get("metadata") or {}).get("annotations") or {}
    if bundle.BUNDLE_HASH_ANNOTATION in annotations:
        await kube.patch("Namespace", namespace, None, {"metadata": {"annotations": {
            bundle.BUNDLE_HASH_ANNOTATION: None}}})
    if deleted:
        log.info("Deleted ServiceAccount %s/%s of %s: its tokens no longer work",
                 namespace, account, username)
    return deleted
