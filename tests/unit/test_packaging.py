"""What `pip install kdash-hub` gives an admin's hub image: the core, and nothing for dev.

The sdist and the wheels of both distributions (kdash-hub, and kdash-hub-local with the local
cluster, the dev services and the demo) are built as CI builds them (`python -m build`:
sdist, then the wheel from the sdist), from a copy of the sources that includes an old
egg-info when the checkout has one (an editable install leaves one; it once leaked the local
cluster into the sdist). The core wheel is then installed with `--no-deps` into a fresh venv
that sees only the distributions its metadata declares, taken file by file (from each one's
RECORD) from this environment, so an undeclared import fails here and not in the hub pod.
"""

from __future__ import annotations

import ast
import email
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
DOCKERFILE = REPO / "helm-values" / "hub-image" / "Dockerfile"
DOCKERIGNORE = REPO / "helm-values" / "hub-image" / "Dockerfile.dockerignore"
# kdash-hub-local's build needs its folder and the sources its symlinks point to
SOURCES = ("kdash_hub", "kdash-hub-local")
LOCAL_PARTS = ("kdash_hub/localcluster/", "kdash_hub/dev/", "kdash_hub/demo.py")
# what the hub image must never install: the local cluster's, the demo's and the tests' deps
DEV_ONLY = {canonicalize_name(n) for n in (
    "kdash-hub-local", "kubernetes-validate", "jupyter_server", "jupyterlab", "ipykernel",
    "pytest", "pytest-asyncio", "playwright", "ruff", "build", "jupyterhub-idle-culler",
)}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def dockerignore_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on relative paths."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def checkout_files() -> list[Path]:
    """The checkout's files, without venvs, node_modules, .git and caches (never sent)."""
    skip = {".git", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache", "artifacts"}
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".venv")]
        found += [Path(folder, f) for f in files if not Path(folder, f).is_symlink()]
    return sorted(found)


def docker_context(dockerignore: Path, dest: Path) -> Path:
    """Copy what `docker build` with this .dockerignore sends as its context (the last
    matching pattern decides; a pattern matching a folder covers everything in it)."""
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), dockerignore_pattern(line.lstrip("!"))))
    for path in checkout_files():
        rel = path.relative_to(REPO).as_posix()
        parts = rel.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        sent = True
        for negated, regex in rules:
            if any(regex.fullmatch(c) for c in candidates):
                sent = negated
        if sent:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """Build both distributions; {"core-wheel", "core-sdist", "local-wheel", "local-sdist"}.

    The core from the hub image's build context (helm-values/hub-image/Dockerfile.dockerignore),
    kdash-hub-local from a copy of the checkout."""
    context = docker_context(DOCKERIGNORE, tmp_path_factory.mktemp("context"))
    if (REPO / "kdash_hub.egg-info").is_dir():  # what an editable install leaves behind
        shutil.copytree(REPO / "kdash_hub.egg-info", context / "kdash_hub.egg-info")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "build", "dist", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)]
    run([*build, str(context)])
    run([*build, str(src / "kdash-hub-local")])
    return {
        "core-wheel": out / f"kdash_hub-{VERSION}-py3-none-any.whl",
        "core-sdist": out / f"kdash_hub-{VERSION}.tar.gz",
        "local-wheel": out / f"kdash_hub_local-{VERSION}-py3-none-any.whl",
        "local-sdist": out / f"kdash_hub_local-{VERSION}.tar.gz",
    }


def wheel_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as whl:
        return whl.namelist()


def wheel_metadata(path: Path) -> email.message.Message:
    with zipfile.ZipFile(path) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(whl.read(name))


def core_requirements(meta: email.message.Message) -> list[Requirement]:
    """Requires-Dist entries that apply without any extra."""
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed() -> dict[str, metadata.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}


# left out of the dev venv on purpose (`make python-packages`): jsonschema's optional IRI
# grammar, which jsonschema imports only if it is there (5 s of CPU in every process)
LEFT_OUT = {"rfc3987-syntax"}


