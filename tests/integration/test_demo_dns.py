"""The demo on network namespaces: a user's notebook reaches the PostgreSQL instance they
launched by its name, as on a real cluster (cluster DNS, clusterdns.py).

Everything is as a user does it: the demo as a subprocess, a login, a spawn, a launch through
the launcher's REST API, then code run in the notebook's own kernel (over the Jupyter kernel
WebSocket) that resolves the instance's name with the C library and speaks PostgreSQL's
protocol to it. Needs what netns needs (root, iproute2, util-linux, nftables) and Debian's
PostgreSQL server (the `postgres:*` image's program here)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import time
import uuid

import aiohttp
import pytest

from kdash_hub.demo import pod_network_choice
from kdash_hub.localcluster import imageprograms
from tests.integration.test_demo import assert_stops_cleanly, demo, login  # noqa: F401

# run in the notebook: the instance by its short name (the search domain of the user's
# namespace), then a PostgreSQL SSLRequest; a PostgreSQL server answers one byte, S or N
PROBE = """
import json, socket, struct
out = {}
try:
    out["addrs"] = sorted({i[4][0] for i in socket.getaddrinfo(HOST, PORT, socket.AF_INET)})
    with socket.create_connection((HOST, PORT), timeout=5) as c:
        c.sendall(struct.pack("!ii", 8, 80877103))
        out["answer"] = c.recv(1).decode()
except OSError as e:
    out["error"] = repr(e)
print("PROBE " + json.dumps(out))
"""


async def run_in_kernel(session: aiohttp.ClientSession, base: str, headers: dict[str, str],
                        code: str, within: float = 60) -> str:
    """Start a kernel in the user's notebook server, run `code`, return its stdout."""
    async with session.post(f"{base}/api/kernels", headers=headers,
                            json={"name": "python3"}) as resp:
        assert resp.status == 201, await resp.text()
        kernel = (await resp.json())["id"]
    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    out = []
    try:
        async with session.ws_connect(ws_url, headers=headers) as ws:
            await ws.send_str(json.dumps({
                "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False,
                            "stop_on_error": True}}))
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if (data.get("parent_header") or {}).get("msg_id") != msg_id:
                    continue
                kind = data.get("msg_type") or data["header"]["msg_type"]
                if kind == "stream":
                    out.append(data["content"]["text"])
                elif kind == "error":
                    out.append("\n".join(data["content"].get("traceback") or []))
                elif kind == "status" and data["content"]["execution_state"] == "idle":
                    break
    finally:
        async with session.delete(f"{base}/api/kernels/{kernel}", headers=headers):
            pass
    return "".join(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's netns pod network needs root")
@pytest.mark.skipif(os.geteuid() == 0 and pod_network_choice()[0] != "netns",
                    reason="netns is not possible here")
@pytest.mark.skipif(importlib.util.find_spec("ipykernel") is None,
                    reason="the notebook runs the probe in a Python kernel: ipykernel comes with "
                           "the demo extra, which the z2jh versions' venv (the hub image's "
                           "packages) leaves out")
@pytest.mark.skipif(imageprograms.program_for({"image": "postgres:16"}) is None,
                    reason="no PostgreSQL server on this machine (apt-get install postgresql)")
async def test_the_notebook_reaches_its_postgresql_by_name(demo):  # noqa: F811
    proc, port, banner, tmp_path = demo
    url = f"http://127.0.0.1:{port}"
    assert "pod network: netns" in banner, banner
    first = re.search(r"^\s+(\S+) / (\S+)", banner.split("logins:", 1)[1], re.M)
    assert first, banner
    username, password = first.groups()

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        xsrf = await login(session, url, username, password)
        async with session.get(f"{url}/hub/spawn") as resp:
            xsrf = re.search(r'xsrf_token: "([^"]+)"', await resp.text()).group(1)
        async with session.post(f"{url}/hub/api/users/{username}/tokens",
                                headers={"X-XSRFToken": xsrf}, json={"note": "dns"}) as resp:
            assert resp.status == 201
            headers = {"Authorization": f"token {(await resp.json())['token']}"}
        async with session.post(f"{url}/hub/api/users/{username}/server", headers=headers,
                                json={"profile": "cpu-small"}) as resp:
            assert resp.status in (201, 202), await resp.text()
        base = f"{url}/user/{username}"
        deadline = time.monotonic() + 150
        while True:
            async with session.get(f"{base}/api/status", headers=headers) as resp:
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, "the notebook server did not come up"
            await asyncio.sleep(0.5)

        api = f"{url}/services/kdash-launcher/api/instances"
        async with session.post(api, headers=headers, json={"template": "postgresql"}) as resp:
            assert resp.status == 201, await resp.text()
            name = (await resp.json()).get("name") or "postgresql"
        deadline = time.monotonic() + 120
        while True:
            async with session.get(api, headers=headers) as resp:
                instances = (await resp.json())["instances"]
            if [i for i in instances if i["name"] == name and i["status"] == "ready"]:
                break
            assert time.monotonic() < deadline, instances
            await asyncio.sleep(0.5)

        # the notebook resolves the instance's Service by its short name and gets an answer
        # from PostgreSQL itself (S or N to an SSLRequest); the server may still be
        # initialising its data directory for a moment after "ready"
        code = PROBE.replace("HOST", repr(name)).replace("PORT", "5432")
        deadline = time.monotonic() + 90
        while True:
            text = await run_in_kernel(session, base, headers, code)
            found = re.search(r"PROBE (.*)", text)
            result = json.loads(found.group(1)) if found else {"raw": text}
            if result.get("answer") in ("S", "N"):
                break
            assert time.monotonic() < deadline, result
            await asyncio.sleep(1)
        assert result["addrs"] and all(a.startswith("10.244.") for a in result["addrs"])
        # and an unknown name is "not known", not a hang or a temporary failure
        text = await run_in_kernel(session, base, headers, PROBE.replace(
            "HOST", repr("no-such-instance")).replace("PORT", "5432"))
        assert "gaierror(-2" in text, text

    assert_stops_cleanly(proc, port)


def test_the_demo_falls_back_to_the_loopback_and_says_why(monkeypatch):
    """Without root (or without the tools) the demo runs on the loopback, and its banner
    says what that costs; --pod-network netns then fails with the reason instead."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    network, note = pod_network_choice("auto")
    assert network == "loopback"
    assert "it needs root" in note and "no cluster DNS" in note, note
    with pytest.raises(RuntimeError, match="--pod-network netns: it needs root"):
        pod_network_choice("netns")
    network, note = pod_network_choice("loopback")
    assert network == "loopback" and "--pod-network loopback" in note
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda name, path=None: None if name == "nft"
                        else "/usr/bin/" + name)
    network, note = pod_network_choice("auto")
    assert network == "loopback" and "nft missing" in note and "nftables" in note, note
