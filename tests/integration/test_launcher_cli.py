"""`kdash-hub services ...` and the Python client, against the real hub + launcher."""

import argparse
import asyncio
import json

import pytest

from kdash_hub.services.launcher import cli
from kdash_hub.services.launcher.client import LauncherClient, LauncherClientError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kdash-hub")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


async def test_services_commands(launcher_env, monkeypatch, capsys):
    env = launcher_env
    # what a notebook has: its API token and the hub's URL
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", env.tokens["dave"])
    monkeypatch.setenv("JUPYTERHUB_PUBLIC_URL", env.hub.url)
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)

    def sh(*argv):
        return asyncio.to_thread(run, *argv)

    assert await sh("services", "launch", "echo", "--name", "cli", "--set", "MESSAGE=a: b",
                    "--ttl", "1h") == 0
    assert "cli: pending" in capsys.readouterr().out
    assert await sh("services", "--json", "list") == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(i["name"], i["values"]["MESSAGE"]) for i in listing] == [("cli", "a: b")]
    assert await sh("services", "list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("USER") and "dave" in out and "cli" in out
    assert await sh("services", "stop", "cli") == 0
    assert "cli: stopped" in capsys.readouterr().out
    assert await sh("services", "start", "cli") == 0
    assert await sh("services", "extend", "cli", "--by", "2h") == 0
    assert "extended by 2h: it now lives until " in capsys.readouterr().out
    assert await sh("services", "extend", "cli", "--by", "30d") == 0
    assert "extended to the cap: this instance can live until " in capsys.readouterr().out
    assert await sh("services", "extend", "cli", "--by", "1h") == 1
    assert "is already at the cap" in capsys.readouterr().err
    assert await sh("services", "launch", "echo", "--set", "PORT=eighty") == 1
    assert "PORT" in capsys.readouterr().err
    assert await sh("services", "show", "cli", "--user", "alice") == 1  # not dave's: 404
    assert "(404)" in capsys.readouterr().err
    assert await sh("services", "templates") == 0
    assert "postgresql" in capsys.readouterr().out
    assert await sh("services", "delete", "cli") == 0
    assert capsys.readouterr().out == "deleted cli\n"
    assert await sh("services", "--json", "list") == 0
    assert json.loads(capsys.readouterr().out) == []
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "wrong")
    assert await sh("services", "list") == 1
    assert "(403)" in capsys.readouterr().err


async def test_python_client(launcher_env):
    env = launcher_env
    client = LauncherClient(url=env.url, token=env.tokens["carol"])

    def work():
        assert client.user == "carol"
        inst = client.launch("echo", name="py", values={"MESSAGE": "hi"})
        assert inst["owner"] == "carol"
        assert [i["name"] for i in client.list()] == ["py"]
        assert client.get("py")["values"]["MESSAGE"] == "hi"
        with pytest.raises(LauncherClientError) as e:
            client.launch("echo", name="py")
        assert e.value.status == 409
        client.delete("py")
        assert client.list() == []

    await asyncio.to_thread(work)
