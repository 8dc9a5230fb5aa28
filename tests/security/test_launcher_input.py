"""Finding 7 (low): an instance name could end in a newline (`match` with `$`), which
answered 500 after the objects were made. And the principle behind it: every bad input to
the launcher's API is a clear 4xx, leaves nothing half-made and is never logged as a 500."""

from __future__ import annotations

import aiohttp
import pytest

from kdash_hub.services.launcher.records import record_selector
from tests.fixtures.security import ATTACKER, ATTACKER_NS

JSON = {"Content-Type": "application/json"}
# (what, method, path, raw JSON body or None, expected status, text in the message)
BAD_REQUESTS = [
    ("name-trailing-newline", "POST", "instances", '{"template": "echo", "name": "web\\n"}',
     400, "name:"),
    ("name-trailing-crlf", "POST", "instances", '{"template": "echo", "name": "web\\r\\n"}',
     400, "name:"),
    ("name-leading-newline", "POST", "instances", '{"template": "echo", "name": "\\nweb"}',
     400, "name:"),
    ("name-nul", "POST", "instances", '{"template": "echo", "name": "web\\u0000"}', 400, "name:"),
    ("name-unicode", "POST", "instances", '{"template": "echo", "name": "w\\u00e9b"}', 400,
     "name:"),
    ("name-number", "POST", "instances", '{"template": "echo", "name": 5}', 400, "name:"),
    ("name-object", "POST", "instances", '{"template": "echo", "name": {"a": 1}}', 400, "name:"),
    ("name-ends-with-dash", "POST", "instances", '{"template": "echo", "name": "web-"}', 400,
     "name:"),
    ("template-newline", "POST", "instances", '{"template": "echo\\n"}', 404, "no template"),
    ("template-list", "POST", "instances", '{"template": ["echo"]}', 400, "template"),
    ("ttl-infinite", "POST", "instances", '{"template": "echo", "ttl": 1e400}', 400, "ttl"),
    ("ttl-nan", "POST", "instances", '{"template": "echo", "ttl": NaN}', 400, "ttl"),
    ("ttl-negative", "POST", "instances", '{"template": "echo", "ttl": -1}', 400, "ttl"),
    ("ttl-boolean", "POST", "instances", '{"template": "echo", "ttl": true}', 400, "ttl"),
    ("ttl-list", "POST", "instances", '{"template": "echo", "ttl": [1]}', 400, "ttl"),
    ("ttl-5000-digits", "POST", "instances", '{"template": "echo", "ttl": "' + "9" * 5000 + '"}',
     400, "ttl"),
    ("ttl-superscript", "POST", "instances", '{"template": "echo", "ttl": "\\u00b2"}', 400,
     "ttl"),
    ("value-infinite", "POST", "instances", '{"template": "echo", "values": {"PORT": 1e400}}',
     400, "PORT"),
    ("value-too-long", "POST", "instances",
     '{"template": "echo", "values": {"MESSAGE": "' + "x" * 9000 + '"}}', 400, "MESSAGE"),
    ("value-nul", "POST", "instances", '{"template": "echo", "values": {"MESSAGE": "a\\u0000"}}',
     400, "MESSAGE"),
    ("unknown-field", "POST", "instances", '{"template": "echo", "owner": "victor"}', 400,
     "unknown field"),
    ("deep-nesting", "POST", "instances", "[" * 100_000, 400, "not valid JSON"),
    ("not-an-object", "POST", "instances", "null", 400, "JSON object"),
    ("not-utf8", "POST", "instances", b'{"template": "\xff"}', 400, "not valid JSON"),
    ("extend-infinite", "POST", "instances/mallory/web/extend", '{"by": 1e400}', 400, "by"),
    ("extend-zero", "POST", "instances/mallory/web/extend", '{"by": 0}', 400, "by"),
    ("extend-negative", "POST", "instances/mallory/web/extend", '{"by": "-1h"}', 400, "by"),
    ("extend-object", "POST", "instances/mallory/web/extend", '{"by": {"h": 1}}', 400, "by"),
    ("extend-missing", "POST", "instances/mallory/web/extend", "{}", 400, "by"),
    ("path-name-newline", "GET", "instances/mallory/web%0A", None, 404, "no instance"),
    ("path-delete-newline", "DELETE", "instances/mallory/web%0A", None, 404, "no instance"),
    ("path-stop-newline", "POST", "instances/mallory/web%0A/stop", None, 404, "no instance"),
    ("path-owner-newline", "GET", "instances/mallory%0A/web", None, 404, "no instance"),
    ("path-owner-nul", "GET", "instances/%00/web", None, 404, "no instance"),
    ("unknown-action", "POST", "instances/mallory/web/explode", None, 404, ""),
]


