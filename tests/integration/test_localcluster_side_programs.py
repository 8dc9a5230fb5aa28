"""Side services for real in process mode: the catalog's PostgreSQL, Redis and TensorBoard,
launched through the launcher's REST API on a real hub, run as the programs this machine has
(`kdash_hub/localcluster/imageprograms.py`); a template whose image has no program here
says it can't run instead of "ready".

Needs Debian's postgresql and redis-server (the Makefile's APT_PACKAGES) and tensorboard (the
`local` extra): without them these tests fail, on purpose, rather than skip.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import shutil
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

import tests.fixtures.launcher as launcher_fixtures
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster, imageprograms
from kdash_hub.naming import user_namespace
from tests.fixtures.cluster import api_client_for, real_kubeconfig
from tests.fixtures.launcher import (
    LauncherEnv,
    home_claim,
    ready_pod,
    start_launcher_env,
    stop_launcher_env,
)

# generous: two cores shared with other test runs; initdb alone takes seconds under load
READY_WITHIN = 180.0


@pytest.fixture(scope="module")
def process_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LauncherEnv]:
    """The launcher fixtures' hub and launcher, on a local cluster in process mode."""
    if real_kubeconfig() is not None:
        pytest.skip("runs on the local cluster's process kubelet only; the real tier's pods "
                    "are run by the tier's own kubelet set-up")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launcher_fixtures, "LocalCluster",
                   functools.partial(LocalCluster, kubelet="process",
                                                     flag_idle_containers=True))
        env = start_launcher_env(tmp_path_factory.mktemp("side-programs"))
    yield env
    stop_launcher_env(env)


@pytest.fixture
async def kube(process_env: LauncherEnv) -> AsyncIterator[KubeResources]:
    async with api_client_for(process_env.kubeconfig) as client:
        yield KubeResources(client)


async def launch(env: LauncherEnv, user: str, template: str, name: str,
                 values: dict | None = None) -> dict:
    status, inst = await env.call("POST", "instances", user, json_body={
        "template": template, "name": name, "values": values or {}})
    assert status == 201, inst
    return inst


async def secret_value(kube: KubeResources, namespace: str, name: str, key: str) -> str:
    secret = await kube.get("Secret", name, namespace)
    return base64.b64decode(secret["data"][key]).decode()


async def ready(env: LauncherEnv, kube: KubeResources, user: str, name: str) -> str:
    """The instance's pod IP once the launcher says it is ready."""
    info = await env.wait_status(user, name, "ready", within=READY_WITHIN)
    assert info["status"] == "ready", info
    pod = await ready_pod(kube, user_namespace(user, "kdash-"), name, within=30)
    return pod["status"]["podIP"]


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_postgresql_runs_for_real_with_its_generated_password(process_env, kube):
    env, user = process_env, "alice"
    await launch(env, user, "postgresql", "pg")
    ip = await ready(env, kube, user, "pg")
    namespace = user_namespace(user, "kdash-")
    password = await secret_value(kube, namespace, "pg", "POSTGRES_PASSWORD")
    assert len(password) >= 16  # generated: the form left it empty
    psql = shutil.which("psql")
    assert psql, "psql (Debian's postgresql-client) is needed: see the Makefile's APT_PACKAGES"
    dsn = f"host={ip} port=5432 user=jovyan dbname=data"
    code, out = await run(psql, dsn, "-tAc",
                          "create table t(x int); insert into t values (41), (1); "
                          "select sum(x), current_user, current_database() from t",
                          env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"})
    assert code == 0, out
    assert "42|jovyan|data" in out
    # a wrong password is refused: the server checks passwords from the pod's address too
    code, out = await run(psql, dsn, "-tAc", "select 1",
                          env={"PGPASSWORD": password + "x", "PGCONNECT_TIMEOUT": "10"})
    assert code != 0 and "password authentication failed" in out
    # it listens on its own pod's address only, never on every address of this machine
    code, out = await run(psql, "host=127.0.0.1 port=5432 user=jovyan dbname=data", "-tAc",
                          "select 1", env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"})
    assert code != 0
    assert (await env.call("DELETE", f"instances/{user}/pg", user))[0] == 204


async def resp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               *words: str) -> bytes:
    """One Redis command in RESP, its first reply line."""
    writer.write(f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words))
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 20)


async def test_redis_runs_for_real_with_its_generated_password(process_env, kube):
    env, user = process_env, "bob"
    await launch(env, user, "redis", "redis")
    ip = await ready(env, kube, user, "redis")
    password = await secret_value(kube, user_namespace(user, "kdash-"), "redis",
                                  "REDIS_PASSWORD")
    reader, writer = await asyncio.open_connection(ip, 6379)
    try:
        assert (await resp(reader, writer, "SET", "k", "v")).startswith(b"-NOAUTH")
        assert await resp(reader, writer, "AUTH", password + "x") != b"+OK\r\n"
        assert await resp(reader, writer, "AUTH", password) == b"+OK\r\n"
        assert await resp(reader, writer, "SET", "k", "v42") == b"+OK\r\n"
        assert await resp(reader, writer, "GET", "k") == b"$3\r\n"
        assert await asyncio.wait_for(reader.readline(), 20) == b"v42\r\n"
    finally:
        writer.close()
    assert (await env.call("DELETE", f"instances/{user}/redis", user))[0] == 204


