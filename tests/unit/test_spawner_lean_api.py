"""KubeSpawner's pod and claim creates and pod deletes, on a KDashSpawner, answered as dicts
(spawner/lean_api.py; docs/upstream.md).

KubeSpawner's own request methods run here against a stand-in API server on 127.0.0.1:
they must send what kubernetes_asyncio's `call_api` sent (path, JSON body, query, the
client's credentials), react to refusals as before (409, 404), and never build a model
of the answer. A call with arguments KubeSpawner does not pass today goes through
upstream's client unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, V1DeleteOptions, V1Pod
from kubespawner import KubeSpawner
from kubespawner.objects import make_pod, make_pvc

from kdash_hub.spawner import KDashSpawner
from kdash_hub.spawner.lean_api import LeanCoreV1Api
from tests.fixtures.spawner import build_spawner
from tests.fixtures.stubserver import record, serving


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[str, list[dict]]]:
    """Answers pods and claims by name ("taken": 409, "gone": 404); keeps every request."""
    seen: list[dict] = []

    async def answer(request: web.Request) -> web.Response:
        body = await record(request, seen)
        name = request.match_info.get("name") or (json.loads(body)["metadata"]["name"])
        if name == "taken":
            return web.json_response({"kind": "Status", "apiVersion": "v1", "code": 409,
                                      "reason": "AlreadyExists"}, status=409)
        if name == "gone":
            return web.json_response({"kind": "Status", "apiVersion": "v1", "code": 404,
                                      "reason": "NotFound"}, status=404)
        stored = json.loads(body) if request.method == "POST" else {
            "kind": "Pod", "apiVersion": "v1", "metadata": {"name": name}}
        stored["metadata"]["uid"] = "u-1"
        return web.json_response(stored, status=201 if request.method == "POST" else 200)

    app = web.Application()
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/{plural}", answer)
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/{plural}/{name}", answer)
    async with serving(app) as url:
        yield url, seen


@pytest.fixture
async def lean(api_server, monkeypatch) -> AsyncIterator[tuple[SimpleNamespace, list[dict]]]:
    """A stand-in for a KubeSpawner's `self` with a LeanCoreV1Api as its `api`; the answers'
    models are counted (`built`)."""
    host, seen = api_server
    configuration = Configuration(host=host)
    configuration.api_key = {"BearerToken": "t0ken"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    built: list[str] = []
    deserialize = ApiClient.deserialize

    def counted(self, response, response_type):
        built.append(response_type)
        return deserialize(self, response, response_type)

    monkeypatch.setattr(ApiClient, "deserialize", counted)
    async with ApiClient(configuration) as client:
        stopped: list[bool] = []

        async def stop(now: bool = False) -> None:
            stopped.append(now)

        me = SimpleNamespace(api=LeanCoreV1Api(CoreV1Api(client)), namespace="ns-alice",
                             log=logging.getLogger("test"), built=built, stopped=stopped,
                             stop=stop, pvc_name="claim-alice")
        yield me, seen


def pod(name: str) -> V1Pod:
    return make_pod(name=name, cmd=["jupyterhub-singleuser"], port=8888,
                    image="quay.io/jupyter/base-notebook:2025-01-01")


async def test_kubespawners_pod_create_sends_the_pod_as_json_and_builds_no_model(lean):
    me, seen = lean
    assert await KubeSpawner._make_create_pod_request(me, pod("jupyter-alice"), 5) is True
    sent = seen[-1]
    assert (sent["method"], sent["path"]) == ("POST", "/api/v1/namespaces/ns-alice/pods")
    want = me.api.api_client.sanitize_for_serialization(pod("jupyter-alice"))
    want["metadata"]["namespace"] = "ns-alice"
    assert sent["body"] == want
    assert sent["headers"]["Authorization"] == "Bearer t0ken"
    assert me.built == []


async def test_a_pod_that_exists_is_stopped_and_tried_again_as_upstream_does(lean):
    me, _ = lean
    assert await KubeSpawner._make_create_pod_request(me, pod("taken"), 5) is False
    assert me.stopped == [True]


async def test_kubespawners_claim_create_and_a_claim_that_exists(lean):
    me, seen = lean
    claim = make_pvc(name="claim-alice", storage_class="standard", access_modes=["ReadWriteOnce"],
                     selector=None, storage="10Gi")
    assert await KubeSpawner._make_create_pvc_request(me, claim, 5) is True
    assert (seen[-1]["method"], seen[-1]["path"]) == (
        "POST", "/api/v1/namespaces/ns-alice/persistentvolumeclaims")
    assert seen[-1]["body"]["kind"] == "PersistentVolumeClaim"
    assert seen[-1]["body"]["spec"]["resources"]["requests"] == {"storage": "10Gi"}
    claim.metadata.name = "taken"  # 409: there already, which is as good
    assert await KubeSpawner._make_create_pvc_request(me, claim, 5) is True
    assert me.built == []


async def test_kubespawners_pod_delete_sends_its_options_and_grace_and_builds_no_model(lean):
    me, seen = lean
    options = V1DeleteOptions(grace_period_seconds=3, propagation_policy="Background")
    assert await KubeSpawner._make_delete_pod_request(me, "jupyter-alice", options, 3, 5)
    sent = seen[-1]
    assert (sent["method"], sent["path"]) == ("DELETE",
                                              "/api/v1/namespaces/ns-alice/pods/jupyter-alice")
    assert sent["query"] == {"gracePeriodSeconds": "3"}
    assert sent["body"] == {"gracePeriodSeconds": 3, "propagationPolicy": "Background"}
    # a pod already gone: upstream's "assuming already deleted"
    assert await KubeSpawner._make_delete_pod_request(me, "gone", options, 3, 5) is True
    assert me.built == []


async def test_arguments_upstream_does_not_pass_today_go_through_its_client(lean):
    """A KubeSpawner that passes more (a `_request_timeout`, say) gets its own client's
    behaviour, models included, not a request that drops what it asked for."""
    me, seen = lean
    answer = await me.api.create_namespaced_pod("ns-alice", pod("jupyter-alice"),
                                                _request_timeout=5)
    assert isinstance(answer, V1Pod) and answer.metadata.uid == "u-1"
    assert me.built == ["V1Pod"]
    assert seen[-1]["path"] == "/api/v1/namespaces/ns-alice/pods"


async def test_a_kdash_spawner_talks_through_the_lean_client_over_kubespawners_shared_one(
        offline_kube):
    spawner = build_spawner(KDashSpawner)
    assert isinstance(spawner.api, LeanCoreV1Api)
    shared = build_spawner(KubeSpawner).api
    assert spawner.api.api_client is shared.api_client
    # every other method is upstream's own
    assert spawner.api.read_namespaced_pod.__self__ is spawner.api._api
