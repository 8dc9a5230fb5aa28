"""Use a side service from the notebook: connection details for the owner, the password on
request, and the opt-in "Use in my notebook" (the launcher's kdash-notebook-env Secret,
which KDashSpawner's notebook pods load with envFrom).

A real hub with kdash-launcher on a local cluster (tests/fixtures/launcher.py); the page in
Chromium; the notebook's environment as the kubelet resolves it for the process it starts
(kdash_hub.localcluster.processes.container_env) from the pod KDashSpawner makes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import textwrap

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.processes import RUN_AS_PROCESS, container_env
from kdash_hub.services.launcher.notebookenv import (
    ENV_SECRET,
    FILES_DIR,
    FILES_SECRET,
    env_prefix,
)
from kdash_hub.services.launcher.records import INSTANCE_NAME, SECRET_KEY, record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR
from kdash_hub.templating import Catalog, TemplateError, load_directories, parse_template
from tests.fixtures.cluster import api_client_for, requires_emulator
from tests.fixtures.launcher import PASSWORD
from tests.fixtures.security import ATTACKER, ATTACKER_NS, VICTIM, VICTIM_NS
from tests.fixtures.spawner import build_spawner, to_dict
from tests.security.test_launcher_headers import browser_login

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


async def template_password(kube, namespace: str, name: str, key: str) -> str:
    """The password the instance really runs with: its own Secret, made by the template."""
    secret = await kube.get("Secret", name, namespace)
    return base64.b64decode(secret["data"][key]).decode()


async def env_secret(kube, namespace: str) -> dict[str, str] | None:
    secret = await kube.get("Secret", ENV_SECRET, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def notebook_environment(kube, username: str) -> tuple[dict, dict[str, str]]:
    """The container of the notebook pod KDashSpawner makes for `username`, and the
    environment the kubelet gives its process (envFrom resolved against the cluster)."""
    spawner = build_spawner(username=username)
    pod = to_dict(await spawner.get_pod_manifest())
    pod["metadata"]["namespace"] = spawner.namespace
    container = pod["spec"]["containers"][0]

    async def lookup(kind: str, namespace: str, name: str) -> dict | None:
        return await kube.get(kind, name, namespace)

    env = await container_env(pod, container, pod_ip="127.0.0.1", host_ip="127.0.0.1",
                              lookup=lookup)
    return container, env


def test_env_names_are_injective_over_instance_names():
    """Instance names are [a-z0-9-]; the fields have no "_": no two (instance, field)
    pairs share a variable."""
    names = ["a", "a-b", "a-b-c", "ab", "a-host", "a--b", "db1", "d-b1", "x" * 40]
    fields = ("HOST", "PORT", "USER", "PASSWORD", "DATABASE", "URL")
    seen: dict[str, tuple[str, str]] = {}
    for name in names:
        assert INSTANCE_NAME.fullmatch(name)
        for field in fields:
            var = env_prefix(name) + field
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", var), var
            assert var not in seen, (var, seen.get(var), (name, field))
            seen[var] = (name, field)


@pytest.mark.parametrize("scheme, ok", [
    ("postgresql", True), ("redis", True), ("http", True), ("s3+http", True),
    ("Bad Scheme", False), ("javascript:", False), ("", True), (5432, False)])
def test_connection_scheme_is_checked_when_the_template_loads(scheme, ok):
    header = textwrap.dedent(f"""\
        kind: Template
        name: Db
        http: no
        connection: {{scheme: {json.dumps(scheme)}, user: USER}}
        variables:
        - {{name: USER, default: me}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: $NAME}}
        spec: {{ports: [{{port: 5432}}], selector: {{app: $NAME}}}}
        """)
    if ok:
        assert parse_template(header).connection.scheme == scheme
    else:
        with pytest.raises(TemplateError, match="connection"):
            parse_template(header)
    # the catalog's declare theirs
    catalog = load_directories([str(CATALOG_DIR)], Catalog())
    assert {t: catalog.get(t).connection.scheme for t in ("postgresql", "redis", "minio")} \
        == {"postgresql": "postgresql", "redis": "redis", "minio": "http"}


async def test_opt_in_puts_the_details_in_the_next_notebook_and_opt_out_removes_them(
        launcher_env, launcher_kube, offline_kube):
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "carol", json_body={
        "template": "postgresql", "name": "nb-db", "values": {"POSTGRES_DB": "sales"}})
    assert status == 201, inst
    status, cache = await env.call("POST", "instances", "carol", json_body={
        "template": "redis", "name": "nb-cache"})
    assert status == 201, cache
    try:
        password = await template_password(kube, "kdash-carol", "nb-db", "POSTGRES_PASSWORD")
        # the details: host (short and in-cluster), port, user, database, no password
        status, info = await env.call("GET", "instances/carol/nb-db", "carol")
        assert status == 200
        conn = info["connection"]
        assert (conn["host"], conn["port"], conn["user"], conn["database"]) == (
            "nb-db", 5432, "jovyan", "sales")
        assert conn["address"] == "nb-db.kdash-carol.svc:5432" and conn["password"] is None
        assert info["notebook"] == {
            "enabled": False, "as": None, "secret": ENV_SECRET,
            "variables": sorted(f"KDASH_NB_DB_{f}" for f in (
                "HOST", "PORT", "USER", "PASSWORD", "DATABASE", "URL")),
            "files_secret": FILES_SECRET,
            "files": [f"{FILES_DIR}/nb-db.json", f"{FILES_DIR}/nb-db.env"],
            "url": "postgresql://jovyan@nb-db:5432/sales"}
        assert password not in json.dumps(info)
        assert await env_secret(kube, "kdash-carol") is None

        # a notebook pod always loads the Secret, optional: it starts without one
        container, before = await notebook_environment(kube, "carol")
        assert {"secretRef": {"name": ENV_SECRET, "optional": True}} in container["envFrom"]
        assert not [k for k in before if k.startswith("KDASH_") and k != "KDASH_SERVICES_DIR"]

        # opt in: the Secret holds the details, the next notebook has them
        status, done = await env.call("POST", "instances/carol/nb-db/notebook", "carol",
                                      json_body={"enabled": True})
        assert status == 200 and done["enabled"] is True, done
        assert "next start" in done["message"]
        assert password not in json.dumps(done)
        written = await env_secret(kube, "kdash-carol")
        assert written == {
            "KDASH_NB_DB_HOST": "nb-db", "KDASH_NB_DB_PORT": "5432",
            "KDASH_NB_DB_USER": "jovyan", "KDASH_NB_DB_PASSWORD": password,
            "KDASH_NB_DB_DATABASE": "sales",
            "KDASH_NB_DB_URL": f"postgresql://jovyan:{password}@nb-db:5432/sales"}
        secret = await kube.get("Secret", ENV_SECRET, "kdash-carol")
        labels = secret["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kdash-hub"
        assert labels["kdash-hub.io/component"] == "launcher-notebook-env"
        _, after = await notebook_environment(kube, "carol")
        assert after["KDASH_NB_DB_PASSWORD"] == password
        assert after["KDASH_NB_DB_HOST"] == "nb-db" and after["KDASH_NB_DB_PORT"] == "5432"
        status, info = await env.call("GET", "instances/carol/nb-db", "carol")
        assert info["notebook"]["enabled"] is True and password not in json.dumps(info)

        # a second instance joins, each under its own names
        status, done = await env.call("POST", "instances/carol/nb-cache/notebook", "carol",
                                      json_body={"enabled": True})
        assert status == 200, done
        redis_password = await template_password(kube, "kdash-carol", "nb-cache",
                                                  "REDIS_PASSWORD")
        written = await env_secret(kube, "kdash-carol")
        assert written["KDASH_NB_CACHE_PASSWORD"] == redis_password
        assert written["KDASH_NB_CACHE_URL"] == f"redis://:{redis_password}@nb-cache:6379/"
        assert "KDASH_NB_CACHE_USER" not in written and "KDASH_NB_DB_HOST" in written

        # opt out: that instance's variables leave; deleting the other removes the rest
        status, done = await env.call("POST", "instances/carol/nb-db/notebook", "carol",
                                      json_body={"enabled": False})
        assert status == 200 and done["enabled"] is False
        written = await env_secret(kube, "kdash-carol")
        assert not [k for k in written if k.startswith("KDASH_NB_DB_")]
        _, after = await notebook_environment(kube, "carol")
        assert "KDASH_NB_DB_PASSWORD" not in after and "KDASH_NB_CACHE_HOST" in after
        assert (await env.call("DELETE", "instances/carol/nb-cache", "carol"))[0] == 204
        assert await env_secret(kube, "kdash-carol") is None
        _, after = await notebook_environment(kube, "carol")
        assert not [k for k in after if k.startswith("KDASH_") and k != "KDASH_SERVICES_DIR"]

        # bad requests
        for body in ({}, {"enabled": "yes"}, {"enabled": 1}):
            status, _ = await env.call("POST", "instances/carol/nb-db/notebook", "carol",
                                       json_body=body)
            assert status == 400, body
    finally:
        for name in ("nb-db", "nb-cache"):
            await env.call("DELETE", f"instances/carol/{name}", "carol")


async def test_the_notebook_process_gets_the_variables(launcher_env, launcher_kube,
                                                     make_local_cluster):
    """The Secret the launcher wrote, in a cluster whose kubelet runs processes: a process
    started with the notebook container's envFrom sees the details."""
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "carol", json_body={
        "template": "postgresql", "name": "proc-db"})
    assert status == 201, inst
    try:
        status, _ = await env.call("POST", "instances/carol/proc-db/notebook", "carol",
                                   json_body={"enabled": True})
        assert status == 200
        password = await template_password(kube, "kdash-carol", "proc-db",
                                           "POSTGRES_PASSWORD")
        written = await kube.get("Secret", ENV_SECRET, "kdash-carol")
    finally:
        await env.call("DELETE", "instances/carol/proc-db", "carol")
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    spawner = build_spawner(username="carol")
    container = to_dict(await spawner.get_pod_manifest())["spec"]["containers"][0]
    script = ("import os; print(os.environ.get('KDASH_PROC_DB_HOST')); "
              "print(os.environ.get('KDASH_PROC_DB_PASSWORD'))")
    async with api_client_for(cluster.kubeconfig_path) as client:
        nodes = KubeResources(client)
        await nodes.create({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": spawner.namespace}})
        await nodes.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": ENV_SECRET, "namespace": spawner.namespace},
                            "data": written["data"]})
        await nodes.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nb", "namespace": spawner.namespace,
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "notebook", "image": "python", "command": ["python", "-c", script],
                "envFrom": container["envFrom"]}]}})
        for _ in range(200):
            pod = await nodes.get("Pod", "nb", spawner.namespace)
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.1)
        assert pod["status"].get("phase") == "Succeeded", pod["status"]
    assert cluster.kubelet.read_log(spawner.namespace, "nb").splitlines() == [
        "proc-db", password]


