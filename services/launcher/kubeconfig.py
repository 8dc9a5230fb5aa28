"""Kubeconfig download: a hub user's kubectl access to their own namespace.

The kubeconfig holds the cluster's CA (never insecure-skip-tls-verify), the API server URL
the admin configured, and a short-lived token of the user's own ServiceAccount from the
TokenRequest API: a bound token, so deleting the account (or the namespace) ends it. The
namespace and account come from the pack's naming and settings, never from the request.
"""

from __future__ import annotations

import base64
import calendar
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.kube import api_error_message

from .api import APIHandler
from .instances import LauncherError
from .settings import LauncherSettings

CLUSTER_NAME = "kdash-hub"
TOKEN_SECRET = "kdash-kubeconfig"  # the page's current token, in the user's namespace
COMPONENT = "kubeconfig"
ISSUED = "kdash-hub.io/kubeconfig-issued"
EXPIRES = "kdash-hub.io/kubeconfig-expires"
MIN_SECONDS_LEFT = 60  # a stored token closer to its end than this is renewed instead


@dataclass(frozen=True)
class Minted:
    """A token and its times (RFC 3339, UTC); the token itself goes only into files."""

    token: str
    expires: str
    issued: str

    def seconds_left(self, now: float | None = None) -> float:
        try:
            end = calendar.timegm(time.strptime(self.expires, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return 0.0
        return end - (time.time() if now is None else now)


def read_ca(settings: LauncherSettings, api_client: k8s_client.ApiClient) -> bytes:
    """The CA PEM: the configured file, else the one the launcher's own client trusts."""
    path = settings.kubeconfig_ca_file or api_client.configuration.ssl_ca_cert or ""
    if not path:
        raise LauncherError(501, "kubeconfig download is not set up: no cluster CA (set"
                                 " LauncherSettings.kubeconfig_ca_file)")
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        raise LauncherError(500, f"can't read the cluster CA file {path}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise LauncherError(500, f"the cluster CA file {path} holds no PEM certificate")
    return pem


async def request_token(api_client: k8s_client.ApiClient, namespace: str, account: str,
                        seconds: int) -> dict[str, Any]:
    """A bound token of `namespace/account` from the TokenRequest API."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}}
    try:
        return await api_client.call_api(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", "POST",
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body, response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"], _return_http_data_only=True)
    except ApiException as e:
        if e.status == 404:
            raise LauncherError(409, f"you have no Kubernetes namespace yet ({namespace} or its"
                                     f" ServiceAccount {account} doesn't exist): start your"
                                     " server once, then download again") from None
        if e.status == 403:
            raise LauncherError(502, "the launcher may not mint tokens in your namespace (its"
                                     " role lacks create on serviceaccounts/token): tell an"
                                     " admin") from None
        raise LauncherError(502, f"the API server refused the token request:"
                                 f" {api_error_message(e)}") from None


def render(username: str, namespace: str, server: str, ca_pem: bytes, token: str) -> str:
    """The kubeconfig YAML: one cluster, one user, one context in the user's namespace."""
    user = f"{username}@{CLUSTER_NAME}"
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": CLUSTER_NAME, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {
            "cluster": CLUSTER_NAME, "user": user, "namespace": namespace}}],
        "current-context": user,
    }
    return yaml.safe_dump(config, sort_keys=False)


