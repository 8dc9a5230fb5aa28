"""kdash_hub.kube.without_environment_lookups: kubernetes_asyncio's session asks the
environment for a proxy and a netrc entry on every request, each in a worker thread. Where
the environment has neither, the pack's clients skip both and send the same requests.

Requests go to a small HTTP server on 127.0.0.1 standing in for the API server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from kdash_hub.kube import (
    KUBERNETES_ASYNCIO_READ_BUFSIZE,
    KubeResources,
    environment_routes_requests,
    without_environment_lookups,
)
from tests.fixtures.stubserver import serving

PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture
def plain_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No proxy variable, no netrc file (a HOME of its own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[str, list[dict]]]:
    """An answer for every GET of a namespace; the headers of each request are kept."""
    seen: list[dict] = []

    async def namespace(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"kind": "Namespace", "apiVersion": "v1",
                                  "metadata": {"name": request.match_info["name"]}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", namespace)
    async with serving(app) as url:
        yield f"{url}", seen


def client_for(host: str) -> ApiClient:
    configuration = Configuration(host=host)
    configuration.api_key = {"BearerToken": "Bearer t0ken"}
    return ApiClient(configuration)


async def thread_hops_of_one_get(client: ApiClient) -> int:
    """How many times one GET hands work to the loop's worker threads."""
    loop = asyncio.get_running_loop()
    hops = []
    real = loop.run_in_executor

    def counting(executor, func, *args):
        hops.append(func)
        return real(executor, func, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "run_in_executor", counting)
        got = await KubeResources(client).get("Namespace", "alice")
    assert got["metadata"] == {"name": "alice"}
    return len(hops)


async def test_without_proxy_or_netrc_a_request_makes_no_thread_hop(plain_environment,
                                                                    api_server):
    host, seen = api_server
    async with client_for(host) as client:
        assert await thread_hops_of_one_get(client) >= 1  # upstream's default
        before = client.rest_client.pool_manager
        connector = before.connector
        assert without_environment_lookups(client) is True
        after = client.rest_client.pool_manager
        # the same pool of connections (and TLS context), kubernetes_asyncio's read buffer
        assert after is not before and after.connector is connector and not after.trust_env
        assert before.closed and not connector.closed
        assert after._read_bufsize == before._read_bufsize == KUBERNETES_ASYNCIO_READ_BUFSIZE
        assert await thread_hops_of_one_get(client) == 0
        assert without_environment_lookups(client) is True  # again: nothing to do
        assert client.rest_client.pool_manager is after
    # the same request either way, its token included; closing the client closed the pool
    assert len(seen) == 2 and seen[0]["Authorization"] == seen[1]["Authorization"] == \
        "Bearer t0ken"
    assert connector.closed


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "HTTP_PROXY"])
async def test_a_proxy_variable_keeps_the_lookups(plain_environment, api_server, monkeypatch,
                                                  variable):
    monkeypatch.setenv(variable, "http://127.0.0.1:9" if "PROXY" in variable.upper()
                       and not variable.upper().startswith("NO") else "127.0.0.1")
    assert environment_routes_requests() is True
    async with client_for(api_server[0]) as client:
        session = client.rest_client.pool_manager
        assert without_environment_lookups(client) is False
        assert client.rest_client.pool_manager is session and session.trust_env


@pytest.mark.parametrize("where", ["home", "NETRC"])
async def test_a_netrc_file_keeps_the_lookups(plain_environment, api_server, monkeypatch,
                                              where):
    path = plain_environment / (".netrc" if where == "home" else "elsewhere-netrc")
    path.write_text("machine 127.0.0.1 login a password b\n")
    if where == "NETRC":
        monkeypatch.setenv("NETRC", str(path))
    assert environment_routes_requests() is True
    async with client_for(api_server[0]) as client:
        assert without_environment_lookups(client) is False
        assert client.rest_client.pool_manager.trust_env


async def test_a_client_without_an_aiohttp_session_is_left_alone(plain_environment):
    class NotKubernetesAsyncio:
        rest_client = None

    assert without_environment_lookups(NotKubernetesAsyncio()) is False


async def test_the_spawners_shared_client_skips_them(plain_environment, tmp_path, monkeypatch):
    """KDashSpawner's client is KubeSpawner's process-wide one (its pod and event watches)."""
    from kdash_hub.spawner import KDashSpawner
    from tests.unit.test_upstream_pins import kubespawner

    plain = kubespawner(tmp_path, monkeypatch)
    session = plain.api.api_client.rest_client.pool_manager
    assert isinstance(session, aiohttp.ClientSession) and session.trust_env
    spawner = KDashSpawner(_mock=True, user=plain.user)
    assert spawner.api.api_client is plain.api.api_client  # one shared client
    assert not spawner.api.api_client.rest_client.pool_manager.trust_env
