"""Custom images on a real JupyterHub (+ proxy) with KDashSpawner, a local cluster in process
mode, and Chromium: a flavor that allows them takes an image from the allowed registries (the
pod runs it, with the copied pull secret); anything else is refused at once with one sentence
(REST API 400, the form's message above the kept choices) and nothing is created."""

from __future__ import annotations

import shutil

import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from tests.fixtures.cluster import api_client_for
from tests.fixtures.spawner import flavor_hub
from tests.integration.test_chooser_hub import (
    call,
    default_server,
    login,
    namespace_objects,
    pod_of,
    stop,
    token_of,
)
from tests.integration.test_spawner_hub import CHROMIUM_ARGS, START_TIMEOUT, wait_ready

LAB = "quay.io/jupyter/base-notebook:2024-12-02"
FLAVORS = [
    {"slug": "cpu", "display_name": "CPU", "default": True, "cpu_limit": 1,
     "custom_image": True,
     "images": {"lab": {"display_name": "JupyterLab", "image": LAB},
                "scipy": {"display_name": "SciPy",
                          "image": "quay.io/jupyter/scipy-notebook:2024-12-02"}}},
    {"slug": "fixed", "display_name": "Fixed", "cpu_limit": 1, "images": {"lab": LAB}},
]
EXTRA = '''
c.KDashSpawner.custom_image_registries = ["quay.io/jupyter"]
c.KDashSpawner.custom_image_patterns = [r"registry\\.example\\.org/ml/[a-z-]+:v[0-9]+"]
c.KDashSpawner.image_pull_secrets_to_copy = ["registry"]
'''
GOOD = "quay.io/jupyter/r-notebook:2024-12-02"
NOT_ALLOWED = ("The image “{}” is not from a registry allowed here: CPU accepts images from "
               "quay.io/jupyter/… or the patterns your admin set; choose one of those or one "
               "of the images offered.")
NOT_A_NAME = ("The image “{}” is not an image name (lowercase, no spaces, at most 255 "
              "characters): CPU accepts images from quay.io/jupyter/… or the patterns your "
              "admin set; choose one of those or one of the images offered.")


async def pull_secret(hub) -> None:
    """The registry Secret in the hub's namespace ("default" out of a cluster)."""
    async with api_client_for(hub.admin_kubeconfig) as client:
        await KubeResources(client).create({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry", "namespace": "default"},
            "data": {".dockerconfigjson": "e30="}})


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with flavor_hub(tmp_path_factory.mktemp("kdash-images-hub"), FLAVORS,
                    start_timeout=START_TIMEOUT, extra=EXTRA, before_start=pull_secret) as hub:
        yield hub


async def cluster_objects(hub, namespace: str) -> dict[str, list[str]]:
    return await namespace_objects(
        hub, namespace, ("Pod", "Secret", "ResourceQuota", "PersistentVolumeClaim"))


ATTACKS = [
    ("quay.io.evil.com/jupyter/x:1", NOT_ALLOWED),
    ("docker.io/evil/miner:latest", NOT_ALLOWED),
    ("quay.io/jupyterx/x:1", NOT_ALLOWED),
    (f"evil.com/x@sha256:{'ab' * 32}", NOT_ALLOWED),
    ("registry.example.org/ml/trainer:v3-evil", NOT_ALLOWED),
    ("quay.io/jupyter/../evil/x:1", NOT_A_NAME),
    ("quay.io/jupyter/x:1\nevil.com/x:1", NOT_A_NAME),
    (" quay.io/jupyter/x:1", NOT_A_NAME),
    ("QUAY.IO/jupyter/x:1", NOT_A_NAME),
    ("quay.io/jupyter/" + "a" * 5000, NOT_A_NAME),
]


