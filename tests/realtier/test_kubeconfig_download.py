"""Kubeconfig download, judged by the real kubectl against the real control plane.

The launcher runs with its own ServiceAccount token only; users' namespaces are made by the
spawner's code as the hub. A downloaded kubeconfig must work in its owner's namespace and
nowhere else, verify the API server's certificate, and die with the user's ServiceAccount.
The page's Renew makes a new token that works beside the old one; deleting the hub user
through the hub API (a hub with KDashSpawner, acting as the hub's ServiceAccount) ends what
their tokens can do, and leaves their namespace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from kdash_hub.dev.hub import HubProcess
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.kubeconfig import client_for, server_of
from kdash_hub.services.launcher.kubeconfig import TOKEN_SECRET
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import LauncherEnv, start_launcher_env, stop_launcher_env
from tests.fixtures.realcp import (
    HUB_NAMESPACE,
    RealTier,
    identity_kubeconfig,
    mint_token,
    real_tier_enabled,
)
from tests.fixtures.spawner import hub_config

pytestmark = pytest.mark.skipif(not real_tier_enabled(),
                                reason="real tier only (KDASH_REAL_TIER=1)")

TOKEN_SECONDS = 900


@pytest.fixture(scope="module")
def env(_real_tier_session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    """The launcher of tests/fixtures/launcher.py, with the download on (the real API
    server's URL from the admin kubeconfig; the CA the launcher's own client trusts)."""
    server = server_of(os.environ["KDASH_TEST_KUBECONFIG"])
    extra = (f"\nc.LauncherSettings.kubeconfig_server_url = {server!r}\n"
             f"c.LauncherSettings.kubeconfig_token_seconds = {TOKEN_SECONDS}\n")
    launcher = start_launcher_env(tmp_path_factory.mktemp("kubeconfig"), extra)
    yield launcher
    stop_launcher_env(launcher)


async def download(env: LauncherEnv, user: str,
                   token: str | None = None) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"token {token or env.tokens[user]}"}
    async with aiohttp.ClientSession() as session, session.get(
            env.api + "kubeconfig", headers=headers, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--request-timeout=20s",
                           *args], capture_output=True, text=True, timeout=60)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def save(env: LauncherEnv, user: str, path: Path) -> dict:
    status, headers, text = await download(env, user)
    assert status == 200, text
    assert headers["Content-Type"].startswith("application/yaml")
    assert headers["Cache-Control"] == "no-store"
    await asyncio.to_thread(path.write_text, text)
    return yaml.safe_load(text)


async def test_alices_kubeconfig_works_in_her_namespace_and_nowhere_else(
        env: LauncherEnv, tmp_path: Path):
    path = tmp_path / "alice.kubeconfig"
    config = await save(env, "alice", path)

    # the cluster's CA, verified; never skip-verify; her namespace as the context's
    assert "insecure-skip-tls-verify" not in path.read_text()
    (cluster,) = config["clusters"]
    assert cluster["cluster"]["server"] == server_of(os.environ["KDASH_TEST_KUBECONFIG"])
    assert b"BEGIN CERTIFICATE" in base64.b64decode(
        cluster["cluster"]["certificate-authority-data"])
    (context,) = config["contexts"]
    assert context["context"]["namespace"] == "kdash-alice"
    (user,) = config["users"]
    claims = jwt_claims(user["user"]["token"])
    assert claims["sub"] == "system:serviceaccount:kdash-alice:kdash-user"
    assert claims["exp"] - claims["iat"] == TOKEN_SECONDS  # the admin's lifetime

    who = kubectl(path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert who.returncode == 0, who.stderr
    assert who.stdout == "system:serviceaccount:kdash-alice:kdash-user"
    mine = kubectl(path, "get", "pods")
    assert mine.returncode == 0, mine.stderr
    can = kubectl(path, "auth", "can-i", "create", "deployments")
    assert can.stdout.strip() == "yes", can.stderr

    for args in (("get", "pods", "-n", "kdash-bob"),
                 ("get", "secrets", "-A"),
                 ("get", "nodes"),
                 ("get", "secrets", "-n", "kube-system"),
                 ("get", "pods", "-n", "kdash-hub"),
                 ("create", "rolebinding", "mine", "--clusterrole=admin",
                  "--serviceaccount=kdash-alice:kdash-user"),
                 ("create", "token", "kdash-user"),
                 ("create", "namespace", "alices-own")):
        result = kubectl(path, *args)
        assert result.returncode != 0, (args, result.stdout)
        assert "Forbidden" in result.stderr or "forbidden" in result.stderr, (args, result.stderr)
    cannot = kubectl(path, "auth", "can-i", "get", "pods", "-n", "kdash-bob")
    assert cannot.stdout.strip() == "no"

    # a kubeconfig that trusts another CA is refused by kubectl (verification is real)
    forged = yaml.safe_load(path.read_text())
    forged["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        _self_signed_pem()).decode()
    (tmp_path / "forged").write_text(yaml.safe_dump(forged))
    refused = kubectl(tmp_path / "forged", "get", "pods")
    assert refused.returncode != 0
    assert "certificate" in refused.stderr, refused.stderr


def _self_signed_pem() -> bytes:
    """A CA certificate that signed nothing of the cluster's."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "not-the-cluster")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


