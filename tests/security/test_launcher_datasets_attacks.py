"""An ordinary user against the launcher's Datasets page and API (services/launcher/
userdatasets.py, datasetspage.py), on a real hub + launcher; both tiers (KDASH_REAL_TIER=1:
the real control plane, the launcher with its own ServiceAccount).

What is tried: forged names in headers and paths (encoded, case, look-alikes), CSRF with
another user's token, oversized bodies and fields, config-file injection through each
field, HTML through each field (rendered in Chromium), the secret key in any answer, page or
log, concurrent adds, and the user's own Secret edited into something malformed.
Complements tests/integration/test_launcher_datasets.py (which holds the basic refusals).

Found here and fixed: a `datasets.json` nested deeper than Python's JSON decoder goes made
the page and the API answer 500, and the hub's start of that user crash (RecursionError, in
userdatasets._own_raw and spawner/datasets.parse_user); an endpoint with a NUL (or another
unprintable character) was accepted, and put into the notebook's environment; an endpoint
had no length limit (20 of them could pass a Secret's 1 MiB).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

from kdash_hub.kube import KubeResources
from kdash_hub.naming import user_namespace
from kdash_hub.spawner import datasets as D
from tests.fixtures.cluster import api_client_for
from tests.fixtures.launcher import _hub_api, start_launcher_env, stop_launcher_env
from tests.integration.test_launcher_datasets import _login
from tests.integration.test_launcher_ui import CHROMIUM_ARGS

USER_SECRET = "atk-datasets"  # not the datasets test's: both tiers share one cluster
SECRET_KEY = "Sup3r/S3cret+key-never-shown-9f7"
ACCESS_KEY = "AKATTACKTEST7731"
ENDPOINT = "https://s3.example.org"
DECLARED = [
    {"name": "climate", "bucket": "climate-2024", "endpoint": ENDPOINT,
     "credentials": {"secret": "hub-keys"}},
    {"name": "payroll", "bucket": "payroll", "endpoint": ENDPOINT, "groups": ["finance"],
     "credentials": {"secret": "hub-keys"}},
]
XSS = '<img src=x onerror="window.__pwned=1;alert(1)">'


def mine(name: str = "mine", **extra: Any) -> dict[str, Any]:
    return {"name": name, "bucket": "my-bucket", "endpoint": ENDPOINT,
            "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, **extra}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    extra = (f"\nc.LauncherSettings.datasets_declared = {DECLARED!r}\n"
             f"c.LauncherSettings.datasets_user_secret = {USER_SECRET!r}\n"
             "c.LauncherSettings.datasets_secret = 'atk-datasets-copy'\n")
    env = start_launcher_env(tmp_path_factory.mktemp("launcher-datasets-attacks"), extra)
    try:
        _hub_api(env, "POST", "/groups/finance")
        _hub_api(env, "POST", "/groups/finance/users", {"users": ["victor"]})
        yield env
    finally:
        stop_launcher_env(env)


async def stored(env, user: str, name: str = USER_SECRET) -> dict | None:
    async with api_client_for(env.kubeconfig) as client:
        return await KubeResources(client).get("Secret", name, user_namespace(user, "kdash-"))


async def user_file(env, user: str) -> Any:
    secret = await stored(env, user)
    if secret is None:
        return None
    return json.loads(base64.b64decode(secret["data"]["datasets.json"]))


async def put_secret(env, user: str, data: dict[str, bytes], name: str = USER_SECRET,
                     labels: dict[str, str] | None = None) -> None:
    """The user's Secret as they could write it with kubectl (any bytes)."""
    namespace = user_namespace(user, "kdash-")
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        if await kube.get("Namespace", namespace) is None:
            await kube.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": namespace}})
        await kube.delete("Secret", name, namespace)
        await kube.create({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


async def delete_secret(env, user: str, name: str = USER_SECRET) -> None:
    async with api_client_for(env.kubeconfig) as client:
        await KubeResources(client).delete("Secret", name, user_namespace(user, "kdash-"))


async def page_text(env, user: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(env.url + "datasets",
                                                   headers=env.headers(user)) as r:
        return r.status, await r.text()


def no_key_in(*answers: Any) -> None:
    for answer in answers:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        assert SECRET_KEY not in text and ACCESS_KEY not in text


# --- the user's own Secret, edited into anything ----------------------------------------

MALFORMED = {
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "nested too deep in an entry": b'[{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}]",
    "not UTF-8": b"\xff\xfe[]",
    "not JSON": b"{{{",
    "a map": b'{"name": "x"}',
    "a string": b'"[]"',
    "null": b"null",
    "NaN": b"[NaN]",
    "a huge number": b"[" + b"9" * 5000 + b"]",
    "entries of every wrong type": json.dumps(
        [None, 1, "x", [], {"name": 5}, {"name": "ok", "path_style": "yes"},
         {**mine("bad-region"), "region": {"a": 1}}, {**mine("x"), "secret_access_key": 7},
         {**mine("big"), "bucket": "b" * 100_000}]).encode(),
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_own_secret_is_said_clearly_and_everything_keeps_working(
        env, content):
    user = "dave"
    await put_secret(env, user, {"datasets.json": content},
                     labels={"app.kubernetes.io/managed-by": "kdash-hub"})
    try:
        status, body = await env.call("GET", "datasets", user)
        assert status == 200, body
        assert [d["name"] for d in body["datasets"]] == ["climate"]  # the admin's still
        assert body["left_out"] and all(len(p) < 120_000 for p in body["left_out"])
        status, page = await page_text(env, user)
        assert status == 200 and 'id="left-out"' in page, page[-2000:]
        status, answer = await env.call("POST", "datasets", user, json_body=mine("more"))
        assert status in (201, 409), answer
        if status == 409:
            assert "fix it or delete it" in answer["message"]
        # the hub's next start reads it with the same function: never a crash
        found, keys, problems = D.parse_user(content.decode(errors="replace"), {"climate"})
        assert problems or found == []
    finally:
        await delete_secret(env, user)
    # and with it gone, the user adds again
    status, answer = await env.call("POST", "datasets", user, json_body=mine("again"))
    assert status == 201, answer
    assert (await env.call("DELETE", "datasets/again", user))[0] == 204


async def test_more_than_20_in_a_hand_edited_secret(env):
    user = "erin"
    entries = [mine(f"d{i}") for i in range(25)]
    await put_secret(env, user, {"datasets.json": json.dumps(entries).encode()},
                     labels={"app.kubernetes.io/managed-by": "kdash-hub"})
    try:
        status, body = await env.call("GET", "datasets", user)
        assert status == 200
        assert len([d for d in body["datasets"] if d["source"] == "own"]) == 20
        assert "only the first 20 datasets are used" in body["left_out"]
        status, answer = await env.call("POST", "datasets", user, json_body=mine("d99"))
        assert status == 400 and "25 datasets" in answer["message"], answer
        # removing one of the unused five works, and keeps the others
        assert (await env.call("DELETE", "datasets/d24", user))[0] == 204
        assert [e["name"] for e in await user_file(env, user)] == [f"d{i}" for i in range(24)]
        no_key_in(body, answer)
    finally:
        await delete_secret(env, user)


# --- names: forged, encoded, colliding ----------------------------------------------------

@pytest.mark.parametrize("name", [
    "Climate", "CLIMATE", "cl\u0131mate", "c\u200blimate", "\uff43limate", "climate ",
    " climate", "climate\n", "default", "payroll", "climate\x00", "../climate",
    "climate/x", "a" * 41, "a" * 100_000, "-climate", "climate-", "cli--mate", "1climate"])
async def test_names_that_shadow_or_collide_are_refused(env, name):
    user = "carol"
    before = await user_file(env, user)
    status, body = await env.call("POST", "datasets", user, json_body=mine(name))
    assert status == 400, body
    assert "\n" not in body["message"]
    assert await user_file(env, user) == before
    no_key_in(body)


@pytest.mark.parametrize("path", [
    "datasets/bobs%2F..", "datasets/%62obs", "datasets/BOBS", "datasets/bobs%00",
    "datasets/bobs%20", "datasets/..%2Fkdash-bob%2Fbobs", "datasets/bobs/",
    "datasets/%2e%2e", "datasets/bobs;user=bob", "datasets/bobs#x"])
async def test_a_forged_path_never_removes_another_users_dataset(env, path):
    if await user_file(env, "bob") is None:
        assert (await env.call("POST", "datasets", "bob", json_body=mine("bobs")))[0] == 201
    bobs = await user_file(env, "bob")
    status, _ = await env.call("DELETE", path, "mallory")
    assert status in (404, 405), (path, status)
    assert await user_file(env, "bob") == bobs


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-User": "bob"}, {"X-Remote-User": "bob"}, {"X-Auth-Request-User": "bob"},
    {"X-Kdash-User": "bob"}, {"X-Forwarded-Preferred-Username": "bob"},
    {"Impersonate-User": "bob"}, {"X-Original-URL": "/services/kdash-launcher/api/datasets"
                                                    "?user=bob"},
])
async def test_forged_identity_headers_change_nothing(env, headers):
    if await user_file(env, "bob") is None:
        assert (await env.call("POST", "datasets", "bob", json_body=mine("bobs")))[0] == 201
    bobs = await user_file(env, "bob")
    status, body = await env.call("GET", "datasets", "mallory", headers=headers)
    assert status == 200 and body["namespace"] == user_namespace("mallory", "kdash-")
    assert "bobs" not in json.dumps(body)
    status, _ = await env.call("DELETE", "datasets/bobs", "mallory", headers=headers)
    assert status == 404
    assert await user_file(env, "bob") == bobs
    # no token, only the headers: no answer
    assert (await env.call("GET", "datasets", None, headers=headers))[0] == 403


# --- oversized and injected input ----------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"{" + b'"a":' * 0 + b'"name": "' + b"x" * 5_000_000 + b'"}',
    b"[" * 200_000,
    json.dumps({**mine("big"), "endpoint": "https://" + "a" * 3000 + ".org"}).encode(),
    json.dumps({**mine("big"), "secret_access_key": "k" * 300}).encode(),
    json.dumps([mine("list")]).encode(),
    b"\xff\xfe",
])
async def test_oversized_or_malformed_bodies_are_refused_and_write_nothing(env, body):
    user = "alice"
    before = await user_file(env, user)
    status, answer = await env.call("POST", "datasets", user, data=body,
                                    headers={"Content-Type": "application/json"})
    assert status in (400, 413), (status, str(answer)[:300])
    assert await user_file(env, user) == before
    no_key_in(answer)