async def test_only_the_owner_reveals_or_opts_in(launcher_env, launcher_kube):
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "dave", json_body={
        "template": "postgresql", "name": "own-db"})
    assert status == 201, inst
    try:
        password = await template_password(kube, "kdash-dave", "own-db", "POSTGRES_PASSWORD")
        for user, expected in (("bob", 404), ("root", 403), ("noscope", 403)):
            for action, body in (("connection", None), ("notebook", {"enabled": True})):
                status, answer = await env.call("POST", f"instances/dave/own-db/{action}",
                                                user, json_body=body)
                assert status == expected, (user, action, answer)
                assert password not in json.dumps(answer)
        # bob's own namespace gets nothing, nor does dave's
        assert await env_secret(kube, "kdash-bob") is None
        assert await env_secret(kube, "kdash-dave") is None
        # the owner's reveal: never cached, never by GET
        async with aiohttp.ClientSession() as s, s.post(
                env.api + "instances/dave/own-db/connection",
                headers=env.headers("dave")) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            assert (await resp.json())["password"] == password
        status, _ = await env.call("GET", "instances/dave/own-db/connection", "dave")
        assert status == 405
        # pages: bob's GET is a 404 without it; the admin's page has no reveal, no opt-in
        for user, expected in (("bob", 404), ("root", 200), ("dave", 200)):
            async with aiohttp.ClientSession() as s, s.get(
                    env.url + "instances/dave/own-db", headers=env.headers(user),
                    allow_redirects=False) as resp:
                html = await resp.text()
                assert resp.status == expected, (user, html[:300])
                assert password not in html
                if user == "root":
                    assert 'id="reveal-password"' not in html
                    assert 'id="notebook-env"' not in html
                if user == "dave":
                    assert 'id="reveal-password"' in html and 'id="notebook-env"' in html
                    assert "KDASH_OWN_DB_PASSWORD" in html and "next start" in html
    finally:
        await env.call("DELETE", "instances/dave/own-db", "dave")


