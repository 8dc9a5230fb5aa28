"""Public URLs through a real ingress controller: Traefik against the real control plane.

One Traefik v3.6.12 (`tools/traefik`, kdash_hub.dev.traefik) runs on 127.0.0.1 for the
module, with a ServiceAccount of its own whose ClusterRole holds only what its providers
read (`TRAEFIK_RULES`; its log must show no 403), verifying the API server with the cluster
CA. Two real hubs run the launcher (its own ServiceAccount token), one per forward-auth
flavour, with public URLs on, TLS from a wildcard Secret made here (a CA of the test's own,
which the client verifies) and the forward-auth URL as Traefik reaches it (the hub's proxy):

- `public_forward_auth = "traefik"`: Traefik's own Ingress provider with the launcher's
  `router.middlewares` annotation naming a ForwardAuth Middleware (Traefik's CRDs, installed
  here from the pinned module, read by its kubernetescrd provider): the working set-up;
- `public_forward_auth = "nginx"`: Traefik's ingress-nginx provider reading the launcher's
  `auth-url` annotations. Traefik passes the browser's X-Original-URL on to the endpoint
  (ingress-nginx sets it itself): before forwardauth.py refused Traefik's calls in this
  flavour, a user got into another user's instance by naming their own host there.

A template (`page`) publishes a pod that runs as a real process in its own network
namespace (the kubelet's process mode) and answers with its instance's message and the
headers that reached it, so a 200 through Traefik is the instance's own content.
The owner is trent, the other user olivia (users of this file alone: see OWNER).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import ssl
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from kdash_hub.dev.traefik import Traefik, crd_definitions, ensure_binary
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.apiclient import ApiError
from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.localcluster.real.apply import apply_objects
from kdash_hub.localcluster.real.pki import ClusterPKI
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher import publicurl
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import (
    LauncherEnv,
    ready_pod,
    start_launcher_env,
    stop_launcher_env,
)
from tests.fixtures.polling import eventually
from tests.fixtures.realcp import RealTier, identity_kubeconfig, mint_token, real_tier_enabled
from tests.security.test_launcher_headers import browser_login

pytestmark = [
    pytest.mark.skipif(not real_tier_enabled(), reason="real tier only (KDASH_REAL_TIER=1)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="pod network namespaces need root"),
]

DOMAIN = "apps.example.org"
# users no other file launches for: the real tier's workers share one control plane, and
# tests/security's launches for victor on another worker once filled victor's 6 instances
OWNER, OTHER = "trent", "olivia"
TLS_SECRET = "apps-wildcard"
NGINX_CLASS, NGINX_CONTROLLER = "kdash-test-nginx", "kdash-hub.io/test-traefik-nginx"
TRAEFIK_CLASS, TRAEFIK_CONTROLLER = "kdash-test-traefik", "traefik.io/ingress-controller"
TRAEFIK_NS, TRAEFIK_SA = "kdash-traefik", "traefik"
MIDDLEWARE = "kdash-forward-auth"
TRAEFIK_MIDDLEWARE_REF = f"{TRAEFIK_NS}-{MIDDLEWARE}@kubernetescrd"
LABELS = {"app.kubernetes.io/part-of": "kdash-test-traefik"}
# what Traefik's three Kubernetes providers read (their informers), and nothing else: no
# writes (ingresses/status only with publishService/ingressEndpoint, which aren't set)
TRAEFIK_RULES = [
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"],
     "verbs": ["get", "list", "watch"]},
    # kubernetesingress watches nodes (NodePortLB services) unless told to read no
    # cluster-scoped object at all, which also turns off its IngressClasses
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["traefik.io"], "verbs": ["get", "list", "watch"], "resources": [
        "middlewares", "middlewaretcps", "ingressroutes", "ingressroutetcps",
        "ingressrouteudps", "tlsoptions", "tlsstores", "serverstransports",
        "serverstransporttcps", "traefikservices"]},
]
PAGE_SCRIPT = textwrap.dedent("""\
    import json, os
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"message": os.environ["MESSAGE"], "path": self.path,
                               "headers": dict(self.headers)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    HTTPServer((os.environ["POD_IP"], 8080), Page).serve_forever()
    """)
PAGE_TEMPLATE = textwrap.dedent("""\
    kind: Template
    name: Public page
    id: page
    description: A pod answering with its message, published at a public URL.
    ttl: 1h
    expiry: delete
    variables:
    - {name: NAME, default: page}
    - {name: MESSAGE, default: hello}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: $NAME}
    spec:
      replicas: 1
      selector:
        matchLabels: {app: $NAME}
      template:
        metadata:
          labels: {app: $NAME}
          annotations: {localcluster.kdash-hub.io/run-as-process: "true"}
        spec:
          securityContext:
            runAsNonRoot: true
            runAsUser: 1000
            runAsGroup: 100
            seccompProfile: {type: RuntimeDefault}
          containers:
          - name: web
            image: example.org/page:1
            command: [python, -c, SCRIPT]
            env:
            - {name: MESSAGE, value: $MESSAGE}
            - name: POD_IP
              valueFrom: {fieldRef: {fieldPath: status.podIP}}
            ports:
            - {name: http, containerPort: 8080}
            readinessProbe:
              tcpSocket: {port: http}
              periodSeconds: 1
            securityContext:
              allowPrivilegeEscalation: false
              capabilities: {drop: [ALL]}
            resources:
              requests: {cpu: 10m, memory: 32Mi}
              limits: {cpu: 200m, memory: 128Mi}
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: $NAME
      annotations: {kdash-hub.io/public: http}
    spec:
      selector: {app: $NAME}
      ports:
      - {name: http, port: 8080, targetPort: http}
    """).replace("SCRIPT", json.dumps(PAGE_SCRIPT))
# as Traefik reaches it: through the hub's proxy on 127.0.0.1 (the documented default)
AUTH_URL = ('c.LauncherSettings.public_url.rstrip("/")'
            ' + "/services/kdash-launcher/forward-auth"')
COMMON_CONFIG = textwrap.dedent(f"""
    c.LauncherSettings.public_domain = {DOMAIN!r}
    c.LauncherSettings.public_tls = "wildcard-secret"
    c.LauncherSettings.public_tls_secret = {TLS_SECRET!r}
    c.LauncherSettings.public_auth_url = {AUTH_URL}