INJECTIONS = [
    ("name", "x\n[default]\naws_secret_access_key = stolen"),
    ("name", "x]\n[evil"),
    ("name", "x = y"),
    ("bucket", "b\n[evil]"),
    ("bucket", "b = c"),
    ("region", "us-east-1\nendpoint_url = https://evil.example.org"),
    ("region", "us-east-1 ; x"),
    ("region", "eu\r[evil]"),
    ("endpoint", "https://s3.example.org\r\n[evil]"),
    ("endpoint", "https://s3.example.org\x00[evil]"),
    ("endpoint", "https://s3.example.org\x0b"),
    ("endpoint", "https://s3.example.org\u2028[evil]"),
    ("endpoint", "https://s3.example.org\x1b[2J"),
    ("endpoint", "https://s3.example.org\u0085x"),
    ("endpoint", "https://s3.example.org/#\n[evil]"),
    ("endpoint", "https://user:pw@s3.example.org"),
    ("endpoint", "file:///etc/passwd"),
    ("access_key_id", "AK\r\n[evil]"),
    ("access_key_id", "AK\x00"),
    ("access_key_id", "AK\u00e9\u00e9\u00e9\u00e9"),
    ("secret_access_key", "k\n[evil]\naws_access_key_id = x"),
    ("secret_access_key", "k\tk"),
    ("secret_access_key", "k" * 257),
    ("path_style", "true\n[evil]"),
    ("path_style", 1),
]


