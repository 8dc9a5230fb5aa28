"""The launcher's REST API with a real hub (tokens, scopes) on the local cluster."""

import base64
import json

import aiohttp

from kdash_hub import labels as L
from kdash_hub.services.launcher.records import record_name


async def test_launch_list_details_and_objects(launcher_env, launcher_kube):
    env = launcher_env
    status, inst = await env.call("POST", "instances", "alice", json_body={
        "template": "postgresql", "name": "db1",
        "values": {"POSTGRES_DB": "sales", "POSTGRES_PASSWORD": "s3cret-pw"}, "ttl": "2h"})
    assert status == 201, inst
    assert inst["name"] == "db1" and inst["owner"] == "alice"
    assert inst["namespace"] == "kdash-alice" and inst["on_expiry"] == "stop"
    assert 7190 < inst["ttl_left_seconds"] <= 7200
    assert inst["url"] is None and inst["address"] == "db1.kdash-alice.svc:5432"  # http: no
    async with aiohttp.ClientSession() as s, s.get(
            env.url + "proxy/alice/db1/", headers=env.headers("alice")) as resp:
        assert resp.status == 404 and "not a web service" in (await resp.json())["message"]
    assert "POSTGRES_PASSWORD" not in inst["values"] and inst["values"]["POSTGRES_DB"] == "sales"

    for kind, name in (("Secret", "db1"), ("PersistentVolumeClaim", "db1-data"),
                       ("Deployment", "db1"), ("Service", "db1")):
        obj = await launcher_kube.get(kind, name, "kdash-alice")
        assert obj is not None, (kind, name)
        labels = obj["metadata"]["labels"]
        assert labels[L.INSTANCE] == "db1" and labels[L.TEMPLATE] == "postgresql"
        assert L.is_owned_by(obj, "alice")
    # the definition is kept in a Secret (secret values in its data, never in a ConfigMap)
    record = await launcher_kube.get("Secret", record_name("db1"), "kdash-alice")
    secret_values = json.loads(base64.b64decode(record["data"]["secret-values.json"]))
    assert secret_values == {"POSTGRES_PASSWORD": "s3cret-pw"}
    assert "s3cret-pw" not in json.dumps(record["metadata"])
    configmaps = await launcher_kube.list("ConfigMap", "kdash-alice")
    assert "s3cret-pw" not in json.dumps(configmaps)

    info = await env.wait_status("alice", "db1", "ready")
    assert info["status"] == "ready", info
    assert any(e["reason"] == "Scheduled" for e in info["events"])
    assert info["logs"] and info["logs"][0]["container"] == "postgres"
    status, listing = await env.call("GET", "instances", "alice")
    assert [i["name"] for i in listing["instances"]] == ["db1"]
    assert listing["instances"][0]["age"] and listing["instances"][0]["ttl_left"] != "-"


async def test_stop_start_extend_delete(launcher_env, launcher_kube):
    env = launcher_env
    status, _ = await env.call("POST", "instances", "carol",
                               json_body={"template": "echo", "name": "life", "ttl": "1h"})
    assert status == 201
    await env.wait_status("carol", "life", "ready")
    status, info = await env.call("POST", "instances/carol/life/stop", "carol")
    assert status == 200 and info["status"] == "stopped"
    deploy = await launcher_kube.get("Deployment", "life", "kdash-carol")
    assert deploy["spec"]["replicas"] == 0
    assert await launcher_kube.get("ConfigMap", "life", "kdash-carol") is not None  # kept
    info = await env.wait_status("carol", "life", "stopped")
    assert info["status"] == "stopped"
    status, info = await env.call("POST", "instances/carol/life/start", "carol")
    assert status == 200
    assert (await launcher_kube.get("Deployment", "life", "kdash-carol"))["spec"]["replicas"] == 1
    assert (await env.wait_status("carol", "life", "ready"))["status"] == "ready"

    before = info["ttl_left_seconds"]
    status, info = await env.call("POST", "instances/carol/life/extend", "carol",
                                  json_body={"by": "2h"})
    assert status == 200 and info["ttl_left_seconds"] > before + 7000
    status, info = await env.call("POST", "instances/carol/life/extend", "carol",
                                  json_body={"by": "30d"})
    assert status == 200 and info["ttl_left_seconds"] <= 7 * 86400  # capped at max_ttl
    status, info = await env.call("POST", "instances/carol/life/extend", "carol",
                                  json_body={"by": "soon"})
    assert status == 400 and "duration" in info["message"]

    status, _ = await env.call("DELETE", "instances/carol/life", "carol")
    assert status == 204
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert await launcher_kube.get(kind, "life", "kdash-carol") is None
    assert await launcher_kube.get("Secret", record_name("life"), "kdash-carol") is None
    status, _ = await env.call("GET", "instances/carol/life", "carol")
    assert status == 404


