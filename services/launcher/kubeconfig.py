"""Kubeconfig download: a hub user's kubectl access to their own namespace.

The kubeconfig holds the cluster's CA (never insecure-skip-tls-verify), the API server URL
the admin configured, and a short-lived token of the user's own ServiceAccount from the
TokenRequest API: a bound token, so deleting the account (or the namespace) ends it. The
namespace and account come from the pack's naming and settings, never from the request.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.kube import api_error_message

from .api import APIHandler
from .instances import LauncherError
from .settings import LauncherSettings

CLUSTER_NAME = "kdash-hub"


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


class KubeconfigHandler(APIHandler):
    """GET: a kubeconfig (YAML) for the caller's own namespace, with a fresh token."""

    async def get(self) -> None:
        settings = self.manager.settings
        if not self.is_user:
            raise LauncherError(403, "only hub users have a namespace (this token is a"
                                     " service's)")
        if not settings.kubeconfig_server_url:
            raise LauncherError(501, "kubeconfig download is off: the admin hasn't set the"
                                     " API server URL (LauncherSettings.kubeconfig_server_url)")
        api_client = self.manager.kube.api_client
        ca_pem = read_ca(settings, api_client)
        username = self.current_user["name"]
        namespace = settings.user_namespace(username)
        answer = await request_token(api_client, namespace, settings.user_service_account,
                                     settings.kubeconfig_token_seconds)
        status = answer.get("status") or {}
        token = status.get("token")
        if not token:
            raise LauncherError(502, "the API server answered the token request without a"
                                     " token")
        body = render(username, namespace, settings.kubeconfig_server_url, ca_pem, token)
        self.set_header("Content-Type", "application/yaml")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Disposition", 'attachment; filename="kubeconfig"')
        if status.get("expirationTimestamp"):
            self.set_header("X-Token-Expires", str(status["expirationTimestamp"]))
        self.finish(body)


def kubeconfig_routes(prefix: str) -> list[tuple[str, type]]:
    return [(prefix + "api/kubeconfig", KubeconfigHandler)]
