"""Attacks on the forward-auth endpoint of public URLs, against a real hub and launcher.

The requests an ingress-nginx `auth-url` sub-request (X-Original-URL, the browser's cookies)
or a Traefik ForwardAuth (X-Forwarded-Host) would send are sent to the endpoint directly,
with the cookies a browser-like login through the hub really got (ingress-nginx can't be
built here; a real Traefik runs in tests/realtier/test_public_url_traefik.py). The attacker
is mallory, the victim victor (tests/fixtures/security.py's names).
"""

from __future__ import annotations

import json
import textwrap
import urllib.error
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher import publicurl
from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE
from kdash_hub.services.launcher.records import ANN_RECORD, record_name
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import (
    LauncherEnv,
    _hub_api,
    start_launcher_env,
    stop_launcher_env,
)
from tests.integration.test_launcher_public_urls import (
    DOMAIN,
    PUBLIC_CONFIG,
    PUBLIC_TEMPLATE,
    add_user,
    launch,
    start_public_env,
    unique,
)
from tests.security.test_launcher_headers import browser_login

ATTACKER, VICTIM = "mallory", "victor"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    env = start_public_env(tmp_path_factory.mktemp("forwardauth"))
    yield env
    stop_launcher_env(env)


def host(name: str, owner: str) -> str:
    return f"{publicurl.host_label(name, owner)}.{DOMAIN}"


