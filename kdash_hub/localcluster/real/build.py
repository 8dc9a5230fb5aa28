"""Build the real Kubernetes control plane from pinned Go modules, cached outside the checkout.

The Go modules live in `tools/kube/` of the repository (one per upstream project, so their
dependency graphs never have to agree): `kubernetes/` (kube-apiserver, kube-controller-manager,
kube-scheduler of one k8s.io/kubernetes release, with a `replace` per staging module),
`etcd/` and `helm/`. Each go.sum is committed, so every module is checksum-verified, and
`-mod=readonly` refuses anything that isn't pinned there.

A binary is cached under `<cache>/<component>-<version>-<key>/` where the key hashes the
module's go.mod and go.sum, the Go version and the flags: a second build finds it and neither
compiles nor downloads. `python -m kdash_hub.localcluster.real.build` builds (or finds) all.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"


@dataclass(frozen=True)
class Component:
    """One binary: which module folder builds it, from which package, with which flags."""

    name: str
    module: str
    package: str
    version: str
    ldflags: tuple[str, ...] = ()


_KUBE_LDFLAGS = (
    f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
    "-X k8s.io/component-base/version.gitMajor=1",
    "-X k8s.io/component-base/version.gitMinor=" + KUBERNETES_VERSION.split(".")[1],
    "-X k8s.io/component-base/version.gitTreeState=clean",
    "-X k8s.io/client-go/pkg/version.gitVersion=" + KUBERNETES_VERSION,
)

COMPONENTS: tuple[Component, ...] = (
    Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION),
    Component("kube-apiserver", "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver",
              KUBERNETES_VERSION, _KUBE_LDFLAGS),
    Component("kube-controller-manager", "kubernetes",
              "k8s.io/kubernetes/cmd/kube-controller-manager", KUBERNETES_VERSION, _KUBE_LDFLAGS),
    Component("kube-scheduler", "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler",
              KUBERNETES_VERSION, _KUBE_LDFLAGS),
    Component("helm", "helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION,
              (f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",)),
)


class BuildError(RuntimeError):
    """The control plane can't be built here; the message says what is missing."""


def go_binary_candidates() -> list[str]:
    """Where Go is looked for: PATH first, then the usual install folders."""
    found = shutil.which("go")
    return ([found] if found else []) + ["/usr/local/go/bin/go", "/usr/lib/go/bin/go"]


def tools_dir() -> Path:
    """`tools/kube` of the checkout this package runs from (or $KDASH_KUBE_TOOLS)."""
    override = os.environ.get("KDASH_KUBE_TOOLS")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "tools" / "kube"
        if (candidate / "kubernetes" / "go.mod").is_file():
            return candidate
    raise BuildError(
        "tools/kube (the Go modules of the control plane) was not found: the real control "
        "plane is built from a checkout of kdash-hub, not from an installed wheel "
        "(or set KDASH_KUBE_TOOLS to the folder)")


