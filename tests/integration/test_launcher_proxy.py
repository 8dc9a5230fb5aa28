"""The authenticating proxy: HTTP and WebSocket to an instance's pod, owner only."""

import aiohttp


async def launch_echo(env, user, name, port, echo_server=None):
    """Launch an `echo` instance; with `echo_server`, that server answers as its pod."""
    status, inst = await env.call("POST", "instances", user, json_body={
        "template": "echo", "name": name, "values": {"PORT": port}})
    assert status == 201, inst
    assert inst["url"] == f"{env.hub.url}/services/kdash-launcher/proxy/{user}/{name}/"
    if echo_server is not None:
        await echo_server.serve_pod(env, user, name)
    return inst


async def test_http_proxy_forwards_for_the_owner_only(launcher_env, echo_server):
    env = launcher_env
    await launch_echo(env, "alice", "web", echo_server.port, echo_server)
    base = env.url + "proxy/alice/web/"
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "some/path?x=1&y=%20z", headers={
                **env.headers("alice"), "Cookie": "jupyterhub-session-id=abc; app=1"}) as resp:
            assert resp.status == 200 and resp.headers["X-Echo"] == "yes"
            seen = await resp.json()
        assert seen["path"] == "/some/path?x=1&y=%20z"  # prefix stripped, query kept
        assert "Authorization" not in seen["headers"]  # the hub token never leaves
        assert seen["headers"].get("Cookie") == "app=1"  # nor do hub cookies
        assert seen["headers"]["X-Forwarded-User"] == "alice"
        assert seen["headers"]["X-Forwarded-Prefix"] == "/services/kdash-launcher/proxy/alice/web"
        async with s.post(base + "form", data=b"payload",
                          headers=env.headers("alice")) as resp:
            assert resp.status == 201
            assert (await resp.json())["body"] == "payload"
        async with s.get(base + "redirect", headers=env.headers("alice"),
                         allow_redirects=False) as resp:
            # the app thinks it lives at /: its redirects and cookies stay in its proxy path
            assert resp.status == 302
            assert resp.headers["Location"] == "/services/kdash-launcher/proxy/alice/web/elsewhere"
            assert "Path=/services/kdash-launcher/proxy/alice/web" in resp.headers["Set-Cookie"]
        requests_before = len(echo_server.requests)
        for user in ("bob", "root"):  # another user; an admin without admin_proxy_access
            async with s.get(base, headers=env.headers(user)) as resp:
                assert resp.status == 404
        async with s.get(base, allow_redirects=False, headers={"Accept": "text/html"}) as resp:
            assert resp.status == 302  # a browser that isn't logged in goes to the hub login
            assert "/hub/api/oauth2/authorize" in resp.headers["Location"]
        async with s.get(base, allow_redirects=False) as resp:  # a program gets a 403
            assert resp.status == 403
        async with s.get(env.url + "proxy/alice/nothere/", headers=env.headers("alice")) as r:
            assert r.status == 404
        assert len(echo_server.requests) == requests_before  # nothing reached the instance

        # a stopped instance isn't proxied
        assert (await env.call("POST", "instances/alice/web/stop", "alice"))[0] == 200
        async with s.get(base, headers=env.headers("alice")) as resp:
            assert resp.status == 503 and "stopped" in (await resp.json())["message"]
    assert (await env.call("DELETE", "instances/alice/web", "alice"))[0] == 204


async def test_websocket_proxy(launcher_env, echo_server):
    env = launcher_env
    await launch_echo(env, "bob", "ws", echo_server.port, echo_server)
    url = env.url.replace("http://", "ws://") + "proxy/bob/ws/socket"
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, headers=env.headers("bob")) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "echo:hello"
            await ws.send_bytes(b"abc")
            assert (await ws.receive(timeout=5)).data == b"cba"
        try:
            async with s.ws_connect(url, headers=env.headers("alice")) as ws:
                raise AssertionError("alice got a websocket to bob's instance")
        except aiohttp.WSServerHandshakeError as e:
            assert e.status == 404
    assert (await env.call("DELETE", "instances/bob/ws", "bob"))[0] == 204


async def test_unreachable_instance_is_a_clear_502(launcher_env):
    env = launcher_env
    from kdash_hub.dev.ports import free_port

    await launch_echo(env, "carol", "gone", free_port())
    await env.wait_status("carol", "gone", "ready")  # its pod runs, but nothing listens
    async with aiohttp.ClientSession() as s, s.get(
            env.url + "proxy/carol/gone/", headers=env.headers("carol")) as resp:
        assert resp.status == 502 and "not reachable" in (await resp.json())["message"]
    assert (await env.call("DELETE", "instances/carol/gone", "carol"))[0] == 204


async def test_username_with_special_characters(launcher_env, echo_server, launcher_kube):
    env = launcher_env
    user = "frank@lab.org"
    inst = await launch_echo(env, user, "svc", echo_server.port, echo_server)
    assert inst["namespace"].startswith("kdash-frank-lab-org")  # escaped, with a hash
    status, info = await env.call("GET", "instances/frank%40lab.org/svc", user)
    assert status == 200 and info["owner"] == user
    async with aiohttp.ClientSession() as s:
        async with s.get(inst["url"] + "a%2Fb/c%20d", headers=env.headers(user)) as resp:
            assert resp.status == 200
            assert (await resp.json())["path"] == "/a%2Fb/c%20d"  # the encoding is kept
        # a look-alike user name is another user
        async with s.get(env.url + "proxy/frank-lab-org/svc/", headers=env.headers(user)) as r:
            assert r.status == 404
    deploy = await launcher_kube.get("Deployment", "svc", inst["namespace"])
    assert deploy["metadata"]["annotations"]["kdash-hub.io/owner-username"] == user
    assert (await env.call("DELETE", "instances/frank%40lab.org/svc", user))[0] == 204
