"""Launch before the first notebook: the launcher asks the hub (spawner/namespace_api.py),
which makes the user's namespace bundle through KDashSpawner's own code with the hub's
identity; the launcher never makes a namespace itself.

A real hub (+ proxy) with KDashSpawner, onboarding approval and kdash-launcher as a managed
service, on a local cluster running pods as processes. A user who never started a server
launches a side service: their namespace then holds what a first start makes (quota, limits,
network policy, account, bindings, the completion mark), and their first start finds it
unchanged. The attacks: someone else's namespace, an unknown user, a token for the launcher
only, a pending user (through the launcher and directly). And without the hub's endpoint
(a hub without KDashSpawner), the launcher's old refusal stays.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.services.launcher.hubapi import HubClient
from kdash_hub.services.launcher.hubconfig import ACCESS_SCOPE
from kdash_hub.services.launcher.instances import Actor, InstanceManager, LauncherError
from kdash_hub.services.launcher.settings import LauncherSettings
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import LAUNCHER_PATH, _launcher_config
from tests.fixtures.polling import eventually
from tests.fixtures.spawner import flavor_hub
from tests.fixtures.stubserver import serving
from tests.integration.test_chooser_hub import call
from tests.integration.test_spawner_hub import START_TIMEOUT, wait_ready

LAUNCHER_TOKEN = secrets.token_hex(24)
FLAVORS = [{"slug": "small", "display_name": "Small", "default": True, "cpu_limit": 1}]
BUNDLE_KINDS = ("ResourceQuota", "LimitRange", "NetworkPolicy", "ServiceAccount", "RoleBinding")
MARK = "kdash-hub.io/bundle-hash"
# a side service of one ConfigMap: no pod to wait for, any number per user
NOTE_TEMPLATE = """\
kind: Template
name: Note
variables:
- {name: NAME, default: note}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: $NAME}
data: {text: hello}
"""
NOT_YOURS = "Not allowed to prepare {}'s namespace."
WAITING = "waiting for an administrator's approval"


def extra_config(launcher_port: int, launcher_config: Path) -> str:
    return f'''
from kdash_hub.authenticator.approval import ApprovalMixin
from kdash_hub.services.launcher.hubconfig import launcher_roles, launcher_service
from kdash_hub.spawner import namespace_api


class ApprovingAuthenticator(ApprovalMixin, InConfigAuthenticator):
    """The in-config logins, with kdash's onboarding approval."""


c.JupyterHub.authenticator_class = ApprovingAuthenticator
c.ApprovingAuthenticator.require_approval = True
c.Authenticator.manage_groups = False  # the tests decide through the groups API
service = launcher_service(port={launcher_port}, config_file={str(launcher_config)!r})
service["api_token"] = {LAUNCHER_TOKEN!r}
c.JupyterHub.services.append(service)
c.JupyterHub.load_roles.extend(launcher_roles())
namespace_api.install(c)
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from kdash_hub.dev.ports import free_port

    workdir = tmp_path_factory.mktemp("kdash-first-launch")
    templates = workdir / "templates"
    templates.mkdir()
    (templates / "note.yaml").write_text(NOTE_TEMPLATE)
    launcher_config = workdir / "launcher_config.py"

    async def write_launcher_config(hub):
        # the launcher acts with the cluster's kubeconfig here; it never makes a namespace
        launcher_config.write_text(_launcher_config(
            workdir / "kubeconfig", templates, hub.url, secrets.token_hex(32),
            "\nc.LauncherSettings.ensure_namespace = False\n"))

    with flavor_hub(workdir, FLAVORS, start_timeout=START_TIMEOUT,
                    extra=extra_config(free_port(), launcher_config),
                    before_start=write_launcher_config) as hub:
        asyncio.run(_wait_for_launcher(hub))
        for group in ("kdash-approved", "kdash-pending"):
            asyncio.run(call(hub, "POST", f"/groups/{group}"))
        yield hub


