"""`kdash-hub templates validate|render` (the launcher's admin commands)."""

import argparse

import yaml

from kdash_hub.services.launcher import cli
from services.launcher.settings import CATALOG_DIR

BAD = "kind: Template\nname: Bad\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="kdash-hub")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_validate_ok_and_errors(tmp_path, capsys):
    assert run("templates", "validate", str(CATALOG_DIR)) == 0
    out = capsys.readouterr().out
    for template_id in ("postgresql", "minio", "tensorboard", "redis", "filebrowser"):
        assert f"ok      {template_id}" in out
    (tmp_path / "bad.yaml").write_text(BAD)
    assert run("templates", "validate", str(CATALOG_DIR), str(tmp_path)) == 1
    captured = capsys.readouterr()
    assert f"{tmp_path / 'bad.yaml'}:5: kind Namespace is not allowed" in captured.err
    assert "ok      redis" in captured.out  # the others still load


def test_render_prints_objects(capsys):
    assert run("templates", "render", str(CATALOG_DIR / "redis.yaml"), "--user", "Alice@Lab",
               "--name", "cache", "--set", "MAX_MEMORY=512Mi",
               "--set", "REDIS_PASSWORD=pw: {x}") == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["kind"] for o in objects] == ["Secret", "Deployment", "Service"]
    assert {o["metadata"]["namespace"] for o in objects} == {objects[0]["metadata"]["namespace"]}
    assert objects[0]["metadata"]["namespace"].startswith("kdash-alice-lab")
    assert objects[0]["stringData"]["REDIS_PASSWORD"] == "pw: {x}"
    limits = objects[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "512Mi"


def test_render_refuses_unknown_variables(capsys):
    assert run("templates", "render", str(CATALOG_DIR / "redis.yaml"), "--user", "a",
               "--set", "NAMESPACE=kube-system", "--set", "TYPO=1") == 1
    err = capsys.readouterr().err
    assert "NAMESPACE is set by the launcher" in err and "unknown variable 'TYPO'" in err


def test_render_broken_file(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(BAD)
    assert run("templates", "render", str(tmp_path / "bad.yaml"), "--user", "a") == 1
    assert "bad.yaml:5" in capsys.readouterr().err


def test_through_the_kdash_hub_dispatcher(tmp_path, capsys):
    from kdash_hub.cli import main

    (tmp_path / "bad.yaml").write_text(BAD)
    assert main(["templates", "validate", str(tmp_path)]) == 1
    assert "bad.yaml:5: kind Namespace" in capsys.readouterr().err
    assert main(["templates", "validate", str(CATALOG_DIR)]) == 0