class TokenStore:
    """The page's current token: a Secret `kdash-kubeconfig` in the user's own namespace,
    owned by their ServiceAccount (garbage-collected with it). The page downloads this one
    token again until it expires or the user renews it; the REST endpoint mints anew."""

    def __init__(self, manager: Any):
        self.manager = manager

    @property
    def settings(self) -> LauncherSettings:
        return self.manager.settings

    def check_enabled(self) -> None:
        if not self.settings.kubeconfig_server_url:
            raise LauncherError(501, "kubeconfig download is off: the admin hasn't set the"
                                     " API server URL (LauncherSettings.kubeconfig_server_url)")

    async def mint(self, username: str) -> Minted:
        """A fresh token of the user's ServiceAccount (stored nowhere)."""
        self.check_enabled()
        namespace = self.settings.user_namespace(username)
        answer = await request_token(self.manager.kube.api_client, namespace,
                                     self.settings.user_service_account,
                                     self.settings.kubeconfig_token_seconds)
        status = answer.get("status") or {}
        token = status.get("token")
        if not token:
            raise LauncherError(502, "the API server answered the token request without a"
                                     " token")
        return Minted(token=token, expires=str(status.get("expirationTimestamp") or ""),
                      issued=_rfc3339(time.time()))

    async def current(self, username: str) -> Minted | None:
        """The stored token while it has more than a minute left, else None."""
        namespace = self.settings.user_namespace(username)
        try:
            secret = await self.manager.kube.get("Secret", TOKEN_SECRET, namespace)
        except ApiException as e:
            if e.status == 403:  # no namespace of the pack's yet: nothing stored
                return None
            raise LauncherError(502, f"can't read your current token: {api_error_message(e)}"
                                ) from None
        if secret is None or not L.is_owned_by(secret, username):
            return None
        meta = secret.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        try:
            token = base64.b64decode((secret.get("data") or {}).get("token", "")).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        minted = Minted(token=token, expires=annotations.get(EXPIRES, ""),
                        issued=annotations.get(ISSUED, ""))
        if not token or minted.seconds_left() < MIN_SECONDS_LEFT:
            return None
        return minted

    async def renew(self, username: str) -> Minted:
        """Mint a token and make it the current one (earlier tokens live until they expire)."""
        minted = await self.mint(username)
        namespace = self.settings.user_namespace(username)
        meta: dict[str, Any] = {
            "name": TOKEN_SECRET, "namespace": namespace,
            "labels": L.owner_labels(username, COMPONENT),
            "annotations": {**L.owner_annotations(username), ISSUED: minted.issued,
                            EXPIRES: minted.expires},
        }
        owner = _account_ref(minted.token, self.settings.user_service_account)
        if owner:
            meta["ownerReferences"] = [owner]
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
                  "data": {"token": base64.b64encode(minted.token.encode()).decode()}}
        kube = self.manager.kube
        try:
            try:
                await kube.create(secret)
            except ApiException as e:
                if e.status != 409:
                    raise
                await kube.patch("Secret", TOKEN_SECRET, namespace,
                                 {"metadata": {k: v for k, v in meta.items()
                                               if k not in ("name", "namespace")},
                                  "data": secret["data"]})
        except ApiException as e:
            raise LauncherError(502, f"a token was made but couldn't be kept for the page:"
                                     f" {api_error_message(e)}") from None
        return minted

    async def kubeconfig(self, username: str, minted: Minted) -> str:
        ca_pem = read_ca(self.settings, self.manager.kube.api_client)
        return render(username, self.settings.user_namespace(username),
                      self.settings.kubeconfig_server_url, ca_pem, minted.token)


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _account_ref(token: str, account: str) -> dict | None:
    """An ownerReference to the ServiceAccount the token is bound to, from the claims the
    API server wrote into it (only the uid is read, and only to link the Secret to it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        uid = claims["kubernetes.io"]["serviceaccount"]["uid"]
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return {"apiVersion": "v1", "kind": "ServiceAccount", "name": account, "uid": str(uid)}


def send_kubeconfig(handler: Any, body: str, expires: str) -> None:
    """The kubeconfig as a file to save, never cached."""
    handler.set_header("Content-Type", "application/yaml")
    handler.set_header("Cache-Control", "no-store")
    handler.set_header("Content-Disposition", 'attachment; filename="kubeconfig"')
    if expires:
        handler.set_header("X-Token-Expires", expires)
    handler.finish(body)


class KubeconfigHandler(APIHandler):
    """GET: a kubeconfig (YAML) for the caller's own namespace, with a fresh token."""

    async def get(self) -> None:
        if not self.is_user:
            raise LauncherError(403, "only hub users have a namespace (this token is a"
                                     " service's)")
        store = TokenStore(self.manager)
        store.check_enabled()
        read_ca(self.manager.settings, self.manager.kube.api_client)  # before minting
        username = self.current_user["name"]
        minted = await store.mint(username)
        send_kubeconfig(self, await store.kubeconfig(username, minted), minted.expires)


def kubeconfig_routes(prefix: str) -> list[tuple[str, type]]:
    return [(prefix + "api/kubeconfig", KubeconfigHandler)]