@pytest.mark.browser
async def test_the_page_reveals_on_request_and_opts_in(launcher_env, launcher_kube):
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "erin", json_body={
        "template": "minio", "name": "bucket"})
    assert status == 201, inst
    try:
        secret_key = await template_password(kube, "kdash-erin", "bucket",
                                             "MINIO_ROOT_PASSWORD")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(env.url + "instances/erin/bucket")
                await page.fill("input[name=username]", "erin")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("#login_submit")
                await page.wait_for_selector("#connection")
                # the S3 API (9000), not the console the Open button proxies (9001)
                assert await page.text_content("#conn-port") == "9000"
                assert await page.text_content("#conn-host") == "bucket"
                assert "bucket.kdash-erin.svc" in await page.text_content("#connection")
                assert await page.text_content("#conn-url") == "http://bucket:9000/"
                assert secret_key not in await page.content()
                assert await page.locator("#conn-password").count() == 0

                async with page.expect_navigation() as nav:
                    await page.click("#reveal-password")
                response = await nav.value
                assert response.headers["cache-control"] == "no-store"
                assert await page.text_content("#conn-password") == secret_key
                scripts = await page.eval_on_selector_all(
                    "script", "els => els.map(e => e.textContent)")
                assert not any(secret_key in s for s in scripts)

                await page.goto(env.url + "instances/erin/bucket")
                assert secret_key not in await page.content()
                assert "Off" in await page.text_content("#notebook-env-state")
                async with page.expect_navigation():  # the POST, then its redirect
                    await page.click("#notebook-env")
                await page.wait_for_selector(".alert-info")
                assert "On" in await page.text_content("#notebook-env-state")
                assert "next start" in await page.text_content(".alert-info")
                assert secret_key not in await page.content()
            finally:
                await browser.close()
        written = await env_secret(kube, "kdash-erin")
        assert written["KDASH_BUCKET_PASSWORD"] == secret_key
        assert written["KDASH_BUCKET_USER"] == "jovyan"
        assert written["KDASH_BUCKET_PORT"] == "9000"
    finally:
        await env.call("DELETE", "instances/erin/bucket", "erin")