@pytest.mark.parametrize("field,value", INJECTIONS,
                         ids=[f"{f}:{v!r}"[:60] for f, v in INJECTIONS])
async def test_config_file_injection_through_every_field_is_refused(env, field, value):
    user = "carol"
    before = await user_file(env, user)
    status, body = await env.call("POST", "datasets", user,
                                  json_body={**mine("inj"), field: value})
    assert status == 400, body
    assert "\n" not in body["message"] and "\r" not in body["message"]
    assert await user_file(env, user) == before
    # the form as well (its fields are strings; path_style is a checkbox)
    if field != "path_style":
        async with aiohttp.ClientSession() as s:
            status, _ = await _form_post(s, env, user, {**mine("inj"), field: value})
        after = await user_file(env, user)
        if after != before:  # the form trims its fields (and tornado drops control
            # characters): what's left was a clean value
            assert after[-1][field] != value and after[-1][field].isprintable()
            assert status == 303
            assert D.parse_user(json.dumps(after), set())[2] == []
            assert (await env.call("DELETE", "datasets/inj", user))[0] == 204
    # and what the spawner makes of it, if it were written by hand: left out, no file line
    found, _keys, problems = D.parse_user(json.dumps([{**mine("inj"), field: value}]), set())
    assert found == [] and problems


