"""`kdash-hub demo` as a newcomer uses it: start, log in, spawn, open the launcher, Ctrl-C.

Everything is real except the Kubernetes API (the local cluster, process mode): the demo
runs as a subprocess, the test talks HTTP to the URL it prints, then sends SIGINT and checks
that no process the demo started is left and its ports are closed.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.dev.ports import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 150.0  # a shared CI machine can take a minute or more to start it all


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc), alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def read_banner(proc: subprocess.Popen, url: str, timeout: float) -> str:
    """The demo's stdout up to "Ctrl-C" (the URL and the logins come before it)."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
            text = data.decode(errors="replace")
            if url in text and "Ctrl-C" in text:
                return text
    raise AssertionError(f"the demo did not print {url} in {timeout}s:\n"
                         + data.decode(errors="replace"))


def assert_stops_cleanly(proc: subprocess.Popen, port: int) -> None:
    """SIGINT ends the demo with 0 and nothing it started survives; its port is closed."""
    before = descendants(proc.pid)
    assert before, "the demo started no processes?"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    deadline = time.monotonic() + 5
    while [p for p in before if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in before if alive(p)]
    assert not left, [Path(f"/proc/{p}/cmdline").read_text() for p in left]
    assert not port_open(port)


async def login(session: aiohttp.ClientSession, url: str, username: str, password: str):
    async with session.get(f"{url}/hub/login") as resp:
        assert resp.status == 200
        page = await resp.text()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    async with session.post(f"{url}/hub/login?next=", data={
        "username": username, "password": password, "_xsrf": xsrf,
    }, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
    return xsrf


@pytest.fixture
def demo(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdash_hub.cli", "demo", "--port", str(port),
         "--workdir", str(tmp_path / "demo")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / "demo.err", "w"),
    )
    try:
        banner = read_banner(proc, f"http://127.0.0.1:{port}", START_TIMEOUT)
        yield proc, port, banner, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_demo_login_spawn_launcher_and_clean_stop(demo):
    proc, port, banner, tmp_path = demo
    url = f"http://127.0.0.1:{port}"
    first = re.search(r"^\s+(\S+) / (\S+)", banner.split("logins:", 1)[1], re.M)
    assert first, banner
    username, password = first.groups()

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        await login(session, url, username, password)
        # the profile chooser lists the demo's flavors
        async with session.get(f"{url}/hub/spawn") as resp:
            page = await resp.text()
            assert resp.status == 200
            assert "cpu-small" in page and "cpu-large" in page
        xsrf = re.search(r'xsrf_token: "([^"]+)"', page).group(1)  # bound to the user now
        async with session.post(f"{url}/hub/spawn/{username}", data={
            "profile": "cpu-small", "_xsrf": xsrf,
        }) as resp:
            assert resp.status == 200, await resp.text()
        # the notebook server answers through the proxy; a page (not the API) takes the
        # browser through the hub's OAuth first
        deadline = time.monotonic() + 120  # a loaded machine imports jupyter_server slowly
        while True:
            async with session.get(f"{url}/user/{username}/files/kdash-demo-check"):
                pass
            async with session.get(f"{url}/user/{username}/api/status") as resp:
                if resp.status == 200 and "started" in await resp.text():
                    break
            assert time.monotonic() < deadline, "the notebook server did not come up"
            await asyncio.sleep(0.5)
        # the launcher's page, logged in through the hub
        async with session.get(f"{url}/services/kdash-launcher/") as resp:
            assert resp.status == 200
            assert "kdash" in (await resp.text()).lower()
        async with session.post(f"{url}/hub/api/users/{username}/tokens",
                                headers={"X-XSRFToken": xsrf}, json={"note": "demo"}) as resp:
            assert resp.status == 201
            token = (await resp.json())["token"]
        headers = {"Authorization": f"token {token}"}
        # the home is kept across a server restart: write a file, stop, start, read it back
        note = {"type": "file", "format": "text", "content": "kept across restarts"}
        async with session.put(f"{url}/user/{username}/api/contents/kept.txt",
                               headers=headers, json=note) as resp:
            assert resp.status in (200, 201), await resp.text()
        await restart_server(session, url, username, headers)
        async with session.get(f"{url}/user/{username}/api/contents/kept.txt",
                               headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["content"] == "kept across restarts"
        # a side service next to the notebook, through the launcher's REST API
        api = f"{url}/services/kdash-launcher/api/instances"
        async with session.post(api, headers=headers, json={"template": "redis"}) as resp:
            assert resp.status == 201, await resp.text()
        deadline = time.monotonic() + 60
        while True:
            async with session.get(api, headers=headers) as resp:
                instances = (await resp.json())["instances"]
            if [i for i in instances if i["name"] == "redis" and i["status"] == "ready"]:
                break
            assert time.monotonic() < deadline, instances
            await asyncio.sleep(0.3)

    assert_stops_cleanly(proc, port)
    # the folder is kept (logs included), and the banner said where it is
    assert (tmp_path / "demo" / "hub" / "jupyterhub.log").exists()
    assert f"files and logs: {tmp_path / 'demo'}" in banner


async def restart_server(session: aiohttp.ClientSession, url: str, username: str,
                         headers: dict[str, str]) -> None:
    """Stop the user's server and start it again with the same profile, through the REST API."""
    server = f"{url}/hub/api/users/{username}/server"
    async with session.delete(server, headers=headers) as resp:
        assert resp.status in (202, 204), await resp.text()
    deadline = time.monotonic() + 120
    while True:
        async with session.get(f"{url}/hub/api/users/{username}", headers=headers) as resp:
            if not (await resp.json()).get("servers"):
                break
        assert time.monotonic() < deadline, "the server did not stop"
        await asyncio.sleep(0.5)
    async with session.post(server, headers=headers, json={"profile": "cpu-small"}) as resp:
        assert resp.status in (201, 202), await resp.text()
    deadline = time.monotonic() + 120
    while True:
        async with session.get(f"{url}/user/{username}/api/status", headers=headers) as resp:
            if resp.status == 200:
                return
        assert time.monotonic() < deadline, "the server did not come back"
        await asyncio.sleep(0.5)


def test_demo_help_names_its_options():
    out = subprocess.run(
        [sys.executable, "-m", "kdash_hub.cli", "demo", "--help"], cwd=REPO,
        capture_output=True, text=True, check=True,
    ).stdout
    assert "--port" in out and "--workdir" in out


def test_demo_refuses_a_busy_port_and_says_what_to_do(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kdash_hub.cli", "demo", "--port", str(port),
             "--workdir", str(tmp_path / "demo")],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "--port" in result.stderr