async def test_the_token_dies_with_the_users_service_account(env: LauncherEnv, tmp_path: Path):
    path = tmp_path / "carol.kubeconfig"
    await save(env, "carol", path)
    assert kubectl(path, "get", "pods").returncode == 0

    admin = client_for(os.environ["KDASH_TEST_KUBECONFIG"])
    try:
        await admin.request("DELETE", "/api/v1/namespaces/kdash-carol/serviceaccounts/kdash-user")
    finally:
        await admin.close()
    result = None
    for _ in range(50):  # the authenticator's account lookup may lag a moment
        result = kubectl(path, "get", "pods")
        if "Unauthorized" in result.stderr:
            break
        await asyncio.sleep(0.2)
    assert result is not None and result.returncode != 0
    assert "Unauthorized" in result.stderr, result.stderr

    # without her account, the download says what to do and mints nothing
    status, headers, text = await download(env, "carol")
    assert status == 409, text
    body = json.loads(text)
    assert "start your server once" in body["message"]
    assert "kdash-carol" in body["message"]


async def test_a_token_without_the_launcher_scope_gets_a_403(env: LauncherEnv):
    status, headers, text = await download(env, "bob", token=env.tokens["noscope"])
    assert status == 403
    assert headers["Content-Type"].startswith("application/json")
    assert "access:services!service=kdash-launcher" in json.loads(text)["message"]
    status, _, text = await download(env, "bob", token="not-a-token")
    assert status == 403 and "authentication required" in json.loads(text)["message"]