async def _form_post(session, env, user: str, form: dict) -> tuple[int, str]:
    """The form posted with the user's token (a script, not a browser): xsrf is the
    browser's matter; the checks behind it are the API's."""
    async with session.post(env.url + "datasets/add", data=form, headers=env.headers(user),
                            allow_redirects=False) as r:
        return r.status, await r.text()


def test_every_file_line_the_spawner_writes_holds_one_setting():
    """What passes the checks makes files of `key = value` lines under `[section]`s only:
    no value opens a section or adds a key (the widest values each field may hold)."""
    found, keys, problems = D.parse_user(json.dumps([{
        "name": "a-" + "b" * 38, "bucket": "a.b-c" + "d" * 58,
        "endpoint": "https://[::1]:9000/", "region": "x" * 31,
        "access_key_id": "".join(chr(c) for c in range(0x21, 0x7f))[:256],
        "secret_access_key": "]=[;#" + "\\" * 10, "path_style": False}]), set())
    assert problems == [] and len(found) == 1
    files = D.files(found, keys)
    for name in ("aws-config", "aws-credentials", "rclone.conf"):
        lines = [line for line in files[name].split("\n") if line]
        sections = [line for line in lines if line.startswith("[")]
        assert len(sections) == (1 if name == "rclone.conf" else 2), files[name]
        for line in lines:
            assert line in sections or line.lstrip() == line and " = " in line or line in (
                "s3 =", "    addressing_style = path"), line


# --- CSRF, HTML and keys in the browser ---------------------------------------------------