async def test_user_edits_never_make_the_launcher_read_or_reveal_another_object(attack):
    """What mallory can do in her own namespace (kubectl edit): no edit makes the launcher
    read, reveal or inject anything but her own instances' details, into her own
    namespace."""
    env, kube = attack.env, attack.kube
    await attack.launch(VICTIM, "vault", "postgresql")
    victim_password = await template_password(kube, VICTIM_NS, "vault", "POSTGRES_PASSWORD")
    await attack.launch(ATTACKER, "mine", "postgresql")
    await attack.launch(ATTACKER, "other", "redis")

    # 1. the signed flag, set by hand (signature kept): the record is refused, not used
    await attack.edit_record(ATTACKER_NS, "other", lambda c: c.update(notebook_env=True))
    status, _ = await env.call("POST", "instances/mallory/mine/notebook", ATTACKER,
                               json_body={"enabled": True})
    assert status == 200
    written = await env_secret(kube, ATTACKER_NS)
    assert written and not [k for k in written if k.startswith("KDASH_OTHER_")]
    status, _ = await env.call("POST", "instances/mallory/other/notebook", ATTACKER,
                               json_body={"enabled": True})
    assert status == 409  # untrusted record: the launcher doesn't act on it

    # 2. a copy of her signed record under another name, with labels of the victim's
    secret, _ = await attack.record(ATTACKER_NS, "mine")
    copy = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": record_name("vault"), "namespace": ATTACKER_NS,
                         "labels": {**secret["metadata"]["labels"],
                                    "kdash-hub.io/owner": VICTIM},
                         "annotations": secret["metadata"]["annotations"]},
            "data": secret.get("data") or {}}
    await attack.create(copy)

    # 3. the env Secret's data and labels edited, pointed at the victim's objects
    await kube.patch("Secret", ENV_SECRET, ATTACKER_NS, {
        "metadata": {"labels": {"kdash-hub.io/owner": VICTIM}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in {
            "KDASH_VAULT_HOST": f"vault.{VICTIM_NS}.svc",
            "kdash-secret": f"{VICTIM_NS}/vault"}.items()}})
    # 4. her record's kept values edited to name the victim's Secret and key
    await kube.patch("Secret", record_name("mine"), ATTACKER_NS, {"data": {
        SECRET_KEY: base64.b64encode(json.dumps({
            "POSTGRES_PASSWORD": f"secretKeyRef:{VICTIM_NS}/vault/POSTGRES_PASSWORD",
        }).encode()).decode()}})

    # every path that reads or writes: reveal, details, the page, opt in/out again
    status, revealed = await env.call("POST", "instances/mallory/mine/connection", ATTACKER)
    assert status == 200 and revealed["password"].startswith("secretKeyRef:")  # her text
    for path in ("instances/mallory/vault", "instances/victor/vault"):
        for action in ("connection", "notebook"):
            status, body = await env.call("POST", f"{path}/{action}", ATTACKER,
                                          json_body={"enabled": True})
            assert status in (404, 409), (path, action, body)
            assert victim_password not in json.dumps(body)
    status, info = await env.call("GET", "instances/mallory/mine", ATTACKER)
    assert status == 200 and victim_password not in json.dumps(info)
    _, html, _ = await attack.page(ATTACKER, "instances/mallory/mine")
    assert victim_password not in html
    for enabled in (False, True):
        status, _ = await env.call("POST", "instances/mallory/mine/notebook", ATTACKER,
                                   json_body={"enabled": enabled})
        assert status == 200
    written = await env_secret(kube, ATTACKER_NS)
    # rewritten whole from her verified record: her instance only, the edits gone
    assert sorted(written) == sorted(f"KDASH_MINE_{f}" for f in (
        "HOST", "PORT", "USER", "PASSWORD", "DATABASE", "URL"))
    assert victim_password not in json.dumps(written)
    assert written["KDASH_MINE_HOST"] == "mine"
    labels = (await kube.get("Secret", ENV_SECRET, ATTACKER_NS))["metadata"]["labels"]
    assert labels.get("kdash-hub.io/owner") != VICTIM
    # the victim's namespace got nothing
    assert await env_secret(kube, VICTIM_NS) is None
    attack.assert_no_server_errors()