""")
NGINX_CONFIG = COMMON_CONFIG + textwrap.dedent(f"""
    c.LauncherSettings.public_ingress_class = {NGINX_CLASS!r}
    c.LauncherSettings.public_forward_auth = "nginx"
""")
TRAEFIK_CONFIG = COMMON_CONFIG + textwrap.dedent(f"""
    c.LauncherSettings.public_ingress_class = {TRAEFIK_CLASS!r}
    c.LauncherSettings.public_forward_auth = "traefik"
    c.LauncherSettings.public_traefik_middleware = {TRAEFIK_MIDDLEWARE_REF!r}
""")


@dataclass
class Edge:
    """Both launchers, Traefik in front of the public hosts, and the wildcard's CA."""

    traefik_env: LauncherEnv  # public_forward_auth = "traefik"
    nginx_env: LauncherEnv  # public_forward_auth = "nginx"
    traefik: Traefik
    tier: RealTier
    client_ca: Path
    launched: list[tuple[LauncherEnv, str, str]] = field(default_factory=list)
    user_services: list[tuple[str, str]] = field(default_factory=list)

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.traefik.https_port}{path}"


class ToTraefik(AbstractResolver):
    """Every public host resolves to Traefik on 127.0.0.1 (what the wildcard DNS does)."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        assert host.endswith("." + DOMAIN), host
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def _tls_secret(namespace: str, pair: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": TLS_SECRET, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(pair.cert.read_bytes()).decode(),
                     "tls.key": base64.b64encode(pair.key.read_bytes()).decode()}}


def traefik_objects() -> list[dict]:
    """Traefik's namespace, ServiceAccount, least ClusterRole and the IngressClasses."""
    meta = {"labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TRAEFIK_NS, **meta}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": TRAEFIK_SA, "namespace": TRAEFIK_NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "kdash-test-traefik", **meta}, "rules": TRAEFIK_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kdash-test-traefik", **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "kdash-test-traefik"},
         "subjects": [{"kind": "ServiceAccount", "name": TRAEFIK_SA,
                       "namespace": TRAEFIK_NS}]},
        *({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
           "metadata": {"name": name, **meta}, "spec": {"controller": controller}}
          for name, controller in ((NGINX_CLASS, NGINX_CONTROLLER),
                                   (TRAEFIK_CLASS, TRAEFIK_CONTROLLER))),
    ]


