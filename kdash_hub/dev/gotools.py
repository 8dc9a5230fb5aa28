"""A program of the checkout's `tools/<module>` Go module, built once into a cache.

The S3 server (tools/s3) and Traefik (tools/traefik) are built like the control plane
(kdash_hub.localcluster.real.build: pinned go.mod and go.sum, `-mod=readonly`, one progress
line) into `~/.cache/kdash-hub/<module>/<version>-<key>/<name>`, the key hashing go.mod,
go.sum, the Go version and the flags, and the module's own Go files when it has some: a
second build finds the binary there. `python -m kdash_hub.dev.<module>` builds or finds it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdash_hub.localcluster.real import build


@dataclass(frozen=True)
class GoTool:
    component: build.Component
    # what the module is, for the message when the checkout does not hold it
    title: str
    # the module holds Go files of its own (not only a pin of someone else's command)
    own_sources: bool = False

    def tools_dir(self) -> Path:
        """`tools/` of the checkout this package runs from."""
        for parent in Path(__file__).resolve().parents:
            if (parent / "tools" / self.component.module / "go.mod").is_file():
                return parent / "tools"
        raise build.BuildError(f"tools/{self.component.module} ({self.title}) was not found: "
                               "it is built from a checkout of kdash-hub, not from an "
                               "installed wheel")

    def cache_dir(self) -> Path:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "kdash-hub" / self.component.module

    def binary_path(self, tools: Path, goversion: str) -> Path:
        key = build.component_key(self.component, tools, goversion)
        if self.own_sources:
            digest = hashlib.sha256(key.encode())
            for source in sorted((tools / self.component.module).glob("*.go")):
                digest.update(source.name.encode() + b"\0" + source.read_bytes())
            key = digest.hexdigest()[:16]
        return self.cache_dir() / f"{self.component.version}-{key}" / self.component.name

    def ensure_binary(self, progress: Callable[[str], None] = print) -> Path:
        """The binary, built the first time, then found in the cache."""
        tools = self.tools_dir()
        go = build.go_binary()
        goversion = build.go_version(go)
        return build.build_component(self.component, tools, go, goversion, progress,
                                     self.binary_path(tools, goversion))

    def cached_binary(self) -> Path | None:
        """The binary if it is built already, else None (nothing is compiled)."""
        try:
            path = self.binary_path(self.tools_dir(), build.go_version(build.go_binary()))
        except build.BuildError:
            return None
        return path if path.is_file() else None

    def main(self) -> int:
        """Build the binary (or find it) and print its path; a build error in one line."""
        try:
            print(self.ensure_binary(progress=lambda line: print(line, file=sys.stderr)))
        except build.BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