async def test_rest_api_refuses_images_outside_the_registries_and_creates_nothing(hub):
    token = await token_of(hub, "ivan")
    namespace = user_namespace("ivan", "kdash-")
    for image, sentence in ATTACKS:
        status, body = await call(hub, "POST", "/users/ivan/server",
                                  {"profile": "cpu", "image--unlisted-choice": image}, token)
        shown = "".join(c if c.isprintable() and not c.isspace() else "␣" for c in image)
        shown = shown[:40] + ("…" if len(shown) > 40 else "")
        assert (status, body["message"]) == (400, sentence.format(shown)), (image, body)
        assert await cluster_objects(hub, namespace) == {}, image
    # a typed image in a flavor that does not allow one, and one that is not text
    status, body = await call(hub, "POST", "/users/ivan/server",
                              {"profile": "fixed", "image--unlisted-choice": GOOD}, token)
    assert (status, body["message"]) == (400, "Fixed does not let you choose your own image; "
                                              "choose one of the images offered."), body
    status, body = await call(hub, "POST", "/users/ivan/server",
                              {"profile": "cpu", "image--unlisted-choice": {"a": 1}}, token)
    assert status == 400 and "written as text" in body["message"], body
    assert await cluster_objects(hub, namespace) == {}
    assert (await default_server(hub, "ivan")).get("user_options", {}) == {}


async def test_an_allowed_image_runs_with_the_copied_pull_secret(hub):
    token = await token_of(hub, "jana")
    for image in (GOOD, f"quay.io/jupyter/r-notebook@sha256:{'cd' * 32}",
                  "registry.example.org/ml/trainer:v3"):
        options = {"profile": "cpu", "image": "scipy", "image--unlisted-choice": image}
        status, body = await call(hub, "POST", "/users/jana/server", options, token)
        assert status in (201, 202), body
        server = await wait_ready(hub, "jana")
        assert server["user_options"] == options
        pod = await pod_of(hub, "jana")
        assert pod["spec"]["containers"][0]["image"] == image  # typed beats the listed one
        assert {"name": "registry"} in pod["spec"]["imagePullSecrets"]
        await stop(hub, "jana")
    # a listed choice still works, and with the same secret
    status, body = await call(hub, "POST", "/users/jana/server",
                              {"profile": "cpu", "image": "scipy"}, token)
    assert status in (201, 202), body
    await wait_ready(hub, "jana")
    pod = await pod_of(hub, "jana")
    assert pod["spec"]["containers"][0]["image"] == "quay.io/jupyter/scipy-notebook:2024-12-02"
    assert {"name": "registry"} in pod["spec"]["imagePullSecrets"]
    await stop(hub, "jana")


@pytest.mark.browser
async def test_the_form_refuses_a_foreign_image_and_keeps_the_choices(hub):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium")
                                          or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await login(browser, hub, "kim")
            await page.goto(f"{hub.url}/hub/spawn")
            field = "#profile-option-cpu--image--unlisted-choice"
            await page.wait_for_selector(field)
            hint = await page.inner_text("#profile-option-cpu--image--hint")
            assert hint == "(from quay.io/jupyter/… or the patterns your admin set)"
            assert await page.query_selector(
                "#profile-option-fixed--image--unlisted-choice") is None
            await page.click('label[for="profile-option-cpu--image--2"]')  # SciPy
            await page.fill(field, "docker.io/evil/miner:latest")
            await page.click("form input[type=submit], form button[type=submit]")
            # the hub's own error paragraph on the re-rendered form (page.html also holds a
            # hidden "ajax-error alert-danger" that a broader selector finds before navigation)
            error = await page.inner_text(".spawn-error-msg")
            assert error.strip() == "Error: " + NOT_ALLOWED.format(
                "docker.io/evil/miner:latest"), error
            assert await page.is_checked("#profile-item-cpu")
            assert await cluster_objects(hub, user_namespace("kim", "kdash-")) == {}
            # an allowed one starts
            await page.fill(field, GOOD)
            await page.click("form input[type=submit], form button[type=submit]")
            await page.wait_for_url(f"{hub.url}/user/kim/**",
                                    timeout=(START_TIMEOUT + 60) * 1000)
            server = await wait_ready(hub, "kim")
            assert server["user_options"]["image--unlisted-choice"] == GOOD
            assert (await pod_of(hub, "kim"))["spec"]["containers"][0]["image"] == GOOD
            await stop(hub, "kim")
            # the next form shows the image typed last
            await page.goto(f"{hub.url}/hub/spawn")
            assert await page.input_value(field) == GOOD
        finally:
            await browser.close()