@pytest.mark.browser
async def test_html_in_every_field_stays_text_and_csrf_with_another_users_token(env):
    user = "victor"
    # a hand-made Secret: anything in every field and in a field name
    await put_secret(env, user, {"datasets.json": json.dumps([
        {"name": XSS, "bucket": XSS, "endpoint": XSS, "region": XSS,
         "access_key_id": XSS, "secret_access_key": SECRET_KEY},
        {"name": "ok", "bucket": "okbucket", "endpoint": f"https://x{XSS}",
         "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, XSS: 1},
        {**mine("fine"), "endpoint": 'https://a"onmouseover=alert(1)'}]).encode()})
    await put_secret(env, user, {"KDASH_DATASETS": f"climate,{XSS}".encode()},
                     name="atk-datasets-copy-env")
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)
            try:
                dialogs: list[str] = []
                page = await _login(browser, env.url, user)
                page.on("dialog", lambda d: (dialogs.append(d.message),
                                             asyncio.ensure_future(d.dismiss())))
                await page.goto(env.url + "datasets")
                await page.wait_for_selector("#left-out")
                html = await page.content()
                # shown as text: the page holds the escaped characters, the DOM no <img>
                assert "&lt;img src=x" in html
                assert await page.locator("img[src=x]").count() == 0
                assert await page.evaluate("window.__pwned") is None
                # the admin's payroll (group finance) is his; the quote stays in its cell
                rows = await page.locator("tr.dataset").evaluate_all(
                    "rows => rows.map(r => [r.dataset.name, r.attributes.length])")
                assert [r[0] for r in rows] == ["climate", "payroll", "fine"]
                assert all(n == 3 for _, n in rows)  # class, data-name, data-source only
                # no data in inline scripts
                scripts = await page.locator("script:not([src])").all_inner_texts()
                assert not any(XSS in s or "atk" in s or "fine" in s for s in scripts)
                no_key_in(html)

                # HTML in the form's fields: refused, shown back as text only
                for selector, value in (("#ds-name", XSS), ("#ds-bucket", XSS),
                                        ("#ds-region", XSS), ("#ds-endpoint", "https://" + XSS),
                                        ("#ds-access", ACCESS_KEY), ("#ds-secret", SECRET_KEY)):
                    await page.fill(selector, value)
                await page.click("#add")
                await page.wait_for_selector("#error")
                assert await page.input_value("#ds-bucket") == XSS
                assert await page.input_value("#ds-secret") == ""
                assert await page.locator("img[src=x]").count() == 0
                assert await page.evaluate("window.__pwned") is None
                no_key_in(await page.content())

                # mallory's session with victor's form token: refused
                victors_xsrf = await page.locator(
                    "#add-dataset input[name=_xsrf]").get_attribute("value")
                other = await browser.new_context()
                mallory = await other.new_page()
                await mallory.goto(env.url + "datasets")
                await mallory.fill("input[name=username]", "mallory")
                await mallory.fill("input[name=password]", "launcher-test-pw")
                await mallory.click("#login_submit")
                await mallory.wait_for_selector("#launcher")
                before = await user_file(env, "mallory")
                for path, form in (("datasets/add", {**mine("csrf"), "_xsrf": victors_xsrf}),
                                   ("datasets/remove", {"name": "fine",
                                                        "_xsrf": victors_xsrf})):
                    resp = await mallory.request.post(env.url + path, form=form)
                    assert resp.status == 403, (path, resp.status)
                assert await user_file(env, "mallory") == before
                # the API by cookie: the XSRF header is needed, another user's refused
                for headers in ({}, {"X-XSRFToken": victors_xsrf}):
                    resp = await mallory.request.post(env.api + "datasets", data=mine("csrf"),
                                                      headers=headers)
                    assert resp.status == 403, (headers, resp.status)
                    resp = await page.request.delete(env.api + "datasets/fine",
                                                     headers={k: "x" for k in headers})
                    assert resp.status == 403, (headers, resp.status)
                assert await user_file(env, "mallory") == before
                assert "fine" in json.dumps(await user_file(env, user))
                assert dialogs == []
                await other.close()
            finally:
                await browser.close()
    finally:
        await delete_secret(env, user)
        await delete_secret(env, user, "atk-datasets-copy-env")


# --- races and keys ------------------------------------------------------------------------

