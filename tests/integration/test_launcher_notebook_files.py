"""Connection details as files in the notebook: "Use in my notebook as files" writes
`<instance>.json` and `<instance>.env` to the launcher's kdash-notebook-files Secret, which
KDashSpawner mounts read-only at /etc/kdash/services (optional, so a notebook starts without
it). One form at a time: choosing files takes the variables out, and back.

A real hub with kdash-launcher on a local cluster (tests/fixtures/launcher.py); the page in
Chromium; the files as the process kubelet writes them for the notebook container
KDashSpawner makes. The attacks, as an ordinary user: another user's instance, forged
instance names and modes, a files Secret the user edited, a forged record flag.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex

import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from kdash_hub.services.launcher.notebookenv import (
    FILES_COMPONENT,
    FILES_DIR,
    FILES_SECRET,
)
from tests.fixtures.cluster import api_client_for, requires_emulator
from tests.fixtures.helm import REPO
from tests.fixtures.launcher import PASSWORD
from tests.fixtures.security import ATTACKER, ATTACKER_NS, VICTIM, VICTIM_NS
from tests.fixtures.spawner import build_spawner, to_dict
from tests.integration.test_launcher_connection import (
    CHROMIUM_ARGS,
    env_secret,
    template_password,
)

ARTIFACTS = REPO / "artifacts"  # the screenshot of the details page (`make screenshots`)


async def files_secret(kube, namespace: str) -> dict[str, str] | None:
    secret = await kube.get("Secret", FILES_SECRET, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def parse_dotenv(text: str) -> dict[str, str]:
    """What `source` makes of the .env file (shell words: the quoting is the shell's)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


async def test_files_opt_in_switch_and_opt_out(launcher_env, launcher_kube):
    env, kube = launcher_env, launcher_kube
    status, inst = await env.call("POST", "instances", "carol", json_body={
        "template": "postgresql", "name": "file-db", "values": {"POSTGRES_DB": "sales"}})
    assert status == 201, inst
    try:
        password = await template_password(kube, "kdash-carol", "file-db",
                                           "POSTGRES_PASSWORD")
        status, done = await env.call("POST", "instances/carol/file-db/notebook", "carol",
                                      json_body={"enabled": True, "as": "file"})
        assert status == 200, done
        assert done["as"] == "file" and done["enabled"] is True
        assert done["files"] == [f"{FILES_DIR}/file-db.json", f"{FILES_DIR}/file-db.env"]
        assert password not in json.dumps(done)
        written = await files_secret(kube, "kdash-carol")
        assert sorted(written) == ["file-db.env", "file-db.json"]
        doc = json.loads(written["file-db.json"])
        assert doc == {"instance": "file-db", "template": "postgresql", "host": "file-db",
                       "port": 5432, "user": "jovyan", "password": password,
                       "database": "sales",
                       "url": f"postgresql://jovyan:{password}@file-db:5432/sales"}
        assert parse_dotenv(written["file-db.env"]) == {
            "KDASH_FILE_DB_HOST": "file-db", "KDASH_FILE_DB_PORT": "5432",
            "KDASH_FILE_DB_USER": "jovyan", "KDASH_FILE_DB_PASSWORD": password,
            "KDASH_FILE_DB_DATABASE": "sales", "KDASH_FILE_DB_URL": doc["url"]}
        labels = (await kube.get("Secret", FILES_SECRET, "kdash-carol"))["metadata"]["labels"]
        assert labels["kdash-hub.io/component"] == FILES_COMPONENT
        assert labels["app.kubernetes.io/managed-by"] == "kdash-hub"
        assert await env_secret(kube, "kdash-carol") is None  # files, not variables
        status, info = await env.call("GET", "instances/carol/file-db", "carol")
        assert info["notebook"]["as"] == "file" and password not in json.dumps(info)

        # switch to variables: the files leave, the variables come; and back
        status, done = await env.call("POST", "instances/carol/file-db/notebook", "carol",
                                      json_body={"enabled": True, "as": "env"})
        assert status == 200 and done["as"] == "env"
        assert await files_secret(kube, "kdash-carol") is None
        assert (await env_secret(kube, "kdash-carol"))["KDASH_FILE_DB_PASSWORD"] == password
        status, done = await env.call("POST", "instances/carol/file-db/notebook", "carol",
                                      json_body={"enabled": True, "as": "file"})
        assert status == 200 and await env_secret(kube, "kdash-carol") is None
        # off: nothing left
        status, done = await env.call("POST", "instances/carol/file-db/notebook", "carol",
                                      json_body={"enabled": False})
        assert status == 200 and done["as"] is None
        assert await files_secret(kube, "kdash-carol") is None

        # bad requests: a mode that isn't one, or other fields
        for body in ({"enabled": True, "as": "../../etc"}, {"enabled": True, "as": "FILE"},
                     {"enabled": True, "as": 5}, {"enabled": True, "as": None},
                     {"enabled": True, "path": "/etc/passwd"}):
            status, answer = await env.call("POST", "instances/carol/file-db/notebook",
                                            "carol", json_body=body)
            assert status == 400, (body, answer)
        assert await files_secret(kube, "kdash-carol") is None

        # on as files, then deleted: its files leave with it
        await env.call("POST", "instances/carol/file-db/notebook", "carol",
                       json_body={"enabled": True, "as": "file"})
        assert await files_secret(kube, "kdash-carol")
    finally:
        await env.call("DELETE", "instances/carol/file-db", "carol")
    assert await files_secret(kube, "kdash-carol") is None


async def test_the_notebook_mounts_the_files_and_its_process_reads_them(
        launcher_env, launcher_kube, make_local_cluster):
    """KDashSpawner's notebook pod mounts the Secret read-only (optional); in a cluster
    whose kubelet runs processes, the notebook's process reads the files there."""
    env, kube = launcher_env, launcher_kube
    status, _ = await env.call("POST", "instances", "carol", json_body={
        "template": "redis", "name": "proc-cache"})
    assert status == 201
    try:
        status, _ = await env.call("POST", "instances/carol/proc-cache/notebook", "carol",
                                   json_body={"enabled": True, "as": "file"})
        assert status == 200
        password = await template_password(kube, "kdash-carol", "proc-cache",
                                           "REDIS_PASSWORD")
        written = await kube.get("Secret", FILES_SECRET, "kdash-carol")
    finally:
        await env.call("DELETE", "instances/carol/proc-cache", "carol")

    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    spawner = build_spawner(username="carol")
    pod = to_dict(await spawner.get_pod_manifest())
    container = pod["spec"]["containers"][0]
    volume = next(v for v in pod["spec"]["volumes"] if v.get("secret"))
    assert volume["secret"] == {"secretName": FILES_SECRET, "optional": True}
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": FILES_DIR, "readOnly": True}
    assert {"name": "KDASH_SERVICES_DIR", "value": FILES_DIR} in container["env"]

    # the process kubelet puts the container's paths under the pod's root, and
    # $KDASH_SERVICES_DIR with them: the process finds the files where the variable says
    script = ("import json, os, pathlib; d = pathlib.Path(os.environ['KDASH_SERVICES_DIR']); "
              "c = json.loads((d / 'proc-cache.json').read_text()); "
              "print(c['host'], c['port'], c['password']); "
              "print(sorted(p.name for p in d.iterdir()))")
    async with api_client_for(cluster.kubeconfig_path) as client:
        nodes = KubeResources(client)
        await nodes.create({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": spawner.namespace}})
        await nodes.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": FILES_SECRET, "namespace": spawner.namespace},
                            "data": written["data"]})
        await nodes.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nb", "namespace": spawner.namespace,
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never", "volumes": [volume], "containers": [{
                "name": "notebook", "image": "python", "command": ["python", "-c", script],
                "env": [{"name": "KDASH_SERVICES_DIR", "value": FILES_DIR}],
                "volumeMounts": [mount]}]}})
        for _ in range(200):
            pod = await nodes.get("Pod", "nb", spawner.namespace)
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.1)
        assert pod["status"].get("phase") == "Succeeded", pod["status"]
    assert cluster.kubelet.read_log(spawner.namespace, "nb").splitlines() == [
        f"proc-cache 6379 {password}", "['proc-cache.env', 'proc-cache.json']"]