async def _wait_for_launcher(hub) -> None:
    async def answers() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(
                    f"{hub.url}{LAUNCHER_PATH}api/whoami", headers=hub.auth_headers(),
                    timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(answers, "kdash-launcher answering", within=120, interval=0.5)


async def user(hub, name: str, state: str = "approved", scopes: list[str] | None = None) -> str:
    """A hub user in the onboarding `state`, and a token of theirs (by default with all
    their scopes)."""
    status, _ = await call(hub, "GET", f"/users/{name}")
    if status == 404:
        assert (await call(hub, "POST", f"/users/{name}"))[0] == 201
        status, body = await call(hub, "POST", f"/groups/kdash-{state}/users",
                                  {"users": [name]})
        assert status == 200, body
    status, body = await call(hub, "POST", f"/users/{name}/tokens",
                              {"scopes": scopes or ["inherit"], "note": "first launch"})
    assert status == 201, body
    return body["token"]


async def provision(hub, name: str, token: str | None) -> tuple[int, Any]:
    return await call(hub, "POST", f"/kdash/namespace/{name}", {}, token)


async def launch(hub, token: str, template: str = "note") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{hub.url}{LAUNCHER_PATH}api/instances", json={"template": template},
            headers={"Authorization": f"token {token}"},
            timeout=aiohttp.ClientTimeout(total=180)) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def bundle(hub, name: str) -> dict[str, Any]:
    """The user's namespace and the kdash objects in it, by kind and name, namespace and
    user names replaced (so two users' bundles compare)."""
    namespace = user_namespace(name, "kdash-")
    async with api_client_for(hub.admin_kubeconfig) as client:
        kube = KubeResources(client)
        ns = await kube.get("Namespace", namespace)
        if ns is None:
            return {}
        out: dict[str, Any] = {"mark": MARK in (ns["metadata"].get("annotations") or {})}
        for kind in BUNDLE_KINDS:
            for obj in await kube.list(kind, namespace,
                                       label_selector="app.kubernetes.io/managed-by=kdash-hub"):
                text = json.dumps({k: obj.get(k) for k in ("spec", "rules", "roleRef",
                                                           "subjects") if k in obj})
                text = re.sub(rf"\b{re.escape(namespace)}\b", "NS", text)
                out[f"{kind}/{obj['metadata']['name']}"] = json.loads(
                    re.sub(rf"\b{re.escape(name)}\b", "USER", text))
        return out


async def claims(hub, name: str) -> dict[str, dict[str, Any]]:
    """The user's home claims by name: uid, labels, spec (namespace and user replaced)."""
    namespace = user_namespace(name, "kdash-")
    async with api_client_for(hub.admin_kubeconfig) as client:
        found = await KubeResources(client).list("PersistentVolumeClaim", namespace)
    out = {}
    for pvc in found:
        meta = pvc["metadata"]
        text = json.dumps({"labels": meta.get("labels"), "spec": {
            k: v for k, v in pvc["spec"].items() if k in ("accessModes", "resources",
                                                           "storageClassName")}})
        text = re.sub(rf"\b{re.escape(name)}\b", "USER", text.replace(namespace, "NS"))
        out[meta["name"].replace(name, "USER")] = {"uid": meta["uid"], **json.loads(text)}
    return out


def hub_log(hub) -> str:
    return hub.log_path.read_text(errors="replace")


async def stop_server(hub, name: str) -> None:
    status, _ = await call(hub, "DELETE", f"/users/{name}/server")
    assert status in (202, 204)

    async def stopped() -> bool:
        _, model = await call(hub, "GET", f"/users/{name}")
        return not (model.get("servers") or {})

    await eventually(stopped, f"{name}'s server stopped", within=START_TIMEOUT)