async def test_a_cross_site_form_neither_reveals_nor_opts_in(launcher_env, launcher_kube):
    """With the browser's cookies but without the page's _xsrf (what a form on another
    site sends), the reveal and the toggle are refused; with it they work."""
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "alice", json_body={
        "template": "redis", "name": "xs-cache"})
    assert status == 201, inst
    session, _ = await browser_login(env, "alice")
    try:
        password = await template_password(kube, "kdash-alice", "xs-cache", "REDIS_PASSWORD")
        base = env.url + "instances/alice/xs-cache"
        async with session.get(base) as resp:
            html = await resp.text()
            assert resp.status == 200 and password not in html
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', html).group(1)
        for data in ({}, {"_xsrf": "forged"}, {"_xsrf": xsrf[:-2]}):
            for action in ("connection", "notebook"):
                async with session.post(f"{base}/{action}", data={**data, "enabled": "1"},
                                        allow_redirects=False) as resp:
                    assert resp.status == 403, (data, action, resp.status)
                    assert password not in await resp.text()
        assert await env_secret(kube, "kdash-alice") is None
        async with session.post(f"{base}/connection", data={"_xsrf": xsrf},
                                allow_redirects=False) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            assert password in await resp.text()
        async with session.post(f"{base}/notebook", data={"_xsrf": xsrf, "enabled": "1"},
                                allow_redirects=False) as resp:
            assert resp.status == 302, resp.status
        assert (await env_secret(kube, "kdash-alice"))["KDASH_XS_CACHE_PASSWORD"] == password
    finally:
        await session.close()
        await env.call("DELETE", "instances/alice/xs-cache", "alice")
    assert await env_secret(kube, "kdash-alice") is None  # the delete took them out
