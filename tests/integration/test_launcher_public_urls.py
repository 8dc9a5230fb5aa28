"""Public URLs: the Ingress of a published instance, made, listed and removed for real.

A real hub runs the launcher with `public_domain` set; a template publishes its Service
(`kdash-hub.io/public: http`). The Ingress objects go to the emulator (fast tier) or the
real API server (KDASH_REAL_TIER=1: the launcher acts with its own ServiceAccount, so its
RBAC and the admission policies in helm-values/rbac/ are what allow them). The
forward-auth endpoint is attacked directly in tests/security/test_launcher_forwardauth.py,
and through a real Traefik in tests/realtier/test_public_url_traefik.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher import publicurl
from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import LauncherSettings
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import (
    ECHO_TEMPLATE,
    LauncherEnv,
    _hub_api,
    provision_user_namespaces,
    start_launcher_env,
    stop_launcher_env,
)
from tests.security.test_launcher_headers import browser_login

DOMAIN = "apps.example.org"
PUBLIC_TEMPLATE = ECHO_TEMPLATE.replace("name: Echo\n", "name: Public Echo\nid: pub\n").replace(
    "kind: Service\nmetadata:\n  name: $NAME\n",
    "kind: Service\nmetadata:\n  name: $NAME\n  annotations: {kdash-hub.io/public: http}\n")
PUBLIC_CONFIG = textwrap.dedent(f"""
    c.LauncherSettings.public_domain = {DOMAIN!r}
    c.LauncherSettings.public_tls = "cert-manager"
    c.LauncherSettings.public_tls_issuer = "letsencrypt"
    c.LauncherSettings.public_ingress_class = "nginx"
    c.LauncherSettings.public_auth_url = (
        "http://kdash-launcher.jhub.svc:10101/services/kdash-launcher/forward-auth")