@pytest.mark.parametrize("first_exists", [False, True])
async def test_concurrent_adds_lose_nothing(env, first_exists):
    user = "frank@lab.org"
    await delete_secret(env, user)
    if first_exists:
        assert (await env.call("POST", "datasets", user, json_body=mine("first")))[0] == 201
    names = [f"race-{i}" for i in range(6)]
    answers = await asyncio.gather(*(env.call("POST", "datasets", user, json_body=mine(n))
                                     for n in names))
    added = {n for n, (status, _) in zip(names, answers, strict=True) if status == 201}
    for status, body in answers:
        assert status in (201, 409), body
        if status == 409:
            assert "changed meanwhile" in body["message"]
        no_key_in(body)
    assert added  # at least one went through
    kept = {e["name"] for e in await user_file(env, user)}
    assert kept == added | ({"first"} if first_exists else set())
    await delete_secret(env, user)


async def test_a_hand_made_secret_appearing_during_an_add_is_not_overwritten(env):
    """The Secret is made by hand while the launcher's write is on its way: the launcher's
    create fails (it exists), never replacing it."""
    user = "root"
    await put_secret(env, user, {})  # the namespace made (as the first start makes it)
    await delete_secret(env, user)
    hand = [mine("by-hand")]
    added = asyncio.ensure_future(asyncio.gather(*(
        env.call("POST", "datasets", user, json_body=mine(f"l{i}")) for i in range(4))))
    await put_secret_if_absent(env, user, {"datasets.json": json.dumps(hand).encode()})
    answers = await added
    stored_now = await user_file(env, user)
    secret = await stored(env, user)
    if (secret["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != (
            "kdash-hub"):
        assert stored_now == hand  # the hand-made one won: untouched
    else:  # the launcher's won: the hand-made create failed, the adds are all there
        assert {e["name"] for e in stored_now} == {
            f"l{i}" for i, (status, _) in enumerate(answers) if status == 201}
    assert all(status in (201, 409) for status, _ in answers), answers
    await delete_secret(env, user)


async def put_secret_if_absent(env, user: str, data: dict[str, bytes]) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    async with api_client_for(env.kubeconfig) as client:
        try:
            await KubeResources(client).create({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": USER_SECRET, "namespace": user_namespace(user, "kdash-")},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})
        except ApiException as e:
            assert e.status == 409


async def test_the_secret_key_is_in_no_answer_page_or_log(env):
    user = "bob"
    answers = [await env.call("POST", "datasets", user, json_body=mine("keys"))]
    answers.append(await env.call("POST", "datasets", user, json_body=mine("keys")))  # dup
    answers.append(await env.call("POST", "datasets", user, json_body={
        **mine("keys2"), "region": "no such region"}))
    answers.append(await env.call("GET", "datasets", user))
    answers.append(await env.call("DELETE", "datasets/nothing", user))
    assert answers[0][0] == 201 and answers[1][0] == 400
    assert answers[2][0] == 400 and answers[4][0] == 404
    for _status, body in answers:
        no_key_in(body)
    status, page = await page_text(env, user)
    no_key_in(page)
    assert (await env.call("DELETE", "datasets/keys", user))[0] == 204
    log = env.hub.log_path.read_text(errors="replace")
    assert SECRET_KEY not in log
    assert ACCESS_KEY not in log


@pytest.mark.parametrize("query,shown", [
    ("message=Your+session+expired.+Sign+in+again+at+https://evil.example.org", None),
    ("added=" + XSS.replace(" ", "+"), "Added the dataset:"),
    ("removed=a%0A%5Bdefault%5D", "Removed the dataset:"),
    ("added=ok", "Added ok: your notebook gets it from its next start."),
])
async def test_a_link_puts_no_words_of_its_own_on_the_page(env, query, shown):
    """Found here and fixed (datasetspage.py): the page showed `?message=` as it came, so a
    link on the launcher's own origin could tell its user anything (escaped, but believed).
    The sentence is now made by the page from a dataset's name."""
    async with aiohttp.ClientSession() as s, s.get(f"{env.url}datasets?{query}",
                                                   headers=env.headers("alice")) as r:
        assert r.status == 200
        page = await r.text()
    assert "evil.example.org" not in page and "<img src=x" not in page
    assert "[default]" not in page
    if shown is None:
        assert 'id="message"' not in page
    else:
        assert shown in " ".join(page.split())