def test_the_cli_writes_the_users_kubeconfig(env: LauncherEnv, tmp_path: Path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kdash-hub"), "services", "--url", env.url,
         "--token", env.tokens["dave"], "kubeconfig"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "dave.kubeconfig"
    path.write_text(result.stdout)
    who = kubectl(path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert who.stdout == "system:serviceaccount:kdash-dave:kdash-user", who.stderr


async def page_request(env: LauncherEnv, user: str, method: str, path: str
                       ) -> tuple[int, dict[str, str], str]:
    """The kubeconfig page's own URLs (outside api/), with the user's hub token."""
    async with aiohttp.ClientSession() as session, session.request(
            method, env.url + path, headers=env.headers(user), allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


async def test_the_pages_renewed_token_works_beside_the_old_one(env: LauncherEnv,
                                                                 tmp_path: Path):
    status, headers, old_text = await page_request(env, "erin", "GET", "kubeconfig/download")
    assert status == 200, old_text
    assert headers["Content-Disposition"] == 'attachment; filename="kubeconfig"'
    old = tmp_path / "old.kubeconfig"
    old.write_text(old_text)
    assert kubectl(old, "get", "pods").returncode == 0

    status, headers, text = await page_request(env, "erin", "POST", "kubeconfig/renew")
    assert status == 303, text
    status, _, new_text = await page_request(env, "erin", "GET", "kubeconfig/download")
    assert status == 200
    new = tmp_path / "new.kubeconfig"
    new.write_text(new_text)
    old_token = yaml.safe_load(old_text)["users"][0]["user"]["token"]
    new_token = yaml.safe_load(new_text)["users"][0]["user"]["token"]
    assert new_token != old_token
    assert jwt_claims(new_token)["jti"] != jwt_claims(old_token)["jti"]

    # both work, inside her namespace only; the old one until its own expiry
    for path in (new, old):
        who = kubectl(path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        assert who.stdout == "system:serviceaccount:kdash-erin:kdash-user", who.stderr
        assert kubectl(path, "get", "pods").returncode == 0
        denied = kubectl(path, "get", "pods", "-n", "kdash-bob")
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    claims = jwt_claims(old_token)
    assert claims["exp"] - claims["iat"] == TOKEN_SECONDS
    # the REST endpoint's token is a third one, and works too
    status, _, rest_text = await download(env, "erin")
    assert status == 200
    (tmp_path / "rest.kubeconfig").write_text(rest_text)
    assert kubectl(tmp_path / "rest.kubeconfig", "get", "pods").returncode == 0

    # the page's current token is kept in a Secret the real garbage collector removes
    # with her ServiceAccount
    async with api_client_for(os.environ["KDASH_TEST_KUBECONFIG"]) as client:
        kube = KubeResources(client)
        secret = await kube.get("Secret", TOKEN_SECRET, "kdash-erin")
        account = await kube.get("ServiceAccount", "kdash-user", "kdash-erin")
        assert secret is not None and account is not None
        (owner,) = secret["metadata"]["ownerReferences"]
        assert owner["uid"] == account["metadata"]["uid"]
        await kube.delete("ServiceAccount", "kdash-user", "kdash-erin")
        for _ in range(150):
            if await kube.get("Secret", TOKEN_SECRET, "kdash-erin") is None:
                break
            await asyncio.sleep(0.2)
        assert await kube.get("Secret", TOKEN_SECRET, "kdash-erin") is None
    for path in (new, old):
        assert "Unauthorized" in (await eventually_unauthorized(path)).stderr


async def eventually_unauthorized(path: Path) -> subprocess.CompletedProcess:
    result = kubectl(path, "get", "pods")
    for _ in range(50):  # the authenticator's account lookup may lag a moment
        if "Unauthorized" in result.stderr:
            break
        await asyncio.sleep(0.2)
        result = kubectl(path, "get", "pods")
    return result


@pytest.fixture(scope="module")
def spawner_hub(_real_tier_session: RealTier, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[HubProcess]:
    """A hub with KDashSpawner on the real control plane, as the hub's ServiceAccount."""
    workdir = tmp_path_factory.mktemp("revoke-hub")
    hub = HubProcess(hub_config(start_timeout=120,
                                extra=f"c.KDashSpawner.hub_namespace = {HUB_NAMESPACE!r}\n"),
                     workdir / "hub",
                     env={"KUBECONFIG": str(_real_tier_session.identity("hub"))})
    try:
        asyncio.run(hub.start())
        yield hub
    finally:
        hub.stop_sync()


async def hub_api(hub: HubProcess, method: str, path: str, body: object = None
                  ) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.request(
            method, hub.api_url + path, json=body, headers=hub.auth_headers()) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def test_deleting_the_hub_user_ends_what_their_tokens_can_do(
        spawner_hub: HubProcess, _real_tier_session: RealTier, tmp_path: Path):
    hub, user, ns = spawner_hub, "yara", "kdash-yara"
    assert (await hub_api(hub, "POST", f"/users/{user}"))[0] == 201
    status, body = await hub_api(hub, "POST", f"/users/{user}/server", {"profile": "cpu-small"})
    assert status in (201, 202), body
    for _ in range(600):
        _, model = await hub_api(hub, "GET", f"/users/{user}")
        if ((model.get("servers") or {}).get("") or {}).get("ready"):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"{user}'s server not ready:\n{hub.log_tail(60)}")
    admin = _real_tier_session.admin_kubeconfig
    token = await mint_token(admin, ns, "kdash-user", TOKEN_SECONDS)  # what a download holds
    path = identity_kubeconfig(admin, tmp_path / "yara.kubeconfig", token, ns)
    assert kubectl(path, "get", "pods").returncode == 0
    async with api_client_for(admin) as client:
        claims_before = [c["metadata"]["name"] for c in await KubeResources(client).list(
            "PersistentVolumeClaim", ns)]

    assert (await hub_api(hub, "DELETE", f"/users/{user}/server"))[0] in (202, 204)
    for _ in range(300):
        _, model = await hub_api(hub, "GET", f"/users/{user}")
        if not model.get("servers"):
            break
        await asyncio.sleep(0.2)
    status, body = await hub_api(hub, "DELETE", f"/users/{user}")
    assert status == 204, body

    result = await eventually_unauthorized(path)
    assert result.returncode != 0 and "Unauthorized" in result.stderr, result.stderr
    async with api_client_for(admin) as client:
        kube = KubeResources(client)
        assert await kube.get("ServiceAccount", "kdash-user", ns) is None
        assert await kube.get("Namespace", ns) is not None  # her data stays
        assert [c["metadata"]["name"] for c in await kube.list(
            "PersistentVolumeClaim", ns)] == claims_before