def closure(reqs: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions `reqs` pull in, transitively (with the extras asked for)."""
    env = installed()
    found: dict[str, metadata.Distribution] = {}
    todo = [(r, "") for r in reqs]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in LEFT_OUT and name not in env:
            continue
        dist = env.get(name)
        assert dist is not None, f"{req} is declared but not installed here"
        found[name] = dist
        for wanted in ("", *sorted(req.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return found


def link_distributions(dists: dict[str, metadata.Distribution], farm: Path) -> None:
    """Symlink every file of `dists` (their RECORD) into `farm`, a site-packages stand-in."""
    for dist in dists.values():
        for file in dist.files or []:
            if file.parts[0] == "..":
                continue  # scripts in bin/
            target = farm / file
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(dist.locate_file(file), target)


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, dists) -> Path:
    """A venv with the core wheel (--no-deps) and only its declared dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(dists["core-wheel"])])
    farm = venv / "declared-deps"
    link_distributions(closure(core_requirements(wheel_metadata(dists["core-wheel"]))), farm)
    site = Path(run([str(python), "-c", "import site; print(site.getsitepackages()[0])"])
                .stdout.strip())
    (site / "declared-deps.pth").write_text(f"{farm}\n")
    return venv


def test_the_core_wheel_holds_no_local_cluster_dev_services_or_demo(dists):
    names = wheel_names(dists["core-wheel"])
    assert [n for n in names if n.startswith(LOCAL_PARTS)] == []
    # and everything the hub needs at run time, data files included
    for needed in ("kdash_hub/z2jh.py", "kdash_hub/cli.py", "kdash_hub/spawner/spawner.py",
                   "kdash_hub/authenticator/templates/login.html",
                   "kdash_hub/services/launcher/openapi.yaml",
                   "kdash_hub/services/launcher/catalog/postgresql.yaml",
                   "kdash_hub/services/launcher/web/templates/page.html",
                   "kdash_hub/services/culler/app.py"):
        assert needed in names
    with zipfile.ZipFile(dists["core-wheel"]) as whl:
        entry_points = whl.read(f"kdash_hub-{VERSION}.dist-info/entry_points.txt").decode()
    assert "kdash = kdash_hub.spawner:KDashSpawner" in entry_points
    assert "kdash = kdash_hub.authenticator:KDashAuthenticator" in entry_points
    assert "kdash-hub = kdash_hub.cli:main" in entry_points


def test_the_core_sdist_is_the_core(dists):
    with tarfile.open(dists["core-sdist"]) as sdist:
        names = [n.split("/", 1)[1] for n in sdist.getnames() if "/" in n]
    assert [n for n in names if n.startswith((*LOCAL_PARTS, "kdash-hub-local"))] == []
    for needed in ("pyproject.toml", "setup.py", "kdash_hub/z2jh.py", "spawner/spawner.py",
                   "services/launcher/openapi.yaml", "authenticator/templates/login.html"):
        assert needed in names


def test_the_local_distribution_holds_the_local_parts_only(dists):
    names = wheel_names(dists["local-wheel"])
    for needed in ("kdash_hub/localcluster/cluster.py",
                   "kdash_hub/localcluster/apiserver/server.py", "kdash_hub/dev/hub.py",
                   "kdash_hub/dev/oidc_provider.mjs", "kdash_hub/demo.py"):
        assert needed in names
    code = [n for n in names if not n.startswith("kdash_hub_local-")]
    assert [n for n in code if not n.startswith(LOCAL_PARTS)] == []
    # every module of the checkout's local parts, sub-packages included
    sources = {str(f.relative_to(REPO)) for part in ("localcluster", "dev")
               for f in (REPO / "kdash_hub" / part).rglob("*.py") if "__pycache__" not in f.parts}
    assert sorted(sources - set(code)) == []
    requires = wheel_metadata(dists["local-wheel"]).get_all("Requires-Dist")
    assert f"kdash-hub=={VERSION}" in requires
    with tarfile.open(dists["local-sdist"]) as sdist:
        # the symlinks to ../kdash_hub were followed: real files in the sdist
        member = sdist.getmember(f"kdash_hub_local-{VERSION}/kdash_hub/localcluster/cluster.py")
        assert member.isfile()


def test_the_core_requirements_pull_no_dev_or_test_dependency(dists):
    meta = wheel_metadata(dists["core-wheel"])
    reqs = core_requirements(meta)
    pulled = closure(reqs)
    assert sorted(DEV_ONLY & set(pulled)) == []
    # the local parts are one extra away, and named so
    assert "kdash-hub-local==0.1.0; extra == \"local\"" in meta.get_all("Requires-Dist")
    # the direct requirements are exactly what the core's code imports (nothing for dev's
    # sake, nothing only there by luck as a dependency of a dependency)
    direct = {canonicalize_name(r.name) for r in reqs}
    assert direct == imported_distributions()


