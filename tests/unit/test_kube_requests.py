"""KubeResources' requests: sent through kubernetes_asyncio's REST client with the
ApiClient's credentials and headers (not through `call_api`, see docs/upstream.md), and
answered as `call_api` answered them.

A small HTTP server on 127.0.0.1 stands in for the API server and keeps what it was sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.kube import MERGE_PATCH, KubeResources, api_error_message, api_error_reason
from tests.fixtures.stubserver import record, serving

CONFLICT = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
            "reason": "AlreadyExists", "message": 'namespaces "alice" already exists'}


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[str, list[dict]]]:
    """Answers by path; every request's method, path, query, headers and body are kept."""
    seen: list[dict] = []

    async def answer(request: web.Request) -> web.Response:
        body = await record(request, seen)
        name = request.match_info["name"]
        if name == "taken":
            return web.json_response(CONFLICT, status=409)
        if name == "missing":
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"},
                                     status=404)
        if name == "empty":
            return web.Response(status=204)
        if name == "text":
            return web.Response(text="ok")
        if request.method in ("POST", "PUT"):  # the object as stored
            stored = json.loads(body)
            stored["metadata"]["uid"] = "u-1"
            return web.json_response(stored, status=201 if request.method == "POST" else 200)
        return web.json_response({"kind": "Namespace", "apiVersion": "v1",
                                  "metadata": {"name": name, "uid": "u-1"}})

    app = web.Application()
    app.router.add_route("*", "/api/v1/{plural}/{name}", answer)
    app.router.add_route("*", "/api/v1/{name}", answer)
    async with serving(app) as url:
        yield f"{url}", seen


def client_for(host: str) -> ApiClient:
    configuration = Configuration(host=host)
    configuration.api_key = {"BearerToken": "t0ken"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return ApiClient(configuration)


async def test_a_create_sends_the_clients_credentials_headers_and_json(api_server):
    host, seen = api_server
    async with client_for(host) as client:
        client.set_default_header("X-Extra", "kept")
        got = await KubeResources(client).create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "alice"}})
    assert got == {"kind": "Namespace", "apiVersion": "v1",
                   "metadata": {"name": "alice", "uid": "u-1"}}
    sent = seen[-1]
    assert (sent["method"], sent["path"]) == ("POST", "/api/v1/namespaces")
    assert sent["body"] == {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "alice"}}
    headers = sent["headers"]
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == client.user_agent  # the ApiClient's default headers
    assert headers["X-Extra"] == "kept"


async def test_a_rotated_token_is_read_on_every_request(api_server):
    """A ServiceAccount token is rotated on disk: kubernetes_asyncio's refresh hook (set by
    its in-cluster config) must run before each request, as `call_api` ran it."""
    host, seen = api_server
    tokens = iter(["first", "second"])

    def refresh(configuration: Configuration) -> None:
        configuration.api_key["BearerToken"] = next(tokens)

    async with client_for(host) as client:
        client.configuration.refresh_api_key_hook = refresh
        kube = KubeResources(client)
        await kube.get("Namespace", "alice")
        await kube.get("Namespace", "alice")
    assert [s["headers"]["Authorization"] for s in seen] == ["Bearer first", "Bearer second"]


async def test_query_parameters_and_patch_content_types(api_server):
    host, seen = api_server
    async with client_for(host) as client:
        kube = KubeResources(client)
        await kube.list("Namespace", label_selector="a=b")
        await kube.patch("Namespace", "alice", None, {"metadata": {"labels": {"x": "y"}}})
    assert seen[0]["query"] == {"labelSelector": "a=b"}  # fieldSelector None: not sent
    assert seen[1]["method"] == "PATCH"
    assert seen[1]["headers"]["Content-Type"] == MERGE_PATCH
    assert seen[1]["body"] == {"metadata": {"labels": {"x": "y"}}}


async def test_answers_other_than_json_objects(api_server):
    host, _ = api_server
    async with client_for(host) as client:
        kube = KubeResources(client)
        assert await kube.request("GET", "/api/v1/namespaces/empty") is None  # 204
        assert await kube.request("GET", "/api/v1/namespaces/text") == "ok"
        assert await kube.get("Namespace", "missing") is None


async def test_a_refusal_is_an_api_exception_with_a_text_body(api_server):
    host, _ = api_server
    async with client_for(host) as client:
        with pytest.raises(ApiException) as refused:
            await KubeResources(client).replace(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "taken"}})
    error = refused.value
    assert error.status == 409
    assert isinstance(error.body, str)
    assert json.loads(error.body) == CONFLICT
    assert api_error_reason(error) == "AlreadyExists"
    assert api_error_message(error) == 'namespaces "alice" already exists'


async def test_a_model_in_a_body_is_refused_before_anything_is_sent(api_server):
    """Bodies are JSON values: a model converted by `to_json` goes, a raw one does not."""
    from kubernetes_asyncio.client import V1NamespaceSpec

    from kdash_hub.kube import to_json

    host, seen = api_server
    async with client_for(host) as client:
        kube = KubeResources(client)
        with pytest.raises(TypeError):
            await kube.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "alice"},
                               "spec": V1NamespaceSpec(finalizers=["kubernetes"])})
        assert seen == []
        await kube.create({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "alice"},
                           "spec": to_json(V1NamespaceSpec(finalizers=["kubernetes"]))})
    assert seen[0]["body"]["spec"] == {"finalizers": ["kubernetes"]}