""")


def start_public_env(workdir: Path) -> LauncherEnv:
    """A hub + launcher with public URLs on, and the template `pub` that publishes."""
    assert "kdash-hub.io/public: http" in PUBLIC_TEMPLATE
    (workdir / "templates").mkdir(parents=True, exist_ok=True)
    (workdir / "templates" / "pub.yaml").write_text(PUBLIC_TEMPLATE)
    return start_launcher_env(workdir, PUBLIC_CONFIG)


async def add_user(env: LauncherEnv, name: str) -> None:
    """A hub user with a launcher token (and, in the real tier, a provisioned namespace)."""
    _hub_api(env, "POST", "/users", {"usernames": [name]})
    env.tokens[name] = _hub_api(env, "POST", f"/users/{quote(name)}/tokens",
                                {"scopes": [ACCESS_SCOPE], "note": "public urls"})["token"]
    if os.environ.get("KDASH_TEST_LAUNCHER_KUBECONFIG"):
        await provision_user_namespaces((name,))


@pytest.fixture(scope="module")
def public_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    env = start_public_env(tmp_path_factory.mktemp("public"))
    yield env
    stop_launcher_env(env)


@pytest.fixture
async def kube(public_env: LauncherEnv) -> AsyncIterator[KubeResources]:
    async with api_client_for(public_env.kubeconfig) as client:
        yield KubeResources(client)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"  # the real tier's cluster is shared


async def launch(env: LauncherEnv, user: str, name: str, template: str = "pub",
                 expect: int = 201) -> Any:
    status, body = await env.call("POST", "instances", user,
                                  json_body={"template": template, "name": name})
    assert status == expect, body
    return body


def test_host_labels_are_injective_and_fit():
    settings = LauncherSettings(public_domain=DOMAIN)
    assert publicurl.host_label("a-b", "c") == "a-b--c"
    assert publicurl.host_label("a", "b-c") == "a--b-c"
    pairs = [("a-b", "c"), ("a", "b-c"), ("a", "b--c"), ("a--b", "c"), ("db", "frank@lab.org"),
             ("db", "frank-lab-org"), ("x" * 40, "y" * 40), ("x" * 40, "y" * 41)]
    labels = [publicurl.host_label(i, u) for i, u in pairs]
    assert len(set(labels)) == len(pairs), labels
    assert all(len(label) <= 63 for label in labels)
    for (instance, owner), label in zip(pairs, labels, strict=True):
        assert publicurl.public_host(settings, instance, owner) == f"{label}.{DOMAIN}"
        # the readable form splits back to exactly its pair; a hashed one doesn't split
        assert publicurl.split_label(label) in ((instance, owner), None)


async def test_an_ingress_per_published_instance_listed_and_deleted(public_env, kube):
    env, name = public_env, unique("site")
    info = await launch(env, "alice", name)
    host = f"{name}--alice.{DOMAIN}"
    assert info["public_url"] == f"https://{host}/"
    namespace = user_namespace("alice")
    ingress = await kube.get("Ingress", publicurl.ingress_name(name), namespace)
    assert ingress is not None
    spec, meta = ingress["spec"], ingress["metadata"]
    assert spec["rules"][0]["host"] == host
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name, "port": {"number": 8080}}
    assert spec["tls"] == [{"hosts": [host], "secretName": f"kdash-public-{name}-tls"}]
    assert spec["ingressClassName"] == "nginx"
    ann = meta["annotations"]
    assert ann["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ann["nginx.ingress.kubernetes.io/auth-url"].endswith(
        "/services/kdash-launcher/forward-auth")
    assert ann["nginx.ingress.kubernetes.io/auth-signin"].startswith(
        env.hub.url + "/services/kdash-launcher/public-signin?rd=")
    assert ann["nginx.ingress.kubernetes.io/auth-response-headers"] == "X-Auth-User"
    assert meta["labels"]["kdash-hub.io/instance"] == name
    # the signed record lists it (UID included), so delete and expiry remove it
    record = await kube.get("Secret", record_name(name), namespace)
    assert f'"kind":"Ingress","name":"kdash-public-{name}","uid":"{meta["uid"]}"' in (
        record["metadata"]["annotations"]["kdash-hub.io/instance-record"])
    status, listed = await env.call("GET", "instances", "alice")
    assert status == 200
    assert [i["public_url"] for i in listed["instances"] if i["name"] == name] == [
        f"https://{host}/"]
    # the pages show it too (a link)
    session, _ = await browser_login(env, "alice")
    async with session:
        for page in ("", f"instances/alice/{name}"):
            async with session.get(env.url + page) as resp:
                assert resp.status == 200
                assert f'href="https://{host}/"' in await resp.text(), page
    # stop keeps the Ingress (the host stays the instance's), delete removes it
    status, _ = await env.call("POST", f"instances/alice/{name}/stop", "alice")
    assert status == 200
    assert await kube.get("Ingress", publicurl.ingress_name(name), namespace) is not None
    status, _ = await env.call("DELETE", f"instances/alice/{name}", "alice")
    assert status in (200, 204)
    for _ in range(100):
        if await kube.get("Ingress", publicurl.ingress_name(name), namespace) is None:
            break
        await asyncio.sleep(0.2)
    assert await kube.get("Ingress", publicurl.ingress_name(name), namespace) is None


async def test_a_template_that_publishes_nothing_gets_no_ingress(public_env, kube):
    env, name = public_env, unique("plain")
    info = await launch(env, "bob", name, template="echo")
    assert info["public_url"] is None
    assert await kube.get("Ingress", publicurl.ingress_name(name), user_namespace("bob")) is None
    await env.call("DELETE", f"instances/bob/{name}", "bob")


async def test_clashing_names_get_their_own_hosts(public_env, kube):
    env = public_env
    tail = secrets.token_hex(2)
    first, second = f"pc{tail}", f"b-pc{tail}"  # `a-b` + `c` and `a` + `b-c`
    for user in (first, second):
        await add_user(env, user)
    one = await launch(env, first, "a-b")
    two = await launch(env, second, "a")
    assert one["public_url"] == f"https://a-b--{first}.{DOMAIN}/"
    assert two["public_url"] == f"https://a--{second}.{DOMAIN}/"
    hosts = set()
    for user, name in ((first, "a-b"), (second, "a")):
        ingress = await kube.get("Ingress", publicurl.ingress_name(name), user_namespace(user))
        hosts.add(ingress["spec"]["rules"][0]["host"])
    assert len(hosts) == 2
    for user, name in ((first, "a-b"), (second, "a")):
        await env.call("DELETE", f"instances/{user}/{name}", user)


async def test_a_name_whose_host_would_be_punycode_is_refused(public_env, kube):
    env = public_env
    body = await launch(env, "carol", "xn", expect=400)
    assert "xn--" in body["message"] and "choose another name" in body["message"]
    assert await kube.get("Secret", record_name("xn"), user_namespace("carol")) is None
    assert await kube.get("Ingress", publicurl.ingress_name("xn"),
                          user_namespace("carol")) is None


async def test_a_hashed_host_for_a_name_that_is_not_a_label(public_env, kube):
    env, name = public_env, unique("site")
    info = await launch(env, "frank@lab.org", name)
    label = publicurl.host_label(name, "frank@lab.org")
    assert "---" in label and len(label) <= 63
    assert info["public_url"] == f"https://{label}.{DOMAIN}/"
    await env.call("DELETE", f"instances/{quote('frank@lab.org')}/{name}", "frank@lab.org")


def test_traefik_and_a_wildcard_certificate():
    from kdash_hub.templating import Template

    settings = LauncherSettings(
        public_domain=DOMAIN + ".", public_forward_auth="traefik",
        public_traefik_middleware="jhub-kdash-forward-auth@kubernetescrd",
        public_tls="wildcard-secret", public_tls_secret="apps-wildcard")
    assert settings.public_domain == DOMAIN  # the trailing dot of a FQDN is dropped
    template = Template(id="pub", name="Pub", description="", source="t", variables=[],
                        manifests=[])
    service = {"kind": "Service", "metadata": {
        "name": "web", "namespace": "kdash-alice",
        "annotations": {publicurl.PUBLIC_ANNOTATION: "8080"}},
        "spec": {"ports": [{"name": "http", "port": 8080}]}}
    [ingress] = publicurl.ingress_objects(settings, template, "alice", "web", [service])
    ann = ingress["metadata"]["annotations"]
    assert ann["traefik.ingress.kubernetes.io/router.middlewares"] == (
        "jhub-kdash-forward-auth@kubernetescrd")
    assert not any(k.startswith("nginx.") or k.startswith("cert-manager") for k in ann)
    assert ingress["spec"]["tls"] == [{"hosts": [f"web--alice.{DOMAIN}"],
                                       "secretName": "apps-wildcard"}]
    assert "ingressClassName" not in ingress["spec"]
    # a port the Service doesn't have is the template's error, said as such
    service["metadata"]["annotations"][publicurl.PUBLIC_ANNOTATION] = "web"
    with pytest.raises(ValueError, match="publishes port 'web'"):
        publicurl.ingress_objects(settings, template, "alice", "web", [service])
    # no public_domain: nothing, whatever the template says
    assert publicurl.ingress_objects(LauncherSettings(), template, "alice", "web",
                                     [service]) == []
    for bad in ("-x.org", "a..org", "x" * 64 + ".org"):
        with pytest.raises(Exception, match="public_domain"):
            LauncherSettings(public_domain=bad)