def core_sources() -> list[Path]:
    """The core's Python files: what the kdash-hub wheel ships."""
    files = [f for folder in ("kdash_hub", "spawner", "authenticator", "services")
             for f in (REPO / folder).rglob("*.py") if "__pycache__" not in f.parts]
    local = [REPO / part for part in LOCAL_PARTS]
    return [f for f in files if not any(f == d or d in f.parents for d in local)]


def imported_distributions() -> set[str]:
    """Distributions whose modules the core imports (absolute imports, stdlib apart)."""
    modules: set[str] = set()
    for path in core_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"kdash_hub", "__future__"}
    owners = metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    assert missing == [], f"imported but installed by no distribution: {missing}"
    return {canonicalize_name(owners[m][0]) for m in modules}


CORE_IMPORTS = """
import importlib.util, sys
import kdash_hub.spawner, kdash_hub.authenticator, kdash_hub.z2jh, kdash_hub.cli
import kdash_hub.services.launcher.app, kdash_hub.services.culler.app
from importlib.metadata import entry_points
assert entry_points(group="jupyterhub.spawners")["kdash"].load().__name__ == "KDashSpawner"
assert entry_points(group="jupyterhub.authenticators")["kdash"].load().__name__ == \\
    "KDashAuthenticator"
for absent in ("kdash_hub.localcluster", "kdash_hub.dev", "kdash_hub.demo",
               "kubernetes_validate", "jupyter_server", "pytest", "jupyterhub_idle_culler"):
    assert importlib.util.find_spec(absent) is None, absent
print("ok", kdash_hub.spawner.__file__)
"""


def test_the_core_imports_with_only_its_declared_dependencies(fresh_venv):
    python = fresh_venv / "bin" / "python"
    result = run([str(python), "-I", "-c", CORE_IMPORTS], cwd=fresh_venv)
    assert result.stdout.startswith("ok " + str(fresh_venv))


@pytest.mark.parametrize("command", ["demo", "local-cluster"])
def test_the_cli_says_how_to_get_the_local_parts(fresh_venv, command):
    cli = fresh_venv / "bin" / "kdash-hub"
    result = subprocess.run([str(cli), command, "--help"], capture_output=True, text=True,
                            timeout=120, cwd=fresh_venv)
    assert result.returncode == 2
    assert "install kdash-hub[local] for local-cluster/demo" in result.stderr
    listed = run([str(cli), "--help"], cwd=fresh_venv).stdout
    assert "install kdash-hub[local]" in listed
    # the core's own commands work
    assert run([str(cli), "culler", "--help"], cwd=fresh_venv).stdout


def test_the_local_wheel_completes_the_core(fresh_venv, dists, tmp_path):
    venv = tmp_path / "venv"
    shutil.copytree(fresh_venv, venv, symlinks=True)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(dists["local-wheel"])])
    local = [r for r in wheel_metadata(dists["local-wheel"]).get_all("Requires-Dist")
             if not r.startswith("kdash-hub=")]
    farm = venv / "local-deps"
    link_distributions(closure([Requirement(r) for r in local]), farm)
    site = Path(run([str(python), "-c", "import site; print(site.getsitepackages()[0])"])
                .stdout.strip())
    (site / "local-deps.pth").write_text(f"{farm}\n")
    run([str(python), "-I", "-c", "import kdash_hub.localcluster, kdash_hub.dev.hub, "
                                  "kdash_hub.demo"], cwd=venv)
    out = run([str(venv / "bin" / "python"), "-m", "kdash_hub.cli", "local-cluster", "--help"],
              cwd=venv).stdout
    assert "--kubeconfig" in out


def test_the_hub_image_check_passes_on_the_core_alone(fresh_venv):
    """The Dockerfile's own post-install check, run where only the core is installed."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"(python3 -c \"[^\"]+\")", text)
    assert match, "the Dockerfile checks the installed pack with python3 -c"
    check = shlex.split(match.group(1))
    run([str(fresh_venv / "bin" / "python"), "-I", *check[1:]], cwd=fresh_venv)
    # and that check does fail when the local parts are there
    result = subprocess.run([sys.executable, "-I", *check[1:]], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "kdash_hub.localcluster" in result.stderr