@pytest.mark.parametrize("case,method,path,body,status,message", BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_input_is_a_clear_4xx_and_makes_nothing(attack, case, method, path, body,
                                                         status, message):
    env = attack.env
    if path.startswith("instances/mallory/web"):
        await attack.launch(ATTACKER, "web")
    before = {kind: len(await attack.kube.list(kind, ATTACKER_NS))
              for kind in ("ConfigMap", "Deployment", "Service")}
    data = body.encode() if isinstance(body, str) else body
    got, answer = await env.call(method, path, ATTACKER, data=data, headers=JSON)
    assert got == status, (case, got, answer)
    assert isinstance(answer, dict) and answer["status"] == status, answer
    assert message in answer["message"], answer
    # nothing made, nothing half-made (a failed launch is rolled back)
    records = await attack.kube.list("Secret", ATTACKER_NS, label_selector=record_selector())
    expected = ["kdash-instance-web"] if path.startswith("instances/mallory/web") else []
    assert [r["metadata"]["name"] for r in records] == expected
    after = {kind: len(await attack.kube.list(kind, ATTACKER_NS)) for kind in before}
    assert after == before, case
    attack.assert_no_server_errors()


async def test_a_newline_in_the_form_or_the_proxy_path(attack):
    env = attack.env
    await attack.launch(ATTACKER, "web")
    async with aiohttp.ClientSession() as s:
        # the UI form: the page again, with the error, status 400
        async with s.post(env.url + "new/echo", data={"name": "oth\ner"},
                          headers=env.headers(ATTACKER), allow_redirects=False) as resp:
            assert resp.status == 400 and "name:" in await resp.text()
        # a form field's surrounding whitespace is trimmed (tornado): "other" exactly
        async with s.post(env.url + "new/echo", data={"name": "other\n"},
                          headers=env.headers(ATTACKER), allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].endswith("/instances/mallory/other")
        for path in ("proxy/mallory/web%0A/", "proxy/mallory/web%0A", "instances/mallory/web%0A",
                     "instances/mallory/other%0A"):
            async with s.get(env.url + path, headers=env.headers(ATTACKER),
                             allow_redirects=False) as resp:
                assert resp.status == 404, path
    status, listing = await env.call("GET", "instances", ATTACKER)
    assert sorted(i["name"] for i in listing["instances"]) == ["other", "web"]
    attack.assert_no_server_errors()


async def test_a_launch_failing_halfway_leaves_nothing_and_deletes_nothing_of_hers(attack):
    """Her own Service is in the way of the template's last object: what the launch made
    is removed again, her Service stays, the answer is a 409 saying what to do."""
    env = attack.env
    mine = await attack.create({"apiVersion": "v1", "kind": "Service",
                                "metadata": {"name": "halfway", "namespace": ATTACKER_NS},
                                "spec": {"ports": [{"port": 80}]}})
    status, answer = await env.call("POST", "instances", ATTACKER,
                                    json_body={"template": "echo", "name": "halfway"})
    assert status == 409 and "Service halfway already exists" in answer["message"], answer
    for kind in ("ConfigMap", "Deployment"):
        obj = await attack.kube.get(kind, "halfway", ATTACKER_NS)
        assert obj is None or obj["metadata"].get("deletionTimestamp"), kind
    assert await attack.kube.get("Secret", "kdash-instance-halfway", ATTACKER_NS) is None
    still = await attack.kube.get("Service", "halfway", ATTACKER_NS)
    assert still["metadata"]["uid"] == mine["metadata"]["uid"]
    attack.assert_no_server_errors()