async def test_first_launch_gets_the_bundle_a_first_start_makes(hub):
    ana, leo = await user(hub, "ana"), await user(hub, "leo")
    # ana starts a server first: her namespace is what a first start makes
    status, body = await call(hub, "POST", "/users/ana/server", {"profile": "small"}, ana)
    assert status in (201, 202), body
    await wait_ready(hub, "ana")
    reference = await bundle(hub, "ana")
    home = await claims(hub, "ana")
    assert list(home) == ["claim-USER"], home
    assert reference["mark"] and {"ResourceQuota/kdash-quota", "LimitRange/kdash-limits",
                                  "NetworkPolicy/kdash-user-pods"} <= set(reference), reference
    await stop_server(hub, "ana")

    # leo never started one: his launch has the hub make the same bundle
    assert await bundle(hub, "leo") == {}
    status, instance = await launch(hub, leo)
    assert status == 201, instance
    assert await bundle(hub, "leo") == reference
    # and the home claim a start makes, through the spawner's own code: as ana's
    leo_home = await claims(hub, "leo")
    assert {k: {**v, "uid": ""} for k, v in leo_home.items()} == {
        k: {**v, "uid": ""} for k, v in home.items()}, (leo_home, home)
    assert "Namespace kdash-leo of leo created (asked by kdash-launcher)" in hub_log(hub)
    # a second launch, and the endpoint asked again, change nothing
    status, again = await launch(hub, leo)
    assert status == 201 and again["name"] != instance["name"], again
    status, body = await provision(hub, "leo", leo)
    assert (status, body) == (200, {"namespace": "kdash-leo", "outcome": "unchanged"}), body

    # his first start finds the namespace ready and repairs nothing
    before = len(hub_log(hub).splitlines())
    status, body = await call(hub, "POST", "/users/leo/server", {"profile": "small"}, leo)
    assert status in (201, 202), body
    await wait_ready(hub, "leo")
    log = [line for line in hub_log(hub).splitlines()[before:] if "kdash-leo" in line]
    assert any("Namespace kdash-leo is ready" in line for line in log), log
    assert not any("Repairing" in line or "Creating namespace" in line for line in log), log
    # the notebook mounts that same claim: kept, not made again
    assert await claims(hub, "leo") == leo_home
    async with api_client_for(hub.admin_kubeconfig) as client:
        pods = await KubeResources(client).list("Pod", "kdash-leo",
                                                label_selector="component=singleuser-server")
    assert [v["persistentVolumeClaim"]["claimName"] for p in pods
            for v in p["spec"]["volumes"] if "persistentVolumeClaim" in v] == ["claim-leo"]
    await stop_server(hub, "leo")


async def test_a_half_made_namespace_is_finished_before_a_launch(hub):
    """A namespace without the completion mark (a provisioning cut short) is not trusted:
    the hub finishes the bundle before the instance is made."""
    kim = await user(hub, "kim")
    status, body = await provision(hub, "kim", kim)
    assert (status, body) == (200, {"namespace": "kdash-kim", "outcome": "created"}), body
    complete = await bundle(hub, "kim")
    async with api_client_for(hub.admin_kubeconfig) as client:
        kube = KubeResources(client)
        await kube.delete("ResourceQuota", "kdash-quota", "kdash-kim")
        await kube.patch("Namespace", "kdash-kim", None,
                         {"metadata": {"annotations": {MARK: None}}})
        # her home claim, replaced by one of her own (kubectl): never deleted or changed
        await kube.delete("PersistentVolumeClaim", "claim-kim", "kdash-kim")
        await eventually(lambda: kube_gone(kube, "claim-kim", "kdash-kim"), "claim gone")
        await kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": "claim-kim", "namespace": "kdash-kim",
                                        "labels": {"mine": "yes"}},
                           "spec": {"accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": "1Mi"}}}})
    own = await claims(hub, "kim")
    broken = await bundle(hub, "kim")
    assert "ResourceQuota/kdash-quota" not in broken and not broken["mark"]
    status, instance = await launch(hub, kim)
    assert status == 201, instance
    assert await bundle(hub, "kim") == complete
    assert await claims(hub, "kim") == own
    assert "Namespace kdash-kim of kim repaired (asked by kdash-launcher)" in hub_log(hub)


async def kube_gone(kube: KubeResources, name: str, namespace: str) -> bool:
    return await kube.get("PersistentVolumeClaim", name, namespace) is None


