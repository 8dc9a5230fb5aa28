"""Finding 1 (critical): the proxy went wherever the instance record said.

Mallory holds `edit` in her own namespace: she can edit her instance record, make
ExternalName or selector-less Services with hand-made Endpoints, delete and remake her
instance's objects. The victim server stands for what she must never reach through the hub
pod: another user's File Browser (`--noauth`, trusting the hub), hub-internal services.
Every attack must leave it untouched; the proxy reaches only the pods of her own instance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub import labels as L
from kdash_hub.services.launcher.records import record_name
from tests.fixtures.launcher import ready_pod
from tests.fixtures.security import ATTACKER, ATTACKER_NS, VICTIM, VICTIM_NS


async def proxy_get(env, user: str, owner: str, name: str, path: str = "") -> tuple[int, object]:
    async with aiohttp.ClientSession() as s, s.get(
            f"{env.url}proxy/{owner}/{name}/{path}", headers=env.headers(user)) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def own_instance(attack, echo_server, name: str = "web") -> dict:
    """Mallory's echo instance, its pod answered by `echo_server`, reachable as it should."""
    inst = await attack.launch(ATTACKER, name, PORT=echo_server.port)
    await echo_server.serve_pod(attack.env, ATTACKER, name)
    status, seen = await proxy_get(attack.env, ATTACKER, ATTACKER, name, "before")
    assert status == 200 and seen["path"] == "/before", seen
    echo_server.requests.clear()
    return inst


def refused(status: int, body: object, *statuses: int) -> None:
    assert status in statuses, (status, body)
    assert isinstance(body, dict) and body.get("message"), body


async def external_name_write(attack, write: Awaitable[object]) -> bool:
    """Make (or turn a Service into) an ExternalName Service in the attacker's namespace.
    The emulator lets it happen, so the proxy's own check is what the test sees; a real
    API server already refuses it (the kdash-services admission policy helm-values ships):
    both layers hold. True when the Service was written."""
    try:
        await write
    except ApiException as e:
        assert attack.env.cluster is None, e  # only a real API server has the policy
        assert e.status == 403 and "kdash-services" in str(e.body), e.body
        return False
    assert attack.env.cluster is not None, "a real API server let an ExternalName Service in"
    return True


async def test_external_name_service_and_an_edited_record(attack, echo_server):
    await own_instance(attack, echo_server)
    await external_name_write(attack, attack.create({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "evil", "namespace": ATTACKER_NS},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"port": attack.victim.port}]}}))

    def point_at_evil(content: dict) -> None:
        content["proxy"].update(service="evil", port=attack.victim.port,
                                service_port=attack.victim.port)

    await attack.edit_record(ATTACKER_NS, "web", point_at_evil)
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web", "secrets")
    refused(status, body, 409)
    assert "changed outside the launcher" in body["message"]
    assert attack.victim.requests == [] and echo_server.requests == []
    attack.assert_no_server_errors()


async def test_own_service_turned_into_an_external_name_in_place(attack, echo_server):
    """The Service keeps its UID; the proxy never reads it for a destination."""
    await own_instance(attack, echo_server)
    await external_name_write(attack, attack.kube.patch("Service", "web", ATTACKER_NS, {
        "spec": {"type": "ExternalName", "externalName": "localhost", "selector": None,
                 "clusterIP": None, "clusterIPs": None,
                 "ports": [{"name": "http", "port": attack.victim.port}]}}))
    status, seen = await proxy_get(attack.env, ATTACKER, ATTACKER, "web", "after")
    assert status == 200 and seen["path"] == "/after"  # her own pod, nothing else
    assert len(echo_server.requests) == 1 and attack.victim.requests == []


async def test_selectorless_service_with_handmade_endpoints_and_an_edited_record(
        attack, echo_server):
    await own_instance(attack, echo_server)
    await attack.create({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "relay", "namespace": ATTACKER_NS},
                         "spec": {"ports": [{"port": attack.victim.port}]}})
    await attack.create_endpoints(ATTACKER_NS, "relay", "127.0.0.1", attack.victim.port)

    def point_at_relay(content: dict) -> None:
        content["proxy"]["service"] = "relay"
        content["proxy"]["port"] = attack.victim.port
        for obj in content["objects"]:
            if obj["kind"] == "Service":
                obj["name"] = "relay"

    await attack.edit_record(ATTACKER_NS, "web", point_at_relay)
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web")
    refused(status, body, 409)
    assert attack.victim.requests == [] and echo_server.requests == []


async def test_own_service_emptied_and_given_handmade_endpoints(attack, echo_server):
    """Same name, same UID, no selector any more, Endpoints to the victim: ignored."""
    await own_instance(attack, echo_server)
    await attack.kube.patch("Service", "web", ATTACKER_NS, {"spec": {"selector": None}})
    await attack.delete_endpoints(ATTACKER_NS, "web")  # a cluster's controller made them
    await attack.create_endpoints(ATTACKER_NS, "web", "127.0.0.1", attack.victim.port)
    status, seen = await proxy_get(attack.env, ATTACKER, ATTACKER, "web", "still-mine")
    assert status == 200 and seen["path"] == "/still-mine"
    assert attack.victim.requests == []