async def test_tensorboard_opens_through_the_owner_only_proxy(process_env, kube):
    env, user = process_env, "carol"
    namespace = user_namespace(user, "kdash-")
    await launch(env, user, "redis", "first")  # the launcher makes carol's namespace
    await kube.ensure(home_claim(user, namespace))  # as her first notebook would
    inst = await launch(env, user, "tensorboard", "tb")
    await ready(env, kube, user, "tb")
    async with aiohttp.ClientSession() as s:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # ready = its port answers; the app may need a moment
        while True:
            async with s.get(inst["url"], headers=env.headers(user)) as r:
                status, body = r.status, await r.text()
            if status == 200 or loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert status == 200, body[:500]
        assert "<tf-tensorboard" in body or "TensorBoard" in body
        async with s.get(inst["url"] + "data/environment", headers=env.headers(user)) as r:
            assert r.status == 200
            assert (await r.json())["data_location"].endswith("home/jovyan/logs")
        for other in ("dave", "root"):  # another user; an admin without proxy access
            async with s.get(inst["url"], headers=env.headers(other)) as r:
                assert r.status in (403, 404)
        async with s.get(inst["url"], allow_redirects=False) as r:  # nobody logged in
            assert r.status in (302, 403)
    for name in ("tb", "first"):
        assert (await env.call("DELETE", f"instances/{user}/{name}", user))[0] == 204


async def test_a_template_without_a_program_here_says_it_cant_run(process_env):
    env, user = process_env, "erin"
    await launch(env, user, "filebrowser", "files")
    info = await env.wait_status(user, "files", "failed", within=READY_WITHIN)
    assert info["status"] == "failed", info
    assert info["reason"].startswith("can't run on this local cluster:"), info
    assert "filebrowser/filebrowser" in info["reason"]
    assert (await env.call("DELETE", f"instances/{user}/files", user))[0] == 204


# --- attacks: a user's own pod (kubectl with the launcher's kubeconfig) choosing arguments ---

def launched(monkeypatch: pytest.MonkeyPatch, kind: str, args: list[str],
             environ: dict[str, str] | None = None, root: str = "/pods/p/rootfs") -> list[str]:
    """The argv a launcher would exec (nothing runs)."""
    seen: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda program, argv: seen.append(argv))
    for key, value in (environ or {}).items():
        monkeypatch.setenv(key, value)
    imageprograms.main([kind, root, "127.9.0.5", "6379", "/usr/bin/prog", *args])
    [argv] = seen
    return argv


def test_a_container_cannot_widen_its_listening_address(monkeypatch, tmp_path):
    argv = launched(monkeypatch, "redis", ["--bind", "0.0.0.0", "--port", "1", "--save", ""])
    assert argv[-4:] == ["--bind", "127.9.0.5", "--port", "6379"]  # redis: the last one wins
    argv = launched(monkeypatch, "tensorboard",
                    ["--bind_all", "--host", "0.0.0.0", "--host=::", "--logdir", "/../../etc"])
    assert "--bind_all" not in argv and "0.0.0.0" not in argv and "--host=::" not in argv
    assert argv[-2:] == ["--host", "127.9.0.5"]
    assert "/pods/p/rootfs/etc" in argv  # a log directory can't climb out of the pod
    data = tmp_path / "var/lib/postgresql/data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")  # made before: no initdb
    argv = launched(monkeypatch, "postgres",
                    ["postgres", "-h", "0.0.0.0", "-c", "listen_addresses=*", "-p", "1"],
                    {"PGDATA": "/var/lib/postgresql/data"}, root=str(tmp_path))
    assert argv[1:3] == ["-D", str(data)]  # the container path, in the pod's root
    # postgres: a later option wins, so the pod's address and port come last
    assert argv[-6:] == ["-c", "listen_addresses=127.9.0.5", "-p", "6379",
                         "-c", "unix_socket_directories="]


def test_image_table_matches_repositories_not_look_alikes():
    pg = {"image": "docker.io/library/postgres:17", "name": "db"}
    assert imageprograms.program_for(pg).kind == "postgres"
    assert imageprograms.program_for({**pg, "image": "postgres"}).kind == "postgres"
    assert imageprograms.program_for({**pg, "image": "evil.io/postgres-miner:1"}) is None
    # an image's program only: the postgres image running something else stays as it was
    assert imageprograms.program_for({**pg, "command": ["python", "x.py"]}) is None
    tb = {"image": "tensorflow/tensorflow:2.17.0", "command": ["tensorboard"], "name": "t"}
    assert imageprograms.program_for(tb).kind == "tensorboard"
    assert imageprograms.program_for({**tb, "command": ["sh", "-c", "python x.py"]}) is None
    assert imageprograms.program_for({"image": "filebrowser/filebrowser:v2", "name": "f"}) is None
    # minio (tests/integration/test_datasets.py runs it): `minio server` only
    assert imageprograms.program_for({"image": "evil.io/minio-x:1", "args": ["server"]}) is None
