"""The pack as deployed by the chart with helm-values/, on a real cluster.

Runs only with KDASH_TEST_KUBECONFIG (helm-values/e2e/kind-e2e.sh sets it, see docs/e2e.md);
the deployed-hub tests also need KDASH_E2E_HUB_URL and KDASH_E2E_API_TOKEN.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import aiohttp
import pytest
import yaml

from kdash_hub.naming import user_namespace
from tests.fixtures.helm import HELM_VALUES

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("KDASH_TEST_KUBECONFIG"),
        reason="KDASH_TEST_KUBECONFIG is not set: the e2e tests need a real cluster "
        "(helm-values/e2e/kind-e2e.sh creates one with kind; see docs/e2e.md)",
    ),
]

NAMESPACE = os.environ.get("KDASH_E2E_NAMESPACE", "jhub")
HUB_URL = os.environ.get("KDASH_E2E_HUB_URL", "").rstrip("/")
API_TOKEN = os.environ.get("KDASH_E2E_API_TOKEN", "")
needs_hub = pytest.mark.skipif(
    not (HUB_URL and API_TOKEN),
    reason="KDASH_E2E_HUB_URL / KDASH_E2E_API_TOKEN are not set: no deployed hub to test",
)
HUB_SA = f"system:serviceaccount:{NAMESPACE}:hub"


def rbac_rules() -> list[dict]:
    docs = list(yaml.safe_load_all((HELM_VALUES / "rbac" / "hub.yaml").read_text()))
    return docs[0]["rules"]


@pytest.fixture
async def api_client():
    from kubernetes_asyncio import client, config

    await config.load_kube_config(config_file=os.environ["KDASH_TEST_KUBECONFIG"])
    async with client.ApiClient() as api:
        yield api


async def allowed(api, *, verb: str, group: str, resource: str, namespace: str | None,
                  name: str | None = None) -> bool:
    from kubernetes_asyncio import client

    attrs = {"verb": verb, "group": group, "resource": resource}
    if namespace:
        attrs["namespace"] = namespace
    if name:
        attrs["name"] = name
    review = {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": HUB_SA, "resourceAttributes": attrs},
    }
    result = await client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(result.status.allowed)


async def test_hub_service_account_may_do_what_the_pack_needs(api_client):
    namespace = user_namespace("e2e-rbac-probe")
    for rule in rbac_rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        ok = await allowed(api_client, verb=verb, group=group,
                                           resource=resource, namespace=namespace, name=name)
                        assert ok, f"hub may not {verb} {group}/{resource} in {namespace}"


async def test_hub_service_account_gets_nothing_more(api_client):
    for verb, group, resource in [
        ("delete", "", "nodes"), ("create", "rbac.authorization.k8s.io", "clusterroles"),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles"),
        ("create", "apps", "daemonsets"), ("impersonate", "", "users"),
    ]:
        assert not await allowed(api_client, verb=verb, group=group, resource=resource,
                                 namespace=None), f"hub may {verb} {group}/{resource}"


async def hub_api(session: aiohttp.ClientSession, method: str, path: str, **kw):
    headers = {"Authorization": f"token {API_TOKEN}"}
    async with session.request(method, f"{HUB_URL}/hub/api{path}", headers=headers, **kw) as r:
        body = await r.json(content_type=None) if r.content_length != 0 else None
        return r.status, body


@needs_hub
async def test_deployed_hub_runs_both_services():
    async with aiohttp.ClientSession() as session:
        status, services = await hub_api(session, "GET", "/services")
        assert status == 200, services
        assert {"kdash-launcher", "kdash-culler"} <= set(services)
        async with session.get(f"{HUB_URL}/services/kdash-launcher/", allow_redirects=False) as r:
            # not logged in: the launcher sends the browser to the hub's OAuth
            assert r.status in (302, 303), r.status
            assert "/hub/api/oauth2/authorize" in r.headers["Location"] or \
                "/hub/login" in r.headers["Location"]


@needs_hub
async def test_spawn_in_own_namespace_with_bundle(api_client):
    from kubernetes_asyncio import client

    username = f"e2e-{uuid.uuid4().hex[:6]}"
    namespace = user_namespace(username)
    async with aiohttp.ClientSession() as session:
        status, _ = await hub_api(session, "POST", f"/users/{username}")
        assert status == 201
        try:
            status, body = await hub_api(session, "POST", f"/users/{username}/server")
            assert status in (201, 202), body
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                _, user = await hub_api(session, "GET", f"/users/{username}")
                server = (user.get("servers") or {}).get("")
                if server and server.get("ready"):
                    break
                await asyncio.sleep(2)
            else:
                pytest.fail(f"{username}'s server did not become ready in 300 s")
            core = client.CoreV1Api(api_client)
            ns = await core.read_namespace(namespace)
            assert ns.metadata.labels.get("app.kubernetes.io/managed-by") == "kdash-hub"
            pods = await core.list_namespaced_pod(namespace)
            assert [p.status.phase for p in pods.items if p.status.phase == "Running"]
            assert (await core.list_namespaced_resource_quota(namespace)).items
            assert (await core.list_namespaced_limit_range(namespace)).items
            netpols = await client.NetworkingV1Api(api_client).list_namespaced_network_policy(
                namespace
            )
            assert netpols.items
            status, _ = await hub_api(session, "DELETE", f"/users/{username}/server")
            assert status in (202, 204)
        finally:
            await hub_api(session, "DELETE", f"/users/{username}/server")
            await hub_api(session, "DELETE", f"/users/{username}")