async def test_users_never_reach_each_others_instances(launcher_env, launcher_kube):
    env = launcher_env
    status, _ = await env.call("POST", "instances", "dave",
                               json_body={"template": "echo", "name": "private"})
    assert status == 201
    # bob: list, details, every change, the proxy — all 404 (as if it didn't exist)
    status, listing = await env.call("GET", "instances?all=1", "bob")
    assert status == 200 and all(i["owner"] == "bob" for i in listing["instances"])
    for method, path in (("GET", "instances/dave/private"),
                         ("DELETE", "instances/dave/private"),
                         ("POST", "instances/dave/private/stop"),
                         ("POST", "instances/dave/private/start"),
                         ("POST", "instances/dave/private/extend")):
        status, body = await env.call(method, path, "bob", json_body={"by": "1h"})
        assert status == 404, (method, path, body)
    status, body = await env.call("GET", "instances/dave/nothere", "bob")
    assert status == 404 and body["message"] == "no instance 'nothere' of user 'dave'"
    async with aiohttp.ClientSession() as s, s.get(
            env.url + "proxy/dave/private/", headers=env.headers("bob")) as resp:
        assert resp.status == 404
    # bob can't get into dave's namespace through the request either (nor make anything of
    # his own with it: his namespace holds what other files on this cluster left, if any)
    bobs = [d["metadata"]["uid"] for d in await launcher_kube.list("Deployment", "kdash-bob")]
    for body in ({"template": "echo", "values": {"NAMESPACE": "kdash-dave"}},
                 {"template": "echo", "values": {"USERNAME": "dave"}},
                 {"template": "echo", "owner": "dave"},
                 {"template": "echo", "name": "../dave"}):
        status, answer = await env.call("POST", "instances", "bob", json_body=body)
        assert status == 400, (body, answer)
    assert (await launcher_kube.get("Deployment", "private", "kdash-dave")) is not None
    assert [d["metadata"]["uid"] for d in await launcher_kube.list("Deployment", "kdash-bob")
            ] == bobs

    # the admin sees and manages everyone's, but may not use the proxy (not configured)
    status, listing = await env.call("GET", "instances?all=1", "root")
    assert ("dave", "private") in {(i["owner"], i["name"]) for i in listing["instances"]}
    status, _ = await env.call("GET", "instances", "root")
    status, info = await env.call("GET", "instances/dave/private", "root")
    assert status == 200 and info["owner"] == "dave"
    async with aiohttp.ClientSession() as s, s.get(
            env.url + "proxy/dave/private/", headers=env.headers("root")) as resp:
        assert resp.status == 404
    status, _ = await env.call("DELETE", "instances/dave/private", "root")
    assert status == 204


