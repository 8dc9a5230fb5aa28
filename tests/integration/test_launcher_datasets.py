"""The launcher's Datasets page and API (services/launcher/userdatasets.py) on a real hub +
launcher, in Chromium and over HTTP: the datasets a user gets at their next start (the
admin's, by hub group, and their own), adding and removing their own in their Secret, and
what an ordinary user can try against it. Both tiers: on the emulator, and with
KDASH_REAL_TIER=1 on the real control plane, where the launcher writes with its own
ServiceAccount (RBAC and the admission policies judge it).

End to end (a hub with KDashSpawner and kdash-s3, on the emulator in both tiers, as
test_datasets.py's real hub): a dataset added on the page before any start reaches the
notebook at its start, and boto3 reads the bucket with nothing but what it was given.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import (
    PASSWORD,
    _hub_api,
    start_launcher_env,
    stop_launcher_env,
)
from tests.integration.test_launcher_ui import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[2]
USER_SECRET = "my-datasets"
SECRET_KEY = "s3cr3t/Key+that-is-never-shown"
ACCESS_KEY = "AKUSERDATASET0042"
ENDPOINT = "https://s3.example.org"
CREDS = {"secret": "hub-keys"}
DECLARED = [
    {"name": "climate", "bucket": "climate-2024", "endpoint": ENDPOINT, "credentials": CREDS},
    {"name": "genomes", "bucket": "genomes", "endpoint": "https://minio.lab.example.org",
     "region": "eu-west-1", "groups": ["bio"], "credentials": CREDS},
    {"name": "payroll", "bucket": "payroll", "endpoint": ENDPOINT, "groups": ["finance"],
     "credentials": CREDS},
]


def mine(name: str = "mine", **extra: Any) -> dict[str, Any]:
    return {"name": name, "bucket": "my-bucket", "endpoint": ENDPOINT,
            "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, **extra}


@pytest.fixture(scope="module")
def ds_env(tmp_path_factory):
    """A hub + launcher whose launcher mirrors a spawner with three datasets (one for the
    group bio, one for finance) and users' own datasets allowed; carol is in bio."""
    extra = (f"\nc.LauncherSettings.datasets_declared = {DECLARED!r}\n"
             f"c.LauncherSettings.datasets_user_secret = {USER_SECRET!r}\n")
    env = start_launcher_env(tmp_path_factory.mktemp("launcher-datasets"), extra)
    try:
        _hub_api(env, "POST", "/groups/bio")
        _hub_api(env, "POST", "/groups/bio/users", {"users": ["carol"]})
        yield env
    finally:
        stop_launcher_env(env)


async def user_file(env, user: str) -> list | None:
    """The user's own datasets as stored (admin's view of the cluster)."""
    async with api_client_for(env.kubeconfig) as client:
        secret = await KubeResources(client).get("Secret", USER_SECRET,
                                                 user_namespace(user, "kdash-"))
    if secret is None:
        return None
    return json.loads(base64.b64decode(secret["data"]["datasets.json"]))