async def ask(env: LauncherEnv, session: aiohttp.ClientSession | None, *,
              original: str | None = None, forwarded: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """What the endpoint answers an ingress-nginx sub-request (X-Original-URL) and/or a
    Traefik-style one (X-Forwarded-Host), with the session's cookies."""
    sent = dict(headers or {})
    if original is not None:
        sent["X-Original-URL"] = original
    if forwarded is not None:
        sent["X-Forwarded-Host"] = forwarded
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.get(env.url + "forward-auth", headers=sent,
                               allow_redirects=False) as resp:
            await resp.read()
            return resp.status, resp.headers
    finally:
        if own:
            await session.close()


@pytest.fixture
async def logins(env):
    sessions: dict[str, aiohttp.ClientSession] = {}

    async def login(user: str) -> aiohttp.ClientSession:
        if user not in sessions:
            sessions[user], _ = await browser_login(env, user)
        return sessions[user]

    yield login
    for session in sessions.values():
        await session.close()


@pytest.fixture
async def kube(env) -> Any:
    async with api_client_for(env.kubeconfig) as client:
        yield KubeResources(client)


async def test_only_the_owner_gets_through(env, logins):
    mine, theirs = unique("site"), unique("site")
    await launch(env, VICTIM, mine)
    await launch(env, ATTACKER, theirs)
    victim, attacker = await logins(VICTIM), await logins(ATTACKER)
    url = f"https://{host(mine, VICTIM)}/some/page?x=1"
    status, headers = await ask(env, victim, original=url)
    assert status == 200 and headers["X-Auth-User"] == VICTIM
    # another user's login cookie, and another user's own host for the victim
    status, headers = await ask(env, attacker, original=url)
    assert status == 403 and "X-Auth-User" not in headers
    status, _ = await ask(env, victim, original=f"https://{host(theirs, ATTACKER)}/")
    assert status == 403
    # nobody logged in: 401 and where to sign in, back to the page asked for
    status, headers = await ask(env, None, original=url)
    assert status == 401
    assert headers["X-Auth-Signin"] == (env.url + "public-signin?" + urlencode({"rd": url}))
    # hub API tokens: the owner's, another user's, one without the launcher's scope
    status, headers = await ask(env, None, original=url, headers=env.headers(VICTIM))
    assert status == 200 and headers["X-Auth-User"] == VICTIM
    status, _ = await ask(env, None, original=url, headers=env.headers(ATTACKER))
    assert status == 403
    bob = unique("site")
    await launch(env, "bob", bob)
    status, _ = await ask(env, None, original=f"https://{host(bob, 'bob')}/",
                          headers={"Authorization": f"token {env.tokens['noscope']}"})
    assert status == 403
    status, _ = await ask(env, None, original=f"https://{host(bob, 'bob')}/",
                          headers=env.headers("bob"))
    assert status == 200


async def test_forged_host_headers_are_refused(env, logins):
    mine, theirs = unique("site"), unique("site")
    await launch(env, VICTIM, mine)
    await launch(env, ATTACKER, theirs)
    attacker = await logins(ATTACKER)
    victim_host, attacker_host = host(mine, VICTIM), host(theirs, ATTACKER)
    # nginx routes on the Host it puts in X-Original-URL; an X-Forwarded-Host the browser
    # sent through it (naming a host the attacker owns) is never what the answer is about
    status, _ = await ask(env, attacker, original=f"https://{victim_host}/",
                          forwarded=attacker_host)
    assert status == 403
    status, _ = await ask(env, attacker, original=f"https://{attacker_host}/",
                          forwarded=victim_host)
    assert status == 200
    # with nginx, X-Forwarded-Host alone (the browser's, or the hub proxy's) is no host
    status, _ = await ask(env, attacker, forwarded=attacker_host)
    assert status == 403
    status, _ = await ask(env, attacker, original=f"https://{attacker_host}/")
    assert status == 200
    # the same host written differently is the same host (and the same owner)
    for form in (victim_host.upper(), victim_host + ":443", victim_host + ".",
                 f"{victim_host}:8443"):
        status, _ = await ask(env, attacker, original=f"https://{form}/")
        assert status == 403, form
        status, _ = await ask(env, await logins(VICTIM), original=f"https://{form}/")
        assert status == 200, form
    # user info, two ports, an IP literal, hosts outside the domain or below a host
    for bad in (f"https://{attacker_host}@{victim_host}/", f"https://{victim_host}:1:2/",
                "https://[::1]/"):
        status, _ = await ask(env, attacker, original=bad)
        assert status == 403, bad
    for foreign in (f"https://{attacker_host}.evil.example.com/",
                    f"https://x.{attacker_host}/", f"https://{DOMAIN}/", "https://evil.com/"):
        status, _ = await ask(env, attacker, original=foreign)
        assert status == 404, foreign
    # a host under the domain that names nothing: the same 403 as someone else's
    for nothing in (f"nothing--{ATTACKER}", f"site--{unique('nobody')}", "x---0123456789abcdef"):
        status, _ = await ask(env, attacker, original=f"https://{nothing}.{DOMAIN}/")
        assert status == 403, nothing
    # behind Traefik (its ingress-nginx provider makes a plain ForwardAuth of `auth-url`)
    # X-Original-URL is whatever the browser sent: a call with Traefik's own headers is
    # never answered from it, even naming the caller's own host (found through a real
    # Traefik: tests/realtier/test_public_url_traefik.py)
    for traefik in ({"X-Forwarded-Method": "GET"}, {"X-Forwarded-Uri": "/"},
                    {"x-forwarded-method": "GET", "X-Forwarded-Uri": "/"}):
        status, _ = await ask(env, attacker, original=f"https://{attacker_host}/",
                              headers=traefik)
        assert status == 403, traefik


async def test_a_deleted_instance_made_again_by_someone_else(env, logins):
    name = unique("gone")
    await launch(env, VICTIM, name)
    victim, attacker = await logins(VICTIM), await logins(ATTACKER)
    old = f"https://{host(name, VICTIM)}/"
    assert (await ask(env, victim, original=old))[0] == 200
    status, _ = await env.call("DELETE", f"instances/{VICTIM}/{name}", VICTIM)
    assert status in (200, 204)
    assert (await ask(env, victim, original=old))[0] == 403
    # the same instance name under another owner is another host: the old one stays shut
    info = await launch(env, ATTACKER, name)
    assert info["public_url"] != old
    assert (await ask(env, attacker, original=old))[0] == 403
    assert (await ask(env, attacker, original=info["public_url"]))[0] == 200
    assert (await ask(env, victim, original=info["public_url"]))[0] == 403


async def test_a_record_edited_by_its_user_is_not_trusted(env, logins, kube):
    name = unique("tamper")
    await launch(env, VICTIM, name)
    victim, attacker = await logins(VICTIM), await logins(ATTACKER)
    url = f"https://{host(name, VICTIM)}/"
    assert (await ask(env, victim, original=url))[0] == 200
    namespace = user_namespace(VICTIM)
    secret = await kube.get("Secret", record_name(name), namespace)
    content = json.loads(secret["metadata"]["annotations"][ANN_RECORD])
    content["owner"] = ATTACKER  # the signature no longer verifies
    await kube.patch("Secret", record_name(name), namespace, {"metadata": {"annotations": {
        ANN_RECORD: json.dumps(content, sort_keys=True, separators=(",", ":"))}}})
    assert (await ask(env, attacker, original=url))[0] == 403
    assert (await ask(env, victim, original=url))[0] == 403


async def test_an_ingress_of_the_users_own_vouches_for_nothing(env, logins, kube):
    """RBAC gives users no Ingresses (the real tier's matrix); made here with the test's
    admin identity anyway: the launcher never reads Ingresses, so the one a user makes,
    pointing the controller's auth-url at the launcher, changes no answer."""
    mine = unique("site")
    await launch(env, VICTIM, mine)
    victim, attacker = await logins(VICTIM), await logins(ATTACKER)
    namespace = user_namespace(ATTACKER)
    evil_host = f"evil--{ATTACKER}.{DOMAIN}"
    for name, target in (("own-evil", evil_host), ("own-steal", host(mine, VICTIM))):
        await kube.create({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace, "annotations": {
                "nginx.ingress.kubernetes.io/auth-url": env.url + "forward-auth",
                publicurl.PUBLIC_ANNOTATION: "http"},
                "labels": {"app.kubernetes.io/managed-by": "kdash-hub",
                           "kdash-hub.io/instance": "evil"}},
            "spec": {"rules": [{"host": target, "http": {"paths": [{
                "path": "/", "pathType": "Prefix", "backend": {"service": {
                    "name": "evil", "port": {"number": 80}}}}]}}]}})
    # and a record it could never sign
    await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": record_name("evil"), "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "kdash-hub",
                   "kdash-hub.io/component": "launcher-instance"},
        "annotations": {ANN_RECORD: json.dumps({"owner": ATTACKER, "name": "evil"})}}})
    assert (await ask(env, attacker, original=f"https://{evil_host}/"))[0] == 403
    assert (await ask(env, victim, original=f"https://{evil_host}/"))[0] == 403
    assert (await ask(env, attacker, original=f"https://{host(mine, VICTIM)}/"))[0] == 403
    assert (await ask(env, victim, original=f"https://{host(mine, VICTIM)}/"))[0] == 200
    for name in ("own-evil", "own-steal"):
        await kube.delete("Ingress", name, namespace)
    await kube.delete("Secret", record_name("evil"), namespace)