async def test_service_deleted_and_made_again_with_the_same_name_and_labels(
        attack, echo_server):
    await own_instance(attack, echo_server)
    service = await attack.kube.get("Service", "web", ATTACKER_NS)
    await attack.kube.delete("Service", "web", ATTACKER_NS)
    again = {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "web", "namespace": ATTACKER_NS,
                          "labels": service["metadata"]["labels"],
                          "annotations": service["metadata"].get("annotations") or {}},
             "spec": {"ports": [{"name": "http", "port": attack.victim.port}]}}
    made = await attack.create(again)
    assert made["metadata"]["uid"] != service["metadata"]["uid"]
    await attack.create_endpoints(ATTACKER_NS, "web", "127.0.0.1", attack.victim.port)
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web")
    refused(status, body, 409)
    assert "Service web" in body["message"] and "deleted or replaced" in body["message"]
    assert attack.victim.requests == [] and echo_server.requests == []
    attack.assert_no_server_errors()


async def test_deployment_deleted_and_made_again_with_the_same_name_and_labels(
        attack, echo_server):
    await own_instance(attack, echo_server)
    deployment = await attack.kube.get("Deployment", "web", ATTACKER_NS)
    await attack.kube.delete("Deployment", "web", ATTACKER_NS, propagation="Foreground")
    for _ in range(100):
        if await attack.kube.get("Deployment", "web", ATTACKER_NS) is None:
            break
        await asyncio.sleep(0.1)
    again = {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {k: deployment["metadata"][k]
                          for k in ("name", "namespace", "labels", "annotations")},
             "spec": {k: deployment["spec"][k] for k in ("replicas", "selector", "template")}}
    made = await attack.create(again)
    assert made["metadata"]["uid"] != deployment["metadata"]["uid"]
    pod = await ready_pod(attack.kube, ATTACKER_NS, "web")
    await echo_server.listen_on(pod["status"]["podIP"])
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web")
    refused(status, body, 409)
    assert "Deployment web" in body["message"] and "deleted or replaced" in body["message"]
    assert attack.victim.requests == [] and echo_server.requests == []


async def test_an_edited_record_pointing_at_another_users_instance(attack, echo_server):
    await attack.launch(VICTIM, "files", PORT=attack.victim.port)
    await attack.victim.serve_pod(attack.env, VICTIM, "files")
    victims_record = (await attack.record(VICTIM_NS, "files"))[1]
    await own_instance(attack, echo_server)

    def point_at_victim(content: dict) -> None:  # everything but the signature
        content.update(namespace=VICTIM_NS, objects=victims_record["objects"],
                       proxy=victims_record["proxy"])

    await attack.edit_record(ATTACKER_NS, "web", point_at_victim)
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web", "files")
    refused(status, body, 409)
    # straight at the victim's URL: not hers, so it doesn't exist for her
    status, body = await proxy_get(attack.env, ATTACKER, VICTIM, "files")
    refused(status, body, 404)
    assert attack.victim.requests == [] and echo_server.requests == []
    # the victim still reaches their own instance
    status, seen = await proxy_get(attack.env, VICTIM, VICTIM, "files", "mine")
    assert status == 200 and seen["headers"]["X-Forwarded-User"] == VICTIM


async def test_a_valid_record_copied_under_another_name(attack, echo_server):
    """A signature is for one record (name, namespace): a copy doesn't verify."""
    await own_instance(attack, echo_server)
    secret, _ = await attack.record(ATTACKER_NS, "web")
    await attack.plant_record(ATTACKER_NS, "copy", dict(secret["metadata"]["annotations"]))
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "copy")
    refused(status, body, 409)
    status, listing = await attack.env.call("GET", "instances", ATTACKER)
    assert [i["name"] for i in listing["instances"]] == ["web"]
    assert [r["record"] for r in listing["invalid_records"]] == [record_name("copy")]
    assert echo_server.requests == [] and attack.victim.requests == []


async def test_a_handmade_record_claiming_another_users_instance(attack):
    await attack.launch(VICTIM, "files", PORT=attack.victim.port)
    await attack.victim.serve_pod(attack.env, VICTIM, "files")
    _, content = await attack.record(VICTIM_NS, "files")
    content.update(name="stolen")
    await attack.plant_record(ATTACKER_NS, "stolen", {
        "kdash-hub.io/instance-record": json.dumps(content),
        "kdash-hub.io/instance-record-signature": "v1:" + "0" * 64}, owner=VICTIM)
    for owner in (ATTACKER, VICTIM):
        status, body = await proxy_get(attack.env, ATTACKER, owner, "stolen")
        assert status in (404, 409), (status, body)
    assert attack.victim.requests == []


async def test_a_pod_with_the_instance_labels_but_another_owner(attack, echo_server):
    """Her own pod, labelled as the instance's, not made by its workload: not a target."""
    await own_instance(attack, echo_server)
    await attack.kube.patch("Deployment", "web", ATTACKER_NS, {"spec": {"replicas": 0}})
    deployment = await attack.kube.get("Deployment", "web", ATTACKER_NS)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    await attack.create({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "impostor", "namespace": ATTACKER_NS,
                                      "labels": labels},
                         "spec": {"containers": [{
                             "name": "echo", "image": "example.org/echo:1",
                             "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]}})
    for _ in range(100):  # the workload's own pods go away
        pods = await attack.kube.list("Pod", ATTACKER_NS,
                                      label_selector=f"{L.INSTANCE}=web")
        if [p["metadata"]["name"] for p in pods] == ["impostor"]:
            break
        await asyncio.sleep(0.1)
    impostor = await ready_pod(attack.kube, ATTACKER_NS, "web")
    assert impostor["metadata"]["name"] == "impostor"
    await echo_server.listen_on(impostor["status"]["podIP"])
    status, body = await proxy_get(attack.env, ATTACKER, ATTACKER, "web")
    refused(status, body, 503)
    assert "no ready pod" in body["message"]
    assert echo_server.requests == [] and attack.victim.requests == []
