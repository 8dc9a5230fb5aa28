"""The kubeconfig page of the launcher in headless Chromium (emulator): namespace, server,
lifetime and expiry shown; Download saves a file whose token never appears in the page;
Renew (a POST form) makes a new current token; the navbar links the page; the page's token
goes with the user's ServiceAccount. Attacks on it: test_launcher_kubeconfig_attacks.py;
kubectl with the files: tests/realtier/test_kubeconfig_download.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher.kubeconfig import TOKEN_SECRET
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import PASSWORD, LauncherEnv, start_launcher_env, stop_launcher_env
from tests.fixtures.realcp import real_tier_enabled

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER = "https://k8s.example.test:6443"
TOKEN_SECONDS = 1800

pytestmark = pytest.mark.skipif(real_tier_enabled(), reason="the emulator's page tests (the"
                                " real tier: tests/realtier/test_kubeconfig_download.py)")


def self_signed_pem() -> bytes:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test-cluster-ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def kc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    """A launcher with the download on (the admin's server URL and CA file)."""
    workdir = tmp_path_factory.mktemp("kubeconfig-page")
    ca = workdir / "ca.pem"
    ca.write_bytes(self_signed_pem())
    extra = (f"\nc.LauncherSettings.kubeconfig_server_url = {SERVER!r}\n"
             f"c.LauncherSettings.kubeconfig_ca_file = {str(ca)!r}\n"
             f"c.LauncherSettings.kubeconfig_token_seconds = {TOKEN_SECONDS}\n")
    env = start_launcher_env(workdir, extra)
    yield env
    stop_launcher_env(env)


@pytest.fixture
async def kube(kc_env: LauncherEnv) -> AsyncIterator[KubeResources]:
    async with api_client_for(kc_env.kubeconfig) as client:
        yield KubeResources(client)


async def give_account(kube: KubeResources, user: str) -> dict:
    """What the spawner's bundle makes on a first start: the namespace and `kdash-user`."""
    ns = user_namespace(user, "kdash-")
    if await kube.get("Namespace", ns) is None:
        await kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    account = await kube.get("ServiceAccount", "kdash-user", ns)
    if account is None:
        account = await kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "kdash-user", "namespace": ns}})
    return account


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_of(kubeconfig_text: str) -> str:
    (user,) = yaml.safe_load(kubeconfig_text)["users"]
    return user["user"]["token"]


@pytest.mark.browser
async def test_the_page_shows_downloads_and_renews_without_the_token_in_it(
        kc_env: LauncherEnv, kube: KubeResources, tmp_path: Path):
    env = kc_env
    account = await give_account(kube, "erin")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(accept_downloads=True)
            page = await context.new_page()
            await page.goto(env.url)
            await page.fill("input[name=username]", "erin")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launcher")
            assert await page.locator("#kubeconfig-link").count() == 1  # from the home list
            await page.click("#nav-kubeconfig")  # and from the navbar
            await page.wait_for_selector("#kubeconfig-summary")
            assert page.url == env.url + "kubeconfig"
            assert await page.text_content("#namespace") == "kdash-erin"
            assert await page.text_content("#server") == SERVER
            assert await page.text_content("#lifetime") == "30m"
            assert await page.locator("#no-token").count() == 1
            assert "active" in (await page.get_attribute("#nav-kubeconfig", "class") or "")

            async with page.expect_download() as info:
                await page.click("#download")
            download = await info.value
            assert download.suggested_filename == "kubeconfig"
            saved = tmp_path / "erin.kubeconfig"
            await download.save_as(saved)
            text = saved.read_text()
            first = token_of(text)
            config = yaml.safe_load(text)
            assert config["clusters"][0]["cluster"]["server"] == SERVER
            assert "insecure-skip-tls-verify" not in text
            assert b"BEGIN CERTIFICATE" in base64.b64decode(
                config["clusters"][0]["cluster"]["certificate-authority-data"])
            assert config["contexts"][0]["context"]["namespace"] == "kdash-erin"
            first_claims = claims(first)
            assert first_claims["sub"] == "system:serviceaccount:kdash-erin:kdash-user"
            assert first_claims["exp"] - first_claims["iat"] == TOKEN_SECONDS
            assert (first_claims["kubernetes.io"]["serviceaccount"]["uid"]
                    == account["metadata"]["uid"])

            await page.reload()
            expires = await page.get_attribute("#expires", "datetime")
            assert expires is not None
            assert await page.locator("#no-token").count() == 0
            html = await page.content()
            assert first not in html and first.split(".")[1] not in html
            # the same current token is downloaded again until renewed
            async with page.expect_download() as info:
                await page.click("#download")
            again = await info.value
            await again.save_as(tmp_path / "again")
            assert token_of((tmp_path / "again").read_text()) == first

            await page.click("#renew")  # a POST form with the page's _xsrf
            await page.wait_for_selector("#message")
            assert "New token made" in await page.text_content("#message")
            assert page.url.startswith(env.url + "kubeconfig?message=")
            async with page.expect_download() as info:
                await page.click("#download")
            renewed = await info.value
            await renewed.save_as(tmp_path / "renewed")
            second = token_of((tmp_path / "renewed").read_text())
            assert second != first
            assert claims(second)["jti"] != first_claims["jti"]
            html = await page.content()
            for token in (first, second):
                assert token not in html and token.split(".")[1] not in html
            # nothing inline may run: the page is under the launcher's CSP
            response = await page.goto(env.url + "kubeconfig")
            assert response is not None
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["cache-control"] == "no-store"
        finally:
            await browser.close()


async def test_the_current_token_is_kept_for_its_owner_and_goes_with_the_account(
        kc_env: LauncherEnv, kube: KubeResources):
    env = kc_env
    account = await give_account(kube, "carol")
    status, text = await env.call("GET", "../kubeconfig/download", "carol")
    assert status == 200, text
    token = token_of(text)
    secret = await kube.get("Secret", TOKEN_SECRET, "kdash-carol")
    assert secret is not None
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "ServiceAccount" and owner["uid"] == account["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["token"]).decode() == token

    # the account is deleted (the user was): its stored token goes with it
    await kube.delete("ServiceAccount", "kdash-user", "kdash-carol")
    for _ in range(50):
        if await kube.get("Secret", TOKEN_SECRET, "kdash-carol") is None:
            break
        await asyncio.sleep(0.1)
    assert await kube.get("Secret", TOKEN_SECRET, "kdash-carol") is None
    status, body = await env.call("GET", "../kubeconfig/download", "carol")
    assert status == 409
    assert "start your server once" in body
    # the REST endpoint says the same, as JSON
    status, body = await env.call("GET", "kubeconfig", "carol")
    assert status == 409 and "start your server once" in body["message"]