async def test_a_hashed_host_is_found_through_the_verified_records(env, logins):
    owner = "frank@lab.org"
    name = unique("site")
    info = await launch(env, owner, name)
    assert "---" in info["public_url"]
    assert (await ask(env, await logins(owner), original=info["public_url"]))[0] == 200
    assert (await ask(env, await logins(ATTACKER), original=info["public_url"]))[0] == 403
    await env.call("DELETE", f"instances/{quote(owner)}/{name}", owner)


async def test_sign_in_goes_back_to_public_hosts_only(env, logins):
    victim = await logins(VICTIM)
    back = f"https://{host('any', VICTIM)}/page?q=1"
    async with victim.get(env.url + "public-signin?" + urlencode({"rd": back}),
                          allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == back
    for elsewhere in ("https://evil.com/", f"https://{DOMAIN}.evil.com/",
                      f"//{host('any', VICTIM)}/", "javascript:alert(1)",
                      f"https://evil.com@{host('any', VICTIM)}/"):
        async with victim.get(env.url + "public-signin?" + urlencode({"rd": elsewhere}),
                              allow_redirects=False) as resp:
            assert resp.status == 400, elsewhere
    # not logged in: first the hub's login
    async with aiohttp.ClientSession() as anonymous, anonymous.get(
            env.url + "public-signin?" + urlencode({"rd": back}),
            allow_redirects=False) as resp:
        assert resp.status == 302 and "/hub/api/oauth2/authorize" in resp.headers["Location"]


@pytest.fixture(scope="module")
def traefik_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    """A second hub + launcher, for Traefik's ForwardAuth."""
    workdir = tmp_path_factory.mktemp("forwardauth-traefik")
    (workdir / "templates").mkdir()
    (workdir / "templates" / "pub.yaml").write_text(PUBLIC_TEMPLATE)
    env = start_launcher_env(workdir, PUBLIC_CONFIG + textwrap.dedent("""
        c.LauncherSettings.public_forward_auth = "traefik"
        c.LauncherSettings.public_traefik_middleware = "jhub-kdash-forward-auth@kubernetescrd"
    """))
    yield env
    stop_launcher_env(env)


async def test_traefik_reads_x_forwarded_host_only(traefik_env):
    env = traefik_env
    mine, theirs = unique("site"), unique("site")
    await launch(env, VICTIM, mine)
    await launch(env, ATTACKER, theirs)
    victim_host, attacker_host = host(mine, VICTIM), host(theirs, ATTACKER)
    victim, _ = await browser_login(env, VICTIM)
    attacker, _ = await browser_login(env, ATTACKER)
    try:
        status, headers = await ask(env, victim, forwarded=victim_host)
        assert status == 200 and headers["X-Auth-User"] == VICTIM
        assert (await ask(env, attacker, forwarded=victim_host))[0] == 403
        # Traefik passes the browser's X-Original-URL on: never read with this flavour
        status, _ = await ask(env, attacker, forwarded=attacker_host,
                              original=f"https://{victim_host}/")
        assert status == 200
        status, _ = await ask(env, attacker, forwarded=victim_host,
                              original=f"https://{attacker_host}/")
        assert status == 403
        # nobody logged in: Traefik hands the answer to the browser, so a redirect to the
        # sign-in, back to the page asked for
        status, headers = await ask(env, None, forwarded=victim_host, headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Uri": "/app/?q=1"})
        assert status == 302
        assert headers["Location"] == env.url + "public-signin?" + urlencode(
            {"rd": f"https://{victim_host}/app/?q=1"})
    finally:
        await victim.close()
        await attacker.close()


async def test_an_account_not_approved_is_refused(env):
    """Onboarding approval's groups close public URLs as they close the launcher."""
    user = unique("pend")
    await add_user(env, user)
    name = unique("site")
    await launch(env, user, name)
    url = f"https://{host(name, user)}/"
    assert (await ask(env, None, original=url, headers=env.headers(user)))[0] == 200
    try:
        _hub_api(env, "POST", "/groups/kdash-pending", {})
    except urllib.error.HTTPError as e:
        assert e.code == 409  # made already
    _hub_api(env, "POST", "/groups/kdash-pending/users", {"users": [user]})
    try:
        # a token the launcher has never seen (it caches what the hub said per token)
        fresh = _hub_api(env, "POST", f"/users/{user}/tokens",
                         {"scopes": [ACCESS_SCOPE]})["token"]
        status, _ = await ask(env, None, original=url,
                              headers={"Authorization": f"token {fresh}"})
        assert status == 403
    finally:
        _hub_api(env, "DELETE", "/groups/kdash-pending/users", {"users": [user]})