async def put_secret(env, user: str, name: str, data: dict[str, str]) -> None:
    """A Secret written into the user's namespace as the user could (made first on the
    emulator, where no spawner made it)."""
    namespace = user_namespace(user, "kdash-")
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        if await kube.get("Namespace", namespace) is None:
            await kube.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": namespace}})
        await kube.ensure({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


async def names(env, user: str) -> dict[str, str]:
    status, body = await env.call("GET", "datasets", user)
    assert status == 200, body
    assert SECRET_KEY not in json.dumps(body)
    return {d["name"]: d["source"] for d in body["datasets"]}


async def test_the_api_lists_the_datasets_of_the_next_start_by_group(ds_env):
    assert await names(ds_env, "carol") == {"climate": "admin", "genomes": "admin"}
    assert await names(ds_env, "dave") == {"climate": "admin"}
    status, body = await ds_env.call("GET", "datasets", "dave")
    climate = body["datasets"][0]
    assert climate == {**climate, "bucket": "climate-2024", "endpoint": ENDPOINT,
                       "region": "us-east-1", "profile": "climate",
                       "rclone": "climate:climate-2024", "in_running_server": False}
    assert climate["usage"]["rclone"] == "rclone ls climate:climate-2024"
    assert body["user_datasets_allowed"] is True and body["max_user_datasets"] == 20
    assert "credentials" not in json.dumps(body) and "hub-keys" not in json.dumps(body)


async def test_add_and_remove_through_the_api_in_the_users_own_secret(ds_env):
    env = ds_env
    status, added = await env.call("POST", "datasets", "dave",
                                   json_body=mine(region="eu-central-1", path_style=False))
    assert status == 201, added
    assert added["access_key_id"] == "****0042" and SECRET_KEY not in json.dumps(added)
    assert added["in_running_server"] is False
    stored = await user_file(env, "dave")
    assert stored == [{**mine(region="eu-central-1", path_style=False)}]
    assert await names(env, "dave") == {"climate": "admin", "mine": "own"}
    # the spawner reads exactly this at the next start
    from kdash_hub.spawner.datasets import parse_user
    found, keys, problems = parse_user(json.dumps(stored), {d["name"] for d in DECLARED})
    assert [d.name for d in found] == ["mine"] and keys["mine"] == (ACCESS_KEY, SECRET_KEY)
    assert problems == []
    assert (await env.call("DELETE", "datasets/mine", "dave"))[0] == 204
    assert await user_file(env, "dave") == []
    assert (await env.call("DELETE", "datasets/mine", "dave"))[0] == 404


@pytest.mark.parametrize("entry,says", [
    (mine("climate"), "administrator declared"),
    (mine("payroll"), "administrator declared"),  # a group's dataset the user isn't in
    (mine("../etc"), "name"),
    (mine("a\n[default]"), "name"),
    (mine(endpoint="javascript:alert(1)"), "endpoint"),
    (mine(endpoint="https://s3.example.org\n[profile evil]"), "endpoint"),
    (mine(bucket="../../x"), "bucket"),
    (mine(access_key_id="AK\naws_secret_access_key = x"), "printable"),
    (mine(secret_access_key="two words"), "printable"),
    (mine(user="bob"), "unknown field"),
    (mine(namespace="kdash-bob"), "unknown field"),
    (mine(groups=["finance"]), "unknown field"),
])
async def test_crafted_input_is_refused_with_a_sentence_and_writes_nothing(ds_env, entry, says):
    before = await user_file(ds_env, "erin")
    status, body = await ds_env.call("POST", "datasets", "erin", json_body=entry)
    assert status == 400, body
    assert says in body["message"] and "\n" not in body["message"]
    assert SECRET_KEY not in json.dumps(body)
    assert await user_file(ds_env, "erin") == before


async def test_at_most_20_of_ones_own(ds_env):
    env = ds_env
    results = []
    for i in range(20):  # in sequence: each write checks the Secret's resourceVersion
        results.append((await env.call("POST", "datasets", "frank@lab.org",
                                       json_body=mine(f"d{i}")))[0])
    assert results == [201] * 20
    status, body = await env.call("POST", "datasets", "frank@lab.org", json_body=mine("d20"))
    assert status == 400 and "20" in body["message"], body
    assert len(await user_file(env, "frank@lab.org")) == 20


async def test_another_users_datasets_are_never_shown_or_changed(ds_env):
    env = ds_env
    assert (await env.call("POST", "datasets", "bob", json_body=mine("bobs")))[0] == 201
    bobs = await user_file(env, "bob")
    # mallory: bob's never listed; forged names, paths and fields change nothing of his
    assert "bobs" not in await names(env, "mallory")
    for path in ("datasets/bobs", "datasets/..%2Fbob", "datasets/bobs?user=bob"):
        status, _ = await env.call("DELETE", path, "mallory")
        assert status == 404, path
    status, _ = await env.call("POST", "datasets?user=bob&namespace=kdash-bob", "mallory",
                               json_body=mine("evil"))
    assert status == 201  # the query is ignored: it went into mallory's own Secret
    assert [d["name"] for d in await user_file(env, "mallory")] == ["evil"]
    assert await user_file(env, "bob") == bobs
    # a service's token has no datasets; no token, no answer
    assert (await env.call("GET", "datasets", None))[0] == 403
    assert (await env.call("GET", "datasets", "noscope"))[0] == 403


async def test_the_running_server_column_reads_the_last_starts_copy(ds_env):
    env = ds_env
    await put_secret(env, "carol", "kdash-datasets-env",
                     {"KDASH_DATASETS": "climate,payroll"})
    status, body = await env.call("GET", "datasets", "carol")
    shown = {d["name"]: d["in_running_server"] for d in body["datasets"]}
    # payroll in the copy (the user may write it) doesn't make it one of hers
    assert shown == {"climate": True, "genomes": False}
    assert body["last_start_known"] is True


async def test_a_hand_made_secret_is_not_overwritten(ds_env):
    env = ds_env
    await put_secret(env, "alice", USER_SECRET, {"datasets.json": json.dumps([mine("by-hand")])})
    assert (await names(env, "alice"))["by-hand"] == "own"
    status, body = await env.call("POST", "datasets", "alice", json_body=mine("more"))
    assert status == 409 and "made by hand" in body["message"], body
    assert (await env.call("DELETE", "datasets/by-hand", "alice"))[0] == 409
    assert [d["name"] for d in await user_file(env, "alice")] == ["by-hand"]


async def test_where_the_admin_does_not_allow_it(launcher_env):
    env = launcher_env
    status, body = await env.call("GET", "datasets", "victor")
    assert status == 200 and body["user_datasets_allowed"] is False, body
    status, body = await env.call("POST", "datasets", "victor", json_body=mine())
    assert status == 403 and "does not allow" in body["message"], body
    assert (await env.call("DELETE", "datasets/mine", "victor"))[0] == 403
    async with aiohttp.ClientSession() as s, s.get(env.url + "datasets",
                                                   headers=env.headers("victor")) as r:
        assert r.status == 200
        assert "does not allow datasets of your own" in " ".join((await r.text()).split())


async def _login(browser, launcher_url: str, user: str, password: str = PASSWORD):
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    await page.goto(launcher_url + "datasets")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("#login_submit")
    await page.wait_for_selector("#launcher")
    return page


@pytest.mark.browser
async def test_the_page_in_chromium(ds_env):
    env = ds_env
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await _login(browser, env.url, "carol")
            assert "/datasets" in page.url
            assert "active" in await page.get_attribute("#nav-datasets", "class")
            rows = page.locator("#datasets tr.dataset")
            await expect(rows).to_have_count(2)  # climate and genomes (bio)
            assert await page.locator("tr.dataset[data-name=payroll]").count() == 0

            # bad input: said in one sentence, the form kept without the keys
            await page.fill("#ds-name", "climate")
            await page.fill("#ds-bucket", "my-bucket")
            await page.fill("#ds-endpoint", ENDPOINT)
            await page.fill("#ds-access", ACCESS_KEY)
            await page.fill("#ds-secret", SECRET_KEY)
            await page.click("#add")
            await expect(page.locator("#error")).to_contain_text("administrator declared")
            assert await page.input_value("#ds-bucket") == "my-bucket"
            assert await page.input_value("#ds-secret") == ""
            assert SECRET_KEY not in await page.content()
            assert await user_file(env, "carol") is None  # nothing written

            await page.fill("#ds-name", "carols")
            await page.fill("#ds-region", "eu-west-3")
            await page.fill("#ds-access", ACCESS_KEY)
            await page.fill("#ds-secret", SECRET_KEY)
            await page.click("#add")
            await expect(page.locator("#message")).to_contain_text("Added carols")
            row = page.locator("tr.dataset[data-name=carols]")
            await expect(row.locator(".in-server")).to_have_text("from the next start")
            assert "****0042" in await row.text_content()
            assert "rclone ls carols:my-bucket" in await page.locator(
                "tr.dataset-usage[data-name=carols] .usage").text_content()
            assert SECRET_KEY not in await page.content() and ACCESS_KEY not in await (
                page.content())
            (REPO / "artifacts").mkdir(exist_ok=True)
            await page.screenshot(path=str(REPO / "artifacts" / "launcher-datasets.png"),
                                  full_page=True)

            # a forged POST without the form's _xsrf: refused, nothing written
            for path, form in (("datasets/add", mine("csrf")),
                               ("datasets/remove", {"name": "carols"})):
                resp = await page.request.post(env.url + path, form=form)
                assert resp.status == 403, (path, resp.status)
            assert [d["name"] for d in await user_file(env, "carol")] == ["carols"]
            # with her own valid _xsrf, bob's dataset is still not hers to remove
            assert (await env.call("POST", "datasets", "bob", json_body=mine("bobs-page")))[
                0] == 201
            bobs = await user_file(env, "bob")
            xsrf = await page.locator("#add-dataset input[name=_xsrf]").get_attribute("value")
            resp = await page.request.post(env.url + "datasets/remove",
                                           form={"_xsrf": xsrf, "name": "bobs-page"})
            assert resp.status == 404 and "no dataset of your own" in await resp.text()
            assert await user_file(env, "bob") == bobs

            await row.locator("button").click()
            await expect(page.locator("#message")).to_contain_text("Removed carols")
            assert await page.locator("tr.dataset[data-name=carols]").count() == 0
            assert await user_file(env, "carol") == []
        finally:
            await browser.close()


# --- end to end: the next start of a real notebook gets it ---------------------------------

@pytest.fixture(scope="module")
def spawner_hub(tmp_path_factory):
    """A hub with KDashSpawner (users' own datasets allowed) and the launcher mirroring it,
    on a local cluster running notebooks as processes; kdash-s3 with a bucket."""
    import secrets as pysecrets

    from kdash_hub.dev.ports import free_port
    from kdash_hub.dev.s3 import S3Server
    from tests.fixtures.launcher import _launcher_config
    from tests.fixtures.spawner import flavor_hub
    from tests.integration.test_launcher_first_launch import _wait_for_launcher, extra_config
    from tests.integration.test_spawner_hub import START_TIMEOUT

    workdir = tmp_path_factory.mktemp("launcher-datasets-e2e")
    templates = workdir / "templates"
    templates.mkdir()
    launcher_config = workdir / "launcher_config.py"
    flavors = [{"slug": "cpu", "display_name": "CPU", "default": True, "cpu_limit": 1}]
    extra = extra_config(free_port(), launcher_config) + (
        f"\nc.KDashSpawner.s3_datasets_user_secret = {USER_SECRET!r}\n"
        "c.ApprovingAuthenticator.require_approval = False\n")

    async def write_launcher_config(hub):
        launcher_config.write_text(_launcher_config(
            workdir / "kubeconfig", templates, hub.url, pysecrets.token_hex(32),
            "\nc.LauncherSettings.ensure_namespace = False\n"
            f"c.LauncherSettings.datasets_user_secret = {USER_SECRET!r}\n"))

    with S3Server(ACCESS_KEY, SECRET_KEY, buckets=["lab-data"]) as s3, flavor_hub(
            workdir, flavors, start_timeout=START_TIMEOUT, extra=extra,
            before_start=write_launcher_config) as hub:
        import boto3

        boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                     aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
                     ).put_object(Bucket="lab-data", Key="hello.txt", Body=b"from kdash-s3")
        asyncio.run(_wait_for_launcher(hub))
        hub.s3 = s3
        yield hub


@pytest.mark.browser
async def test_a_dataset_added_on_the_page_reaches_the_next_notebook_start(spawner_hub,
                                                                               tmp_path):
    from tests.integration.test_chooser_hub import call, pod_of, stop, token_of
    from tests.integration.test_datasets import mount, run_clean, user_secrets
    from tests.integration.test_launcher_first_launch import LAUNCHER_PATH
    from tests.integration.test_spawner_hub import wait_ready

    hub, user = spawner_hub, "lena"
    token = await token_of(hub, user)
    entry = {"name": "lab", "bucket": "lab-data", "endpoint": hub.s3.endpoint,
             "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    # before any start, on the page: the launcher asks the hub for the namespace, then
    # writes the Secret
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await _login(browser, hub.url + LAUNCHER_PATH, user, "any")
            for field, selector in (("name", "#ds-name"), ("bucket", "#ds-bucket"),
                                    ("endpoint", "#ds-endpoint"),
                                    ("access_key_id", "#ds-access"),
                                    ("secret_access_key", "#ds-secret")):
                await page.fill(selector, entry[field])
            await page.click("#add")
            await expect(page.locator("#message")).to_contain_text("Added lab")
        finally:
            await browser.close()
    status, body = await call(hub, "POST", f"/users/{user}/server", {"profile": "cpu"}, token)
    assert status in (201, 202), body
    try:
        await wait_ready(hub, user)
        pod = await pod_of(hub, user)
        assert {"secretRef": {"name": "kdash-datasets-env", "optional": True}} in pod[
            "spec"]["containers"][0]["envFrom"]
        async with api_client_for(hub.admin_kubeconfig) as client:
            files, env = await user_secrets(KubeResources(client),
                                            user_namespace(user, "kdash-"))
        assert env["KDASH_DATASETS"] == "lab"
        mount(files, tmp_path / "etc")
        env = {**env, **{k: str(tmp_path / "etc" / Path(v).name) for k, v in env.items()
                         if k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}}
        script = ("import boto3; print(boto3.Session(profile_name='lab').client('s3')"
                  ".get_object(Bucket='lab-data', Key='hello.txt')['Body'].read().decode())")
        done = run_clean([sys.executable, "-c", script], env, tmp_path / "home")
        assert done.returncode == 0 and done.stdout.strip() == "from kdash-s3", done.stderr
        # the page now says it is in the running server
        async with aiohttp.ClientSession() as s, s.get(
                f"{hub.url}{LAUNCHER_PATH}api/datasets",
                headers={"Authorization": f"token {token}"}) as r:
            listed = await r.json()
        assert [(d["name"], d["in_running_server"]) for d in listed["datasets"]] == [
            ("lab", True)]
    finally:
        await stop(hub, user)