def cache_dir() -> Path:
    """Where built binaries are kept: $KDASH_KUBE_CACHE, else ~/.cache/kdash-hub/kube."""
    override = os.environ.get("KDASH_KUBE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdash-hub" / "kube"


def go_binary() -> str:
    found = next((p for p in go_binary_candidates() if os.access(p, os.X_OK)), None)
    if not found:
        raise BuildError(
            "no Go toolchain: the real control plane is built from Go modules and needs "
            "Go 1.26 or newer on PATH (https://go.dev/doc/install, or Debian's golang-go "
            "if it is new enough)")
    return found


def go_version(go: str) -> str:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    version = out.stdout.strip()
    match = re.fullmatch(r"go(\d+)\.(\d+)(?:\.\d+)?\S*", version)
    if not match:
        raise BuildError(f"{go} did not say its version ({out.stderr.strip() or version!r})")
    if (int(match[1]), int(match[2])) < (1, 26):
        raise BuildError(f"{go} is {version}; the pinned Kubernetes {KUBERNETES_VERSION} "
                         "needs Go 1.26 or newer")
    return version


def component_key(component: Component, tools: Path, goversion: str) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((tools / component.module / name).read_bytes())
    digest.update("\0".join((goversion, component.package, *component.ldflags)).encode())
    return digest.hexdigest()[:16]


def binary_path(component: Component, tools: Path, goversion: str) -> Path:
    key = component_key(component, tools, goversion)
    return cache_dir() / f"{component.name}-{component.version}-{key}" / component.name


def _explain_failure(component: Component, output: str) -> str:
    tail = "\n".join(output.strip().splitlines()[-20:])
    network = ("dial tcp", "no such host", "i/o timeout", "connection refused",
               "proxyconnect", "TLS handshake timeout", "server response: 40",
               "module lookup disabled", "GOPROXY=off", "GOFLAGS=-mod=mod", "missing go.sum")
    if any(marker in output for marker in network):
        return (f"{component.name}: its Go modules could not be downloaded (no network to the "
                f"Go module proxy, GOPROXY={os.environ.get('GOPROXY', 'default')}); "
                f"go said:\n{tail}")
    if "verifying" in output and "checksum mismatch" in output:
        return f"{component.name}: a module does not match go.sum (tampered?):\n{tail}"
    return f"{component.name}: go build failed:\n{tail}"


def build_component(component: Component, tools: Path, go: str, goversion: str,
                    progress: Callable[[str], None], target: Path | None = None) -> Path:
    """Build once into `target` (default: the kube cache's `binary_path`), then find it."""
    target = target or binary_path(component, tools, goversion)
    if target.is_file() and os.access(target, os.X_OK):
        progress(f"{component.name} {component.version}: cached ({target})")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time per binary: a second process waits, then finds it cached
    with open(target.parent / ".lock", "w") as lock:
        if not _try_lock(lock):
            progress(f"{component.name} {component.version}: another build is running; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            progress(f"{component.name} {component.version}: cached ({target})")
            return target
        return _compile(component, tools, go, target, progress)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _compile(component: Component, tools: Path, go: str, target: Path,
             progress: Callable[[str], None]) -> Path:
    started = time.monotonic()
    progress(f"{component.name} {component.version}: building from Go modules ...")
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local"}
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / component.name
        cmd = [go, "build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *component.ldflags)),
               "-o", str(out), component.package]
        done = subprocess.run(cmd, cwd=tools / component.module, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.is_file():
            raise BuildError(_explain_failure(component, done.stdout + done.stderr))
        os.replace(out, target)
    progress(f"{component.name} {component.version}: built in "
             f"{time.monotonic() - started:.0f} s ({target})")
    return target


def ensure_binaries(names: tuple[str, ...] | None = None,
                    progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Every component (or those named), built once and then found in the cache."""
    tools = tools_dir()
    go = go_binary()
    goversion = go_version(go)
    wanted = [c for c in COMPONENTS if names is None or c.name in names]
    unknown = set(names or ()) - {c.name for c in COMPONENTS}
    if unknown:
        raise BuildError(f"unknown components: {', '.join(sorted(unknown))}")
    return {c.name: build_component(c, tools, go, goversion, progress) for c in wanted}


def cached_binaries() -> dict[str, Path] | None:
    """The binaries if all are already built (no Go needed to find them), else None."""
    try:
        tools = tools_dir()
        goversion = go_version(go_binary())
    except BuildError:
        return None
    paths = {c.name: binary_path(c, tools, goversion) for c in COMPONENTS}
    return paths if all(p.is_file() for p in paths.values()) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdash_hub.localcluster.real.build",
        description="Build (or find in the cache) the real control plane's binaries.")
    parser.add_argument("components", nargs="*", help="only these (default: all)")
    args = parser.parse_args(argv)
    try:
        paths = ensure_binaries(tuple(args.components) or None)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
