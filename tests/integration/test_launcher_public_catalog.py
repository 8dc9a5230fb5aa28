"""The catalog's template that opts into a public URL (`website`), launched for real.

A real hub runs the launcher with public URLs on (the settings of
test_launcher_public_urls.py: cert-manager TLS, ingress-nginx forward-auth); the shipped
catalog is loaded as every launcher test loads it. The owner launches `website` from the
launcher's page in Chromium; its Ingress (emulator, or the real API server with
KDASH_REAL_TIER=1 and the launcher's own ServiceAccount) has the instance's host, TLS and
the forward-auth annotations; the auth endpoint lets only the owner through (asked directly,
as ingress-nginx's `auth-url` sub-request would; a real Traefik serves public URLs in
tests/realtier/test_public_url_traefik.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher import publicurl
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR
from kdash_hub.templating import Catalog, load_directories
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import PASSWORD, LauncherEnv, stop_launcher_env
from tests.integration.test_launcher_public_urls import DOMAIN, start_public_env, unique
from tests.integration.test_launcher_ui import CHROMIUM_ARGS
from tests.security.test_launcher_forwardauth import ask
from tests.security.test_launcher_headers import browser_login

OWNER, OTHER = "erin", "bob"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    env = start_public_env(tmp_path_factory.mktemp("public-catalog"))
    yield env
    stop_launcher_env(env)


@pytest.fixture
async def kube(env: LauncherEnv) -> AsyncIterator[KubeResources]:
    async with api_client_for(env.kubeconfig) as client:
        yield KubeResources(client)


def test_the_catalog_has_a_template_that_publishes():
    catalog = load_directories([Path(CATALOG_DIR)], Catalog())
    template = catalog.get("website")
    assert template is not None, catalog.errors
    services = [m.obj for m in template.manifests if m.kind == "Service"]
    assert [s["metadata"]["annotations"][publicurl.PUBLIC_ANNOTATION] for s in services] == [
        "http"]


async def _ingress(kube: KubeResources, name: str, namespace: str) -> dict:
    for _ in range(50):
        got = await kube.get("Ingress", publicurl.ingress_name(name), namespace)
        if got is not None:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"no Ingress for {name}")


@pytest.mark.browser
async def test_website_from_the_page_gets_an_owner_only_https_host(env, kube):
    name = unique("site")
    host = f"{name}--{OWNER}.{DOMAIN}"
    namespace = user_namespace(OWNER)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(env.url)
            await page.fill("input[name=username]", OWNER)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launcher")
            await page.click("#new")
            await page.wait_for_selector("#catalog")
            await page.click("#template-website")
            await page.fill("#name", name)
            await page.click("#launch")
            await page.wait_for_selector("#instance-name")
            assert f"/instances/{OWNER}/{name}" in page.url
            # the details page links the public URL
            assert await page.locator(f'a[href="https://{host}/"]').count() >= 1
        finally:
            await browser.close()

    ingress = await _ingress(kube, name, namespace)
    spec, meta = ingress["spec"], ingress["metadata"]
    assert spec["rules"] == [{"host": host, "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": name, "port": {"number": 8080}}}}]}}]
    assert spec["tls"] == [{"hosts": [host], "secretName": f"kdash-public-{name}-tls"}]
    assert spec["ingressClassName"] == "nginx"
    ann = meta["annotations"]
    assert ann["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ann["nginx.ingress.kubernetes.io/auth-url"] == (
        "http://kdash-launcher.jhub.svc:10101/services/kdash-launcher/forward-auth")
    assert ann["nginx.ingress.kubernetes.io/auth-signin"].startswith(
        env.url + "public-signin?rd=")
    assert ann["nginx.ingress.kubernetes.io/auth-response-headers"] == "X-Auth-User"
    # the signed record holds it with its UID (delete and expiry remove it)
    record = await kube.get("Secret", record_name(name), namespace)
    assert f'"kind":"Ingress","name":"kdash-public-{name}","uid":"{meta["uid"]}"' in (
        record["metadata"]["annotations"]["kdash-hub.io/instance-record"])

    # only the owner passes the auth endpoint
    owner, _ = await browser_login(env, OWNER)
    other, _ = await browser_login(env, OTHER)
    try:
        url = f"https://{host}/index.html"
        status, headers = await ask(env, owner, original=url)
        assert status == 200 and headers["X-Auth-User"] == OWNER
        status, headers = await ask(env, other, original=url)
        assert status == 403 and "X-Auth-User" not in headers
        status, headers = await ask(env, None, original=url)
        assert status == 401 and "X-Auth-User" not in headers
        assert headers["X-Auth-Signin"].startswith(env.url + "public-signin?rd=")
        # the other user's own hub API token does no better than their cookie
        status, _ = await ask(env, None, original=url, headers=env.headers(OTHER))
        assert status == 403
        status, headers = await ask(env, None, original=url, headers=env.headers(OWNER))
        assert status == 200 and headers["X-Auth-User"] == OWNER
    finally:
        await owner.close()
        await other.close()

    # delete: the Ingress goes with the instance, and the host lets nobody in any more
    status, _ = await env.call("DELETE", f"instances/{OWNER}/{name}", OWNER)
    assert status in (200, 204)
    for _ in range(100):
        if await kube.get("Ingress", publicurl.ingress_name(name), namespace) is None:
            break
        await asyncio.sleep(0.2)
    assert await kube.get("Ingress", publicurl.ingress_name(name), namespace) is None
    owner, _ = await browser_login(env, OWNER)
    try:
        status, _ = await ask(env, owner, original=f"https://{host}/")
        assert status == 403
    finally:
        await owner.close()
