"""Issue 15's bad input on the launcher's side: a clear sentence, and nothing created.

A real hub runs the launcher with public URLs on (test_launcher_public_urls.py's settings)
and an admin who allows every default kind but CronJob. The Ingresses and objects go to the
emulator, or to the real API server with KDASH_REAL_TIER=1 (the launcher with its own
ServiceAccount).

- A hostname clash: an Ingress already in the user's namespace holds the instance's public
  host, or the name of its Ingress (an admin's, a stale one): 409 with the sentence, through
  the REST API and the launcher's form in Chromium; no record, no object.
- A job template asking for a kind the admin doesn't allow (the catalog's CronJob template
  `nightly-script`): refused at load with the sentence naming the kind, so it is never
  offered; launching it anyway is a 404 that makes nothing.

The two other rows have their tests where the refusal is made: an image outside the
admin's pattern in tests/integration/test_spawner_images.py, a lifetime beyond the bound in
tests/integration/test_server_lifetime.py (and the launcher's extend form here:
test_launcher_server_lifetime.py).
"""

from __future__ import annotations

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
from kdash_hub.templating.parse import DEFAULT_ALLOWED_KINDS
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import PASSWORD, LauncherEnv, start_launcher_env, stop_launcher_env
from tests.integration.test_launcher_public_urls import DOMAIN, PUBLIC_CONFIG, unique
from tests.integration.test_launcher_ui import CHROMIUM_ARGS

USER = "carol"
ALLOWED = [k for k in DEFAULT_ALLOWED_KINDS if k != "CronJob"]
NOT_ALLOWED = f"kind CronJob is not allowed in templates (allowed: {', '.join(sorted(ALLOWED))})"
MADE_BY_LAUNCH = ("Deployment", "Service", "ConfigMap", "Secret", "Ingress", "CronJob", "Job")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    env = start_launcher_env(tmp_path_factory.mktemp("refusals"), PUBLIC_CONFIG + (
        f"\nc.LauncherSettings.allowed_kinds = {ALLOWED!r}\n"))
    yield env
    stop_launcher_env(env)


@pytest.fixture
async def kube(env: LauncherEnv) -> AsyncIterator[KubeResources]:
    async with api_client_for(env.kubeconfig) as client:
        yield KubeResources(client)


def squatter(name: str, host: str) -> dict:
    """An Ingress someone other than the launch put in the user's namespace."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": user_namespace(USER)},
            "spec": {"rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix", "backend": {"service": {
                    "name": "elsewhere", "port": {"number": 80}}}}]}}]}}


async def made_for(kube: KubeResources, name: str) -> list[str]:
    """Everything in the user's namespace that a launch of `name` would have made."""
    namespace, found = user_namespace(USER), []
    for kind in MADE_BY_LAUNCH:
        for obj in await kube.list(kind, namespace):
            meta = obj["metadata"]
            if (meta.get("labels") or {}).get("kdash-hub.io/instance") == name or \
                    meta["name"] in (name, record_name(name), publicurl.ingress_name(name)):
                found.append(f"{kind}/{meta['name']}")
    return found


async def test_a_public_host_already_taken_is_a_409_that_makes_nothing(env, kube):
    namespace = user_namespace(USER)
    # the namespace exists (a first launch, or the real tier's provisioning, made it)
    first = unique("first")
    status, body = await env.call("POST", "instances", USER,
                                  json_body={"template": "echo", "name": first})
    assert status == 201, body
    # another name, the instance's host
    name = unique("site")
    host = f"{name}--{USER}.{DOMAIN}"
    await kube.create(squatter("someone-elses", host))
    status, body = await env.call("POST", "instances", USER,
                                  json_body={"template": "website", "name": name})
    assert status == 409, body
    assert body["message"] == (
        f"The public host {host} is already taken by the Ingress someone-elses in your "
        "namespace; choose another instance name (or ask an admin to remove that Ingress). "
        "Nothing was created.")
    assert await made_for(kube, name) == []
    # the Ingress's own name, another host
    second = unique("site")
    await kube.create(squatter(publicurl.ingress_name(second), f"other.{DOMAIN}"))
    status, body = await env.call("POST", "instances", USER,
                                  json_body={"template": "website", "name": second})
    assert status == 409, body
    assert body["message"].startswith(
        f"An Ingress named {publicurl.ingress_name(second)} is already in your namespace")
    assert body["message"].endswith("Nothing was created.")
    assert await made_for(kube, second) == [f"Ingress/{publicurl.ingress_name(second)}"]
    # the launcher's form says the same, and keeps what was typed
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(env.url + "new/website")
            await page.fill("input[name=username]", USER)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login_submit")
            await page.wait_for_selector("#launch")
            await page.fill("#name", name)
            await page.click("#launch")
            error = await page.text_content("#error")
            assert f"The public host {host} is already taken" in error, error
            assert await page.input_value("#name") == name
        finally:
            await browser.close()
    assert await made_for(kube, name) == []
    # once the squatter is gone, the same name launches, with its own Ingress
    await kube.delete("Ingress", "someone-elses", namespace)
    status, body = await env.call("POST", "instances", USER,
                                  json_body={"template": "website", "name": name})
    assert status == 201, body
    assert body["public_url"] == f"https://{host}/"
    for done in (name, first):
        assert (await env.call("DELETE", f"instances/{USER}/{done}", USER))[0] in (200, 204)
    await kube.delete("Ingress", publicurl.ingress_name(second), namespace)


async def test_a_job_template_with_a_kind_not_allowed_is_never_offered(env, kube):
    # what the admin reads (the launcher's log, `kdash-hub templates check`): the kind
    catalog = load_directories([Path(CATALOG_DIR)], Catalog(), allowed_kinds=ALLOWED)
    assert catalog.get("nightly-script") is None
    assert any(NOT_ALLOWED in str(e) for e in catalog.errors), catalog.errors
    assert NOT_ALLOWED in env.hub.log_tail(2000)
    # what a user gets: it isn't in the catalog, and launching it anyway makes nothing
    status, listed = await env.call("GET", "templates", USER)
    assert status == 200, listed
    ids = {t["id"] for t in listed["templates"]}
    assert "nightly-script" not in ids and "python-job" in ids
    def names(items: list[dict]) -> list[str]:
        return sorted(i["metadata"]["name"] for i in items)

    cronjobs = names(await kube.list("CronJob", user_namespace(USER)))  # others' leftovers
    status, body = await env.call("POST", "instances", USER, json_body={
        "template": "nightly-script", "name": "nightly",
        "values": {"SCHEDULE": "0 2 * * *"}})
    assert status == 404 and body["message"] == "no template 'nightly-script'", body
    assert await made_for(kube, "nightly") == []
    assert names(await kube.list("CronJob", user_namespace(USER))) == cronjobs
