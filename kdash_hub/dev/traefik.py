"""A real Traefik on 127.0.0.1 for the tests: `tools/traefik` of the checkout.

`tools/traefik` is a Go module that only pins Traefik v3.6.12 (the newest v3 whose whole
module graph the Go module proxy serves here; v3.7 needs modules it refuses) with the
`replace`/`exclude` lines of Traefik's own go.mod. It is built once, with the control
plane's Go helpers (kdash_hub.localcluster.real.build), into
`~/.cache/kdash-hub/traefik/<version>-<key>/traefik`, the key hashing go.mod, go.sum, the Go
version and the flags: a second build finds it there.

`Traefik(...).start()` runs it against a Kubernetes API server with a bearer token and the
cluster CA (verified), with the Kubernetes providers asked for (ingress-nginx annotations,
Traefik's own Ingress annotations, its CRDs), on free ports of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from kdash_hub.localcluster.real import build

from .gotools import GoTool
from .ports import free_port
from .process import terminate

VERSION = "v3.6.12"  # github.com/traefik/traefik/v3, as pinned in tools/traefik/go.mod
PACKAGE = "github.com/traefik/traefik/v3"
COMPONENT = build.Component("traefik", "traefik", f"{PACKAGE}/cmd/traefik", VERSION,
                            (f"-X {PACKAGE}/pkg/version.Version={VERSION}",))
KUBERNETES_PROVIDERS = frozenset({"kubernetesingressnginx", "kubernetesingress",
                                  "kubernetescrd"})


TOOL = GoTool(COMPONENT, "Traefik's pinned Go module")


def ensure_binary(progress: Callable[[str], None] = print) -> Path:
    """Traefik's binary: built the first time (about 20 minutes on 2 cores with a cold Go
    cache), then found in the cache."""
    return TOOL.ensure_binary(progress)


def cached_binary() -> Path | None:
    """The binary if it is built already, else None (nothing is compiled)."""
    return TOOL.cached_binary()


def module_dir() -> Path:
    """Traefik's source module as the Go module cache holds it (downloaded if missing, checked
    against tools/traefik/go.sum): where its CRD definitions are read from."""
    go = build.go_binary()
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{PACKAGE}@{VERSION}"],
        cwd=TOOL.tools_dir() / COMPONENT.module, capture_output=True, text=True, check=False,
        env={**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"})
    try:
        found = json.loads(done.stdout)["Dir"]
    except (ValueError, KeyError):
        raise build.BuildError(
            f"traefik {VERSION}: its module could not be downloaded: "
            f"{done.stderr.strip() or done.stdout.strip()}") from None
    return Path(found)


def crd_definitions() -> Path:
    """traefik.io/v1alpha1 CustomResourceDefinitions of the pinned release."""
    return (module_dir() / "docs" / "content" / "reference" / "dynamic-configuration"
            / "kubernetes-crd-definition-v1.yml")


class Traefik:
    """One Traefik process: entry points `web` (HTTP) and `websecure` (HTTPS) on free ports
    of 127.0.0.1, a `traefik` entry point for its ping only, and Kubernetes providers talking
    to `endpoint` with the bearer token in `token_file`, verifying the server with `ca_file`.

    `providers` maps Traefik's Kubernetes providers to run (`kubernetesingressnginx`: the
    ingress-nginx annotations; `kubernetesingress`: Traefik's own Ingress annotations;
    `kubernetescrd`: Middleware and other traefik.io objects) to their options
    (`{"ingressClass": ...}`).
    """

    def __init__(self, endpoint: str, token_file: Path, ca_file: Path, workdir: Path,
                 providers: Mapping[str, Mapping[str, str]], *, host: str = "127.0.0.1",
                 binary: Path | None = None):
        unknown = set(providers) - KUBERNETES_PROVIDERS
        if unknown:
            raise ValueError(f"not a Kubernetes provider of Traefik: {sorted(unknown)}")
        self.endpoint = endpoint
        self.token_file = token_file
        self.ca_file = ca_file
        self.workdir = workdir
        self.providers = providers
        self.host = host
        self.binary = binary
        self.http_port = free_port(host)
        self.https_port = free_port(host)
        self.api_port = free_port(host)
        self.log_path = workdir / "traefik.log"
        self.proc: subprocess.Popen | None = None

    def argv(self, binary: Path) -> list[str]:
        args = [str(binary),
                f"--entryPoints.web.address={self.host}:{self.http_port}",
                f"--entryPoints.websecure.address={self.host}:{self.https_port}",
                "--entryPoints.websecure.http.tls=true",
                f"--entryPoints.traefik.address={self.host}:{self.api_port}",
                "--ping=true",
                "--log.level=DEBUG", "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false"]
        for name, options in self.providers.items():
            args += [f"--providers.{name}=true",
                     f"--providers.{name}.endpoint={self.endpoint}",
                     f"--providers.{name}.token={self.token_file}",
                     f"--providers.{name}.certAuthFilePath={self.ca_file}",
                     f"--providers.{name}.throttleDuration=0s"]
            args += [f"--providers.{name}.{key}={value}" for key, value in options.items()]
        return args

    def start(self, timeout: float = 60.0) -> Traefik:
        binary = self.binary or ensure_binary(progress=lambda _line: None)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child for its life
        self.proc = subprocess.Popen(
            self.argv(binary), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env={"PATH": os.environ.get("PATH", os.defpath)})
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("traefik did not start:\n" + self.log()[-4000:])
            time.sleep(0.2)
        return self

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/ping", timeout=1) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def __enter__(self) -> Traefik:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(TOOL.main())