def forward_auth_middleware(env: LauncherEnv) -> dict:
    """The admin's ForwardAuth Middleware for the traefik flavour (trustForwardHeader off)."""
    return {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
            "metadata": {"name": MIDDLEWARE, "namespace": TRAEFIK_NS},
            "spec": {"forwardAuth": {"address": env.url + "forward-auth",
                                     "authResponseHeaders": ["X-Auth-User"]}}}


async def _install(tier: RealTier, objects: list[dict], within: float = 0.0) -> None:
    """Server-side apply as the admin; retried for `within` s while a kind isn't served
    yet (a CRD just made)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        admin = client_for(tier.admin_kubeconfig)
        try:
            await apply_objects(admin, objects, field_manager="kdash-tests")
            return
        except (ApiError, LookupError, KeyError):
            if loop.time() > deadline:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(0.5)


def start_traefik(tier: RealTier, workdir: Path) -> Traefik:
    """Traefik with its own ServiceAccount token, verifying the API server with its CA."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = asyncio.run(mint_token(tier.admin_kubeconfig, TRAEFIK_NS, TRAEFIK_SA))
    kubeconfig = identity_kubeconfig(tier.admin_kubeconfig, workdir / "traefik.kubeconfig",
                                     token, TRAEFIK_NS)
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    (workdir / "token").write_text(token)
    (workdir / "token").chmod(0o600)
    (workdir / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return Traefik(cluster["server"], workdir / "token", workdir / "ca.crt", workdir, {
        "kubernetesingressnginx": {"ingressClass": NGINX_CLASS,
                                   "controllerClass": NGINX_CONTROLLER},
        "kubernetesingress": {"ingressClass": TRAEFIK_CLASS},
        "kubernetescrd": {},
    }).start()


@pytest.fixture(scope="module")
def edge(_real_tier_session: RealTier | None,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tier = _real_tier_session
    assert tier is not None  # the module is skipped outside the real tier
    ensure_binary(progress=lambda line: print(f"\n[traefik] {line}", flush=True))
    work = tmp_path_factory.mktemp("traefik-edge")
    pki = ClusterPKI(work / "pki")
    wildcard = pki.issue("wildcard", f"*.{DOMAIN}", server_names=(f"*.{DOMAIN}",),
                         client=False)
    crds = [doc for doc in yaml.safe_load_all(crd_definitions().read_text()) if doc]
    asyncio.run(_install(tier, [*traefik_objects(), *crds]))
    envs: dict[str, LauncherEnv] = {}
    traefik = None
    try:
        for flavour, config in (("traefik", TRAEFIK_CONFIG), ("nginx", NGINX_CONFIG)):
            (work / flavour / "templates").mkdir(parents=True)
            (work / flavour / "templates" / "page.yaml").write_text(PAGE_TEMPLATE)
            envs[flavour] = start_launcher_env(work / flavour, config)
        asyncio.run(_install(tier, [
            forward_auth_middleware(envs["traefik"]),
            *(_tls_secret(user_namespace(user), wildcard) for user in (OWNER, OTHER))],
            within=30))
        traefik = start_traefik(tier, work / "traefik")
        edge = Edge(traefik_env=envs["traefik"], nginx_env=envs["nginx"], traefik=traefik,
                    tier=tier, client_ca=pki.ca_cert)
        yield edge
        asyncio.run(_clean_up(edge))
    finally:
        if traefik is not None:
            traefik.stop()
        for env in envs.values():
            stop_launcher_env(env)


async def _clean_up(edge: Edge) -> None:
    """What this module made in the session's shared cluster: its instances (their pods are
    processes), the users' wildcard Secrets and Services, Traefik's binding and the
    IngressClasses (the CRDs and the read-only ClusterRole stay)."""
    for env, owner, name in edge.launched:
        await env.call("DELETE", f"instances/{owner}/{name}", owner)
    admin = client_for(edge.tier.admin_kubeconfig)
    paths = [f"/api/v1/namespaces/{user_namespace(user)}/secrets/{TLS_SECRET}"
             for user in (OWNER, OTHER)]
    paths += [f"/apis/networking.k8s.io/v1/ingressclasses/{name}"
              for name in (NGINX_CLASS, TRAEFIK_CLASS)]
    paths.append("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kdash-test-traefik")
    paths += [f"/api/v1/namespaces/{namespace}/services/{name}"
              for namespace, name in edge.user_services]
    try:
        for path in paths:
            try:
                await admin.request("DELETE", path)
            except ApiError as e:
                if e.status != 404:
                    raise
    finally:
        await admin.close()


@pytest.fixture
async def kube(edge: Edge) -> AsyncIterator[KubeResources]:
    async with api_client_for(edge.traefik_env.kubeconfig) as client:
        yield KubeResources(client)


@pytest.fixture
async def browser(edge: Edge) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that resolves public hosts to Traefik and verifies them with the test CA."""
    context = ssl.create_default_context(cafile=str(edge.client_ca))
    connector = aiohttp.TCPConnector(ssl=context, resolver=ToTraefik(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@dataclass
class Answer:
    status: int
    headers: Any
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


async def get(session: aiohttp.ClientSession, url: str,
              headers: dict[str, str] | None = None) -> Answer:
    async with session.get(url, headers=headers or {}, allow_redirects=False) as resp:
        return Answer(resp.status, resp.headers, await resp.text())


async def login_cookie(env: LauncherEnv, user: str) -> str:
    """The launcher's login cookie of `user` as a Cookie header: what a browser sends to a
    public host when the cookie is scoped to the shared parent domain (the documented
    `HubOAuth.cookie_options`); here the hub is on 127.0.0.1, so the test sends it."""
    session, _ = await browser_login(env, user)
    try:
        cookies = session.cookie_jar.filter_cookies(URL(env.url + "forward-auth"))
        return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
    finally:
        await session.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def launch_page(edge: Edge, env: LauncherEnv, owner: str,
                      name: str) -> tuple[str, str]:
    """Launch `page` as `owner`: its public host and the message only its pod knows."""
    message = secrets.token_hex(8)
    status, body = await env.call("POST", "instances", owner, json_body={
        "template": "page", "name": name, "values": {"MESSAGE": message}})
    assert status == 201, body
    edge.launched.append((env, owner, name))
    host = f"{publicurl.host_label(name, owner)}.{DOMAIN}"
    assert body["public_url"] == f"https://{host}/"
    return host, message


async def routed(edge: Edge, session: aiohttp.ClientSession, host: str,
                 headers: dict[str, str], until: set[int]) -> Answer:
    """Poll `host` through Traefik until the answer's status is in `until` (until Traefik has
    the route it answers with its own default certificate, which the client refuses)."""

    async def check() -> Answer | None:
        try:
            answer = await get(session, edge.url(host), headers)
        except aiohttp.ClientConnectorCertificateError:
            return None
        return answer if answer.status in until else None

    try:
        return await eventually(check, f"Traefik answering {host} with {until}", within=90)
    except AssertionError:
        try:
            answer = await get(session, edge.url(host), headers)
            said = f"{answer.status} {answer.body[:300]}"
        except aiohttp.ClientError as e:
            said = repr(e)
        raise AssertionError(f"{host}: {said}\n" + edge.traefik.log()[-4000:]) from None


async def test_only_the_owner_gets_the_instance_through_traefik(edge, browser, kube):
    env = edge.traefik_env
    name = unique("site")
    host, message = await launch_page(edge, env, OWNER, name)
    ingress = await kube.get("Ingress", publicurl.ingress_name(name), user_namespace(OWNER))
    assert ingress["spec"]["ingressClassName"] == TRAEFIK_CLASS
    assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": TLS_SECRET}]
    assert ingress["metadata"]["annotations"][
        "traefik.ingress.kubernetes.io/router.middlewares"] == TRAEFIK_MIDDLEWARE_REF
    owner = await login_cookie(env, OWNER)
    # the owner: the pod's own answer (Traefik reached the pod's address in its network
    # namespace), over HTTPS with the wildcard certificate the client verified
    answer = await routed(edge, browser, host, {"Cookie": owner}, {200})
    page = answer.json()
    assert page["message"] == message and page["path"] == "/"
    assert page["headers"]["X-Auth-User"] == OWNER
    answer = await get(browser, edge.url(host, "/deep/page?x=1"), {"Cookie": owner})
    assert answer.status == 200 and answer.json()["path"] == "/deep/page?x=1"
    # the owner's hub API token does as well as their login
    answer = await get(browser, edge.url(host), {"Authorization": f"token {env.tokens[OWNER]}"})
    assert answer.status == 200 and answer.json()["message"] == message
    # another user's login, or their token: 403 and nothing of the instance
    other = await login_cookie(env, OTHER)
    for headers in ({"Cookie": other}, {"Authorization": f"token {env.tokens[OTHER]}"}):
        answer = await get(browser, edge.url(host), headers)
        assert answer.status == 403 and message not in answer.body
        assert "X-Auth-User" not in answer.headers
    # nobody logged in: Traefik hands the endpoint's redirect to the sign-in to the browser
    answer = await get(browser, edge.url(host, "/app/?q=1"))
    assert answer.status == 302 and message not in answer.body
    assert answer.headers["Location"] == env.url + "public-signin?" + urlencode(
        {"rd": f"https://{host}/app/?q=1"})
    # a browser's own X-Auth-User is no login
    answer = await get(browser, edge.url(host), {"X-Auth-User": OWNER})
    assert answer.status == 302
    # Traefik's plain-HTTP entry point routes the host too: the same forward-auth there
    plain = f"http://{host}:{edge.traefik.http_port}/"
    for headers, status in (({}, 302), ({"Cookie": other}, 403)):
        answer = await get(browser, plain, headers)
        assert answer.status == status and message not in answer.body


async def test_forged_forwarding_headers_through_traefik(edge, browser):
    env = edge.traefik_env
    mine, theirs = unique("site"), unique("site")
    victim_host, message = await launch_page(edge, env, OWNER, mine)
    own_host, _ = await launch_page(edge, env, OTHER, theirs)
    attacker = await login_cookie(env, OTHER)
    await routed(edge, browser, own_host, {"Cookie": attacker}, {200})
    await routed(edge, browser, victim_host, {"Cookie": attacker}, {403})
    # the attacker names their own host in every header the endpoint or a proxy might read;
    # Traefik (trustForwardHeader off) overwrites X-Forwarded-*, X-Original-URL is ignored
    forged = {"Cookie": attacker, "X-Forwarded-Host": own_host,
              "X-Original-URL": f"https://{own_host}/", "X-Forwarded-Uri": "/",
              "X-Forwarded-Proto": "https", "X-Forwarded-Method": "GET",
              "Forwarded": f"host={own_host}", "X-Original-Host": own_host}
    answer = await get(browser, edge.url(victim_host), forged)
    assert answer.status == 403 and message not in answer.body
    # a Host header that disagrees with the TLS name: Traefik routes on Host, and the
    # endpoint judges that same host
    answer = await get(browser, edge.url(own_host), {**forged, "Host": victim_host})
    assert answer.status in (403, 421) and message not in answer.body
    # the same, with the victim's host in capitals (hosts compare as DNS does)
    answer = await get(browser, edge.url(own_host, "/"), {"Cookie": attacker,
                                                          "Host": victim_host.upper()})
    assert answer.status in (403, 421) and message not in answer.body


async def test_the_nginx_flavour_refuses_traefiks_calls(edge, browser):
    """Traefik's ingress-nginx provider makes a ForwardAuth of `auth-url` and passes the
    browser's X-Original-URL on: the nginx flavour, which reads that header, must refuse
    Traefik's calls (403 for everyone), never trust them. (Before the fix mallory got
    victor's page by sending her own host as X-Original-URL.)"""
    env = edge.nginx_env
    mine, theirs = unique("site"), unique("site")
    victim_host, message = await launch_page(edge, env, OWNER, mine)
    own_host, _ = await launch_page(edge, env, OTHER, theirs)
    owner, attacker = await login_cookie(env, OWNER), await login_cookie(env, OTHER)
    # the route exists (the wildcard certificate is served for the host) and says 403,
    # and the pod is ready, so a call the endpoint let through would get its page
    await routed(edge, browser, victim_host, {"Cookie": owner}, {403})
    async with api_client_for(env.kubeconfig) as client:
        await ready_pod(KubeResources(client), user_namespace(OWNER), mine, within=60)
    for original in (f"https://{own_host}/", f"https://{victim_host}/"):
        answer = await get(browser, edge.url(victim_host), {
            "Cookie": attacker, "X-Original-URL": original})
        assert answer.status == 403 and message not in answer.body, original
    answer = await get(browser, edge.url(victim_host), {
        "Cookie": owner, "X-Original-URL": f"https://{victim_host}/"})
    assert answer.status == 403 and message not in answer.body
    answer = await get(browser, edge.url(victim_host))
    assert answer.status == 403 and message not in answer.body


async def test_a_user_cannot_put_an_ingress_in_front_of_another_users_host(edge, browser):
    """Users get no Ingresses (kdash-user): not one for the owner's host with Traefik's
    class and no forward-auth, not in their own namespace."""
    env = edge.traefik_env
    name = unique("site")
    victim_host, message = await launch_page(edge, env, OWNER, name)
    namespace = user_namespace(OTHER)
    token = await mint_token(edge.tier.admin_kubeconfig, namespace, "kdash-user")
    as_user = identity_kubeconfig(edge.tier.admin_kubeconfig,
                                  edge.tier.workdir / f"{OTHER}-traefik.kubeconfig", token,
                                  namespace)
    await kube_service(as_user, namespace, name)
    edge.user_services.append((namespace, f"steal-{name}"))
    for notes in ({}, {"traefik.ingress.kubernetes.io/router.middlewares": ""},
                  {"nginx.ingress.kubernetes.io/auth-url": "http://127.0.0.1:1/"}):
        ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": f"steal-{name}", "namespace": namespace,
                                "annotations": notes},
                   "spec": {"ingressClassName": TRAEFIK_CLASS, "rules": [{
                       "host": victim_host, "http": {"paths": [{
                           "path": "/", "pathType": "Prefix", "backend": {"service": {
                               "name": name, "port": {"number": 8080}}}}]}}]}}
        api = client_for(as_user)
        try:
            with pytest.raises(ApiError) as refused:
                await api.request(
                    "POST", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses",
                    body=ingress)
        finally:
            await api.close()
        assert refused.value.status == 403, refused.value
    # and the victim's host still lets only the owner in
    other = await login_cookie(env, OTHER)
    answer = await routed(edge, browser, victim_host, {"Cookie": other}, {403})
    assert message not in answer.body


async def kube_service(kubeconfig: Path, namespace: str, name: str) -> None:
    """A Service the user may make in their own namespace (a backend for a stolen host)."""
    async with api_client_for(kubeconfig) as client:
        await KubeResources(client).ensure({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"steal-{name}", "namespace": namespace},
            "spec": {"selector": {"app": "none"}, "ports": [{"port": 8080}]}})


def test_traefik_needs_no_more_than_its_role(edge):
    """Everything Traefik read, it could read with TRAEFIK_RULES: no 403 in its log."""
    log = edge.traefik.log()
    assert "kubernetesingressnginx" in log and "kubernetescrd" in log
    assert "forbidden" not in log.lower(), [
        line for line in log.splitlines() if "forbidden" in line.lower()][:5]