async def test_bad_requests_get_400_with_a_message(launcher_env):
    env = launcher_env
    cases = [
        ({"template": "echo", "values": {"PORT": "http"}}, 400, "PORT"),
        ({"template": "echo", "values": {"NOPE": "1"}}, 400, "unknown variable 'NOPE'"),
        ({"template": "echo", "values": ["PORT"]}, 400, "values must be an object"),
        ({"template": "echo", "values": {"MESSAGE": {"a": 1}}}, 400, "single value"),
        ({"template": "echo", "name": "Bad_Name"}, 400, "name:"),
        ({"template": "echo", "name": "x" * 41}, 400, "name:"),
        ({"template": "echo", "ttl": "forever"}, 400, "ttl"),
        ({"template": "echo", "ttl": "30d"}, 400, "at most"),
        ({"template": "nope"}, 404, "no template 'nope'"),
        ({}, 400, "template is required"),
        ({"template": 5}, 400, "template is required"),
    ]
    for body, code, message in cases:
        status, answer = await env.call("POST", "instances", "bob", json_body=body)
        assert status == code and message in answer["message"], (body, answer)
    status, answer = await env.call("POST", "instances", "bob", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in answer["message"]
    status, answer = await env.call("POST", "instances", "bob", json_body=[1, 2])
    assert status == 400
    status, answer = await env.call("GET", "no/such/endpoint", "bob")
    assert status == 404
    status, listing = await env.call("GET", "instances", "bob")
    assert listing["instances"] == []  # nothing was made by any of these


async def test_name_clash_singleton_and_auto_suffix(launcher_env):
    env = launcher_env
    status, first = await env.call("POST", "instances", "erin", json_body={"template": "echo"})
    assert status == 201 and first["name"] == "echo"
    status, second = await env.call("POST", "instances", "erin", json_body={"template": "echo"})
    assert status == 201 and second["name"] == "echo-2"
    status, clash = await env.call("POST", "instances", "erin",
                                   json_body={"template": "echo", "name": "echo"})
    assert status == 409 and "already" in clash["message"]
    status, _ = await env.call("POST", "instances", "erin", json_body={"template": "single"})
    assert status == 201
    status, again = await env.call("POST", "instances", "erin",
                                   json_body={"template": "single", "name": "other"})
    assert status == 409 and "one instance per user" in again["message"]
    for name in ("echo", "echo-2", "single"):
        assert (await env.call("DELETE", f"instances/erin/{name}", "erin"))[0] == 204


async def test_quota_error_is_clear_and_nothing_is_left(launcher_env, launcher_kube):
    env = launcher_env
    namespace = "kdash-bob"
    if await launcher_kube.get("Namespace", namespace) is None:
        await launcher_kube.create({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": namespace}})
    await launcher_kube.create({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "storage", "namespace": namespace},
        "spec": {"hard": {"requests.storage": "100Mi"}}})
    try:
        status, answer = await env.call("POST", "instances", "bob", json_body={
            "template": "postgresql", "name": "toobig"})
        assert status == 403, answer
        assert "quota" in answer["message"] and "PersistentVolumeClaim toobig-data" in (
            answer["message"])
        # the Secret made before the PVC was rolled back, and so was the record
        assert await launcher_kube.get("Secret", "toobig", namespace) is None
        assert await launcher_kube.get("Secret", record_name("toobig"), namespace) is None
        assert (await env.call("GET", "instances", "bob"))[1]["instances"] == []
    finally:
        await launcher_kube.delete("ResourceQuota", "storage", namespace)


async def test_failed_status_reason_from_events(launcher_env, launcher_kube):
    env = launcher_env
    status, _ = await env.call("POST", "instances", "bob",
                               json_body={"template": "echo", "name": "broken"})
    assert status == 201
    await launcher_kube.create({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "broken.pull", "namespace": "kdash-bob"},
        "involvedObject": {"kind": "Deployment", "name": "broken", "namespace": "kdash-bob"},
        "type": "Warning", "reason": "Failed",
        "message": "Failed to pull image example.org/echo:1: not found",
        "lastTimestamp": "2030-01-01T00:00:00Z", "source": {"component": "test"}})
    status, listing = await env.call("GET", "instances", "bob")
    inst = next(i for i in listing["instances"] if i["name"] == "broken")
    assert inst["status"] == "failed" and "Failed to pull image" in inst["reason"]
    assert (await env.call("DELETE", "instances/bob/broken", "bob"))[0] == 204


async def test_tokens_and_scopes(launcher_env):
    env = launcher_env
    status, body = await env.call("GET", "instances", None)
    assert status == 403 and "authentication required" in body["message"]
    status, body = await env.call("GET", "instances", "noscope")
    assert status == 403 and "access:services!service=kdash-launcher" in body["message"]
    status, body = await env.call("GET", "instances", None,
                                  headers={"Authorization": "token not-a-token"})
    assert status == 403
    status, who = await env.call("GET", "whoami", "root")
    assert who == {"name": "root", "kind": "user", "admin": True}
    # a service token (the hub's admin service) can't own instances
    status, body = await env.call("POST", "instances", None, json_body={"template": "echo"},
                                  headers=env.hub.auth_headers())
    assert status == 403


async def test_templates_listed_broken_one_reported(launcher_env):
    status, body = await launcher_env.call("GET", "templates", "alice")
    ids = {t["id"] for t in body["templates"]}
    assert {"postgresql", "minio", "tensorboard", "redis", "filebrowser", "echo"} <= ids
    assert "broken" not in ids
    assert "broken.yaml" in launcher_env.hub.log_path.read_text()
    status, body = await launcher_env.call("GET", "templates/redis", "alice")
    assert body["singleton"] is True and body["expiry"] == "delete"


def test_openapi_documents_every_endpoint():
    import re
    from pathlib import Path

    import yaml

    from kdash_hub.services.launcher import api
    from kdash_hub.services.launcher.kubeconfig import kubeconfig_routes

    spec = yaml.safe_load((Path(api.__file__).parent / "openapi.yaml").read_text())
    documented = {re.sub(r"\{[^}]+\}", "X", p) for p in spec["paths"]}
    routed = set()
    # the last api route is the 404 catch-all
    for pattern, _handler in [*kubeconfig_routes("/p/"), *api.api_routes("/p/")[:-1]]:
        path = pattern.removeprefix("/p/api").replace("/?", "")
        path = path.replace("([^/]+)", "X").replace("([a-z]+)", "ACTION")
        routed.add(path)
    actions = {p for p in documented if p.startswith("/instances/X/X/")}
    assert routed - {"/instances/X/X/ACTION"} == documented - actions
    assert {a.rsplit("/", 1)[1] for a in actions} == set(api.ACTIONS)


async def test_extend_says_when_it_hits_the_cap(launcher_env, launcher_kube):
    env = launcher_env
    status, inst = await env.call("POST", "instances", "carol",
                                  json_body={"template": "echo", "name": "capped", "ttl": "1h"})
    assert status == 201, inst
    status, info = await env.call("POST", "instances/carol/capped/extend", "carol",
                                  json_body={"by": "2h"})
    assert status == 200 and info["capped"] is False
    assert info["message"].startswith("extended by 2h: it now lives until ")
    # 30 more days: stopped at max_ttl (7d from now), and the answer says so
    status, info = await env.call("POST", "instances/carol/capped/extend", "carol",
                                  json_body={"by": "30d"})
    assert status == 200 and info["capped"] is True, info
    assert 7 * 86400 - 60 < info["ttl_left_seconds"] <= 7 * 86400
    until = info["expires_at"][:16].replace("T", " ") + " UTC"
    assert info["message"] == (f"extended to the cap: this instance can live until {until},"
                               " the most allowed")
    assert "extend done" not in json.dumps(info)
    # at the cap: refused (409), nothing changes
    record = await launcher_kube.get("Secret", record_name("capped"), "kdash-carol")
    status, refused = await env.call("POST", "instances/carol/capped/extend", "carol",
                                     json_body={"by": "1h"})
    assert status == 409, refused
    assert refused["message"] == (f"instance 'capped' is already at the cap: it can live until"
                                  f" {until}, the most allowed (7d from now)")
    after = await launcher_kube.get("Secret", record_name("capped"), "kdash-carol")
    assert after["metadata"]["resourceVersion"] == record["metadata"]["resourceVersion"]
    assert (await env.call("DELETE", "instances/carol/capped", "carol"))[0] == 204


async def test_karvdash_name_default_names_the_instance(launcher_env):
    env = launcher_env
    status, body = await env.call("GET", "templates/notes-server", "carol")
    assert status == 200 and body["default_name"] == "notes"
    status, first = await env.call("POST", "instances", "carol",
                                   json_body={"template": "notes-server"})
    assert status == 201 and first["name"] == "notes", first  # not "notes-server"
    status, second = await env.call("POST", "instances", "carol",
                                    json_body={"template": "notes-server"})
    assert status == 201 and second["name"] == "notes-2"  # still unique per user
    # a name given wins, and is still checked
    status, named = await env.call("POST", "instances", "carol",
                                   json_body={"template": "notes-server", "name": "mine"})
    assert status == 201 and named["name"] == "mine"
    status, bad = await env.call("POST", "instances", "carol",
                                 json_body={"template": "notes-server", "name": "Notes"})
    assert status == 400
    # the template without a NAME default still falls back to its id
    status, echo = await env.call("POST", "instances", "carol", json_body={"template": "single"})
    assert status == 201 and echo["name"] == "single"
    for name in ("notes", "notes-2", "mine", "single"):
        assert (await env.call("DELETE", f"instances/carol/{name}", "carol"))[0] == 204


async def test_minio_address_is_its_s3_api(launcher_env):
    env = launcher_env
    status, inst = await env.call("POST", "instances", "dave",
                                  json_body={"template": "minio", "name": "store"})
    assert status == 201, inst
    assert inst["address"] == "store.kdash-dave.svc:9000"  # S3, not the console's 9001
    assert inst["url"].endswith("/proxy/dave/store/")  # the console, through the proxy
    status, info = await env.call("GET", "instances/dave/store", "dave")
    conn = info["connection"]
    assert (conn["host"], conn["port"], conn["user"]) == ("store", 9000, "jovyan")
    assert conn["web_label"] == "Console" and conn["password"] is None
    status, conn = await env.call("POST", "instances/dave/store/connection", "dave")
    assert status == 200 and len(conn["password"]) == 32  # generated, as declared
    assert (await env.call("DELETE", "instances/dave/store", "dave"))[0] == 204


async def test_connection_details_and_password_for_the_owner_only(launcher_env, launcher_kube):
    env = launcher_env
    status, inst = await env.call("POST", "instances", "alice", json_body={
        "template": "postgresql", "name": "conn-db", "values": {"POSTGRES_DB": "sales"}})
    assert status == 201, inst
    # the password the instance really uses: its Secret (generated, nobody typed it)
    secret = await launcher_kube.get("Secret", "conn-db", "kdash-alice")
    password = base64.b64decode(secret["data"]["POSTGRES_PASSWORD"]).decode()
    assert len(password) == 24

    status, info = await env.call("GET", "instances/alice/conn-db", "alice")
    assert status == 200 and info["connection"] == {
        "host": "conn-db", "port": 5432, "address": "conn-db.kdash-alice.svc:5432",
        "user": "jovyan", "database": "sales", "has_password": True, "password": None,
        "web_label": ""}
    status, listing = await env.call("GET", "instances", "alice")
    assert password not in json.dumps(info) and password not in json.dumps(listing)

    async with aiohttp.ClientSession() as s, s.post(
            env.api + "instances/alice/conn-db/connection",
            headers=env.headers("alice")) as resp:
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        revealed = await resp.json()
    assert revealed["password"] == password and revealed["user"] == "jovyan"

    # attacks: nobody else gets it, nor learns the instance exists
    for user, path, expected in (
            ("bob", "instances/alice/conn-db/connection", 404),
            ("bob", "instances/bob/conn-db/connection", 404),
            ("bob", "instances/alice/conn-db", 404),
            ("alice", "instances/alice/kdash-instance-conn-db/connection", 404),
            ("alice", "instances/alice/Conn-DB/connection", 404),
            ("alice", "instances/alice/conn-db%2F..%2Fdb1/connection", 404),
            ("alice", "instances/bob/conn-db/connection", 404),
            ("root", "instances/alice/conn-db/connection", 403),  # an admin: not the owner
            ("noscope", "instances/alice/conn-db/connection", 403)):
        method = "GET" if not path.endswith("/connection") else "POST"
        status, body = await env.call(method, path, user)
        assert status == expected, (user, path, body)
        assert password not in json.dumps(body)
    status, body = await env.call("GET", "instances/alice/conn-db/connection", "alice")
    assert status == 405  # never by a plain GET
    assert password not in json.dumps(body)
    assert (await env.call("DELETE", "instances/alice/conn-db", "alice"))[0] == 204