async def test_only_the_user_and_the_launcher_may_provision(hub):
    mal = await user(hub, "mal")
    await user(hub, "vic")
    launcher_only = await user(hub, "mal", scopes=[ACCESS_SCOPE])
    cases = [(mal, "vic", 403, NOT_YOURS.format("vic")),  # someone else's
             (mal, "nobody-here", 403, NOT_YOURS.format("nobody-here")),  # no leak
             (launcher_only, "mal", 403, NOT_YOURS.format("mal")),  # a launcher-only token
             (LAUNCHER_TOKEN, "nobody-here", 404, "There is no hub user 'nobody-here'."),
             (None, "nobody-here", 404, "There is no hub user 'nobody-here'.")]  # admin
    for token, name, code, message in cases:
        status, body = await provision(hub, name, token)
        assert (status, body["message"]) == (code, message), (name, body)
    async with aiohttp.ClientSession() as s, s.post(
            f"{hub.api_url}/kdash/namespace/vic", json={}) as r:  # no credentials
        assert r.status == 403
    assert await bundle(hub, "vic") == {} and await bundle(hub, "mal") == {}
    # the launcher's own token may, for anyone who exists
    status, body = await provision(hub, "vic", LAUNCHER_TOKEN)
    assert (status, body) == (200, {"namespace": "kdash-vic", "outcome": "created"}), body
    assert (await bundle(hub, "vic"))["mark"]


async def test_a_pending_user_gets_no_namespace(hub):
    pat = await user(hub, "pat", state="pending")
    status, body = await launch(hub, pat)
    assert status == 403 and "not approved" in body["message"], body
    for token in (pat, LAUNCHER_TOKEN):
        status, body = await provision(hub, "pat", token)
        assert status == 403 and WAITING in body["message"], body
    assert await bundle(hub, "pat") == {}


# --- the launcher's side alone, with a stand-in hub ---------------------------------------


@pytest.fixture
async def stand_in_hub():
    """An HTTP server in the hub's place answering the namespace call with `answer`."""
    calls: list[dict] = []
    state = {"answer": (404, {"status": 404, "message": "Not Found"})}

    async def namespace(request: web.Request) -> web.Response:
        calls.append({"path": request.path, "auth": request.headers.get("Authorization")})
        status, body = state["answer"]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/hub/api/kdash/namespace/{user}", namespace)
    async with serving(app) as url:
        yield f"{url}/hub/api", state, calls


async def test_without_the_hub_endpoint_the_launch_is_refused_as_before(
        bare_apiserver, stand_in_hub, tmp_path):
    _, kube = bare_apiserver
    url, state, calls = stand_in_hub
    (tmp_path / "note.yaml").write_text(NOTE_TEMPLATE)
    manager = InstanceManager(kube, LauncherSettings(), load_directories([tmp_path]),
                              hub=HubClient(url, "service-token", timeout=10))
    with pytest.raises(LauncherError) as refused:
        await manager.launch(Actor("zoe"), "note")
    assert refused.value.status == 409
    assert refused.value.message == (
        "your namespace kdash-zoe isn't set up yet: start your notebook server once (hub"
        " Home page), then try again")
    assert calls == [{"path": "/hub/api/kdash/namespace/zoe",
                      "auth": "token service-token"}]
    # the hub refuses: its sentence reaches the user, nothing is made
    state["answer"] = (403, {"status": 403, "message": "Your account is " + WAITING})
    with pytest.raises(LauncherError) as refused:
        await manager.launch(Actor("zoe"), "note")
    assert refused.value.status == 403
    assert refused.value.message == ("your namespace kdash-zoe couldn't be prepared: Your"
                                     " account is " + WAITING)
    assert await kube.get("Namespace", "kdash-zoe") is None
    assert await kube.list("Secret", "kdash-zoe") == []


def test_install_gives_the_scope_only_to_a_configured_launcher():
    """The hub config: the route and the scope always; the role only for a launcher the hub
    knows (a role naming an unknown service stops the hub); twice is once."""
    from traitlets.config import Config

    from kdash_hub.spawner import namespace_api

    alone = Config()
    namespace_api.install(alone)
    assert namespace_api.PROVISION_SCOPE in alone.JupyterHub.custom_scopes
    assert not alone.JupyterHub.get("load_roles")
    c = Config()
    c.JupyterHub.services = [{"name": "kdash-launcher"}, {"name": "kdash-culler"}]
    namespace_api.install(c)
    namespace_api.install(c)
    assert c.JupyterHub.load_roles == [{
        "name": "kdash-namespace-provisioner", "description": namespace_api.SCOPE_DESCRIPTION,
        "scopes": [namespace_api.PROVISION_SCOPE], "services": ["kdash-launcher"]}]
    assert [h[0] for h in c.JupyterHub.extra_handlers] == [r"/api/kdash/namespace/([^/]+)/?"]
