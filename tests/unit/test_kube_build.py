"""The control plane's build: clear messages for what is missing, and the cache.

Each failure is produced for real with a tiny Go module (no Kubernetes compile here): no Go
on the machine, no way to download a module, a compile error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kdash_hub.localcluster.real import build

pytestmark = pytest.mark.skipif(shutil.which("go") is None and not Path(
    "/usr/local/go/bin/go").exists(), reason="needs a Go toolchain")


def tiny_tools(tmp_path: Path, source: str, require: str = "") -> tuple[Path, build.Component]:
    module = tmp_path / "tools" / "tiny"
    module.mkdir(parents=True)
    (module / "go.mod").write_text(f"module example.invalid/tiny\n\ngo 1.26.0\n{require}")
    (module / "go.sum").write_text("")
    (module / "main.go").write_text(source)
    return tmp_path / "tools", build.Component("tiny", "tiny", "example.invalid/tiny", "v0")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KDASH_KUBE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_no_go_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "go_binary_candidates", lambda: ["/nonexistent/go"])
    with pytest.raises(build.BuildError, match="no Go toolchain.*Go 1.26"):
        build.go_binary()


def test_builds_once_then_finds_it_in_the_cache(tmp_path: Path, cache: Path) -> None:
    tools, component = tiny_tools(tmp_path, "package main\n\nfunc main() {}\n")
    go = build.go_binary()
    version = build.go_version(go)
    lines: list[str] = []
    first = build.build_component(component, tools, go, version, lines.append)
    assert first.is_file() and str(first).startswith(str(cache))
    assert any("built in" in line for line in lines)
    lines.clear()
    second = build.build_component(component, tools, go, version, lines.append)
    assert second == first and lines == [f"tiny v0: cached ({first})"]
    # a changed go.mod is another key: rebuilt, not served stale
    (tools / "tiny" / "go.mod").write_text("module example.invalid/tiny\n\ngo 1.26.0\n// x\n")
    assert build.binary_path(component, tools, version) != first


def test_a_compile_error_is_reported_with_the_compiler_output(tmp_path: Path, cache: Path) -> None:
    tools, component = tiny_tools(tmp_path, "package main\n\nfunc main() { undefinedThing() }\n")
    go = build.go_binary()
    with pytest.raises(build.BuildError, match=r"tiny: go build failed:[\s\S]*undefinedThing"):
        build.build_component(component, tools, go, build.go_version(go), lambda _: None)
    assert not list(cache.rglob("tiny"))  # nothing half-built left in the cache


def test_no_network_names_the_download(tmp_path: Path, cache: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = 'package main\n\nimport _ "example.invalid/notthere"\n\nfunc main() {}\n'
    tools, component = tiny_tools(tmp_path, source,
                                  "\nrequire example.invalid/notthere v1.0.0\n")
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    go = build.go_binary()
    with pytest.raises(build.BuildError, match="could not be downloaded"):
        build.build_component(component, tools, go, build.go_version(go), lambda _: None)


def test_the_pinned_modules_are_complete() -> None:
    """Every component's module folder has go.mod and go.sum, and kubernetes' go.mod
    replaces each staging module by the matching v0 release."""
    tools = build.tools_dir()
    minor = build.KUBERNETES_VERSION.split(".")[1]
    for component in build.COMPONENTS:
        assert (tools / component.module / "go.sum").stat().st_size > 0
    gomod = (tools / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {build.KUBERNETES_VERSION}" in gomod
    replaces = [line.split() for line in gomod.splitlines() if "=>" in line]
    assert len(replaces) > 25
    for parts in replaces:
        assert parts[-1] == f"v0.{minor}.{build.KUBERNETES_VERSION.rsplit('.', 1)[1]}", parts