async def test_no_user_steers_the_files(attack):
    """Mallory: someone else's instance, forged names in the path, her files Secret
    edited (keys, labels, another owner), a forged `notebook_file` flag in her record.
    Nothing makes the launcher write a file for anything but her verified instances,
    into anything but her own namespace."""
    env, kube = attack.env, attack.kube
    await attack.launch(VICTIM, "vault", "postgresql")
    victim_password = await template_password(kube, VICTIM_NS, "vault", "POSTGRES_PASSWORD")
    await attack.launch(ATTACKER, "mine", "postgresql")
    await attack.launch(ATTACKER, "other", "redis")

    # someone else's instance, and forged names (a path, another namespace's record)
    for path in ("instances/victor/vault", "instances/mallory/vault",
                 "instances/mallory/..%2F..%2Fvictor%2Fvault",
                 "instances/mallory/vault.json", "instances/mallory/mine%2F..%2Fother"):
        status, body = await env.call("POST", f"{path}/notebook", ATTACKER,
                                      json_body={"enabled": True, "as": "file"})
        assert status in (400, 404), (path, status, body)
        assert victim_password not in json.dumps(body)
    assert await files_secret(kube, VICTIM_NS) is None
    assert await files_secret(kube, ATTACKER_NS) is None

    # the flag set by hand in her other record (signature kept): refused, never used
    await attack.edit_record(ATTACKER_NS, "other", lambda c: c.update(notebook_file=True))
    status, _ = await env.call("POST", "instances/mallory/mine/notebook", ATTACKER,
                               json_body={"enabled": True, "as": "file"})
    assert status == 200
    assert sorted(await files_secret(kube, ATTACKER_NS)) == ["mine.env", "mine.json"]

    # she edits the files Secret: a file for the victim's instance, a path-like key is
    # refused by the API server; another owner's label
    await kube.patch("Secret", FILES_SECRET, ATTACKER_NS, {
        "metadata": {"labels": {"kdash-hub.io/owner": VICTIM}},
        "data": {"vault.json": base64.b64encode(json.dumps(
            {"host": f"vault.{VICTIM_NS}.svc"}).encode()).decode()}})
    with pytest.raises(Exception) as refused:
        await kube.patch("Secret", FILES_SECRET, ATTACKER_NS,
                         {"data": {"../vault.json": "eA=="}})
    assert getattr(refused.value, "status", None) == 422
    # her next change rewrites it whole from her verified records
    for enabled in (False, True):
        status, _ = await env.call("POST", "instances/mallory/mine/notebook", ATTACKER,
                                   json_body={"enabled": enabled, "as": "file"})
        assert status == 200
    written = await files_secret(kube, ATTACKER_NS)
    assert sorted(written) == ["mine.env", "mine.json"]
    assert json.loads(written["mine.json"])["host"] == "mine"
    assert victim_password not in json.dumps(written)
    labels = (await kube.get("Secret", FILES_SECRET, ATTACKER_NS))["metadata"]["labels"]
    assert labels["kdash-hub.io/owner"] == ATTACKER
    assert await files_secret(kube, VICTIM_NS) is None
    assert await env_secret(kube, VICTIM_NS) is None
    attack.assert_no_server_errors()


@pytest.mark.browser
async def test_the_page_offers_files_and_variables(launcher_env, launcher_kube):
    env, kube = launcher_env, launcher_kube
    status, _ = await env.call("POST", "instances", "erin", json_body={
        "template": "postgresql", "name": "page-db"})
    assert status == 201
    try:
        password = await template_password(kube, "kdash-erin", "page-db",
                                           "POSTGRES_PASSWORD")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(env.url + "instances/erin/page-db")
                await page.fill("input[name=username]", "erin")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("#login_submit")
                await page.wait_for_selector("#notebook-actions")
                state = await page.text_content("#notebook-env-state")
                assert "Off" in state and f"{FILES_DIR}/page-db.json" in state
                assert await page.locator("#notebook-off").count() == 0

                async with page.expect_navigation():
                    await page.click("#notebook-file")
                await page.wait_for_selector(".alert-info")
                assert f"{FILES_DIR}/page-db.json" in await page.text_content(".alert-info")
                state = await page.text_content("#notebook-env-state")
                assert "On, as files" in state and "KDASH_SERVICES_DIR" in state
                assert "Switch to variables" in await page.text_content("#notebook-env")
                assert password not in await page.content()
                assert sorted(await files_secret(kube, "kdash-erin")) == [
                    "page-db.env", "page-db.json"]
                ARTIFACTS.mkdir(exist_ok=True)  # docs/images/launcher-connection.png
                await page.screenshot(path=str(ARTIFACTS / "launcher-connection.png"),
                                      full_page=True)

                async with page.expect_navigation():
                    await page.click("#notebook-env")
                assert "On: your notebook gets" in await page.text_content(
                    "#notebook-env-state")
                assert await files_secret(kube, "kdash-erin") is None
                assert (await env_secret(kube, "kdash-erin"))["KDASH_PAGE_DB_PASSWORD"] \
                    == password

                async with page.expect_navigation():
                    await page.click("#notebook-off")
                assert "Off" in await page.text_content("#notebook-env-state")
                assert await env_secret(kube, "kdash-erin") is None
            finally:
                await browser.close()
    finally:
        await env.call("DELETE", "instances/erin/page-db", "erin")
