"""A real S3 server on 127.0.0.1 for the demo and the tests: `tools/s3` of the checkout.

`tools/s3` is a small Go module around rclone's gofakes3 (MIT) that checks AWS Signature
V4 on every request (a wrong secret gets SignatureDoesNotMatch, an unsigned request 403)
and keeps objects in memory, and with `data` also as files in that folder (read at start,
written through on every change). It is built once, with the control plane's Go helpers
(kdash_hub.localcluster.real.build), into `~/.cache/kdash-hub/s3/<version>-<key>/`, the key
hashing go.mod, go.sum, its .go files and the Go version: a second build finds it there.

`S3Server(access_key, secret_key, buckets=[...]).start()` runs it on a free port; the
credentials go through its environment, never its command line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kdash_hub.localcluster.real import build

from .gotools import GoTool
from .ports import free_port
from .process import terminate

VERSION = "v0.0.12"  # github.com/rclone/gofakes3, as pinned in tools/s3/go.mod
COMPONENT = build.Component("kdash-s3", "s3", ".", VERSION)
READY_LINE = "kdash-s3 listening on "
TOOL = GoTool(COMPONENT, "the S3 server's Go module", own_sources=True)


def ensure_binary(progress: Callable[[str], None] = print) -> Path:
    """The server's binary, built the first time (about a minute), then found in the cache."""
    return TOOL.ensure_binary(progress)


def cached_binary() -> Path | None:
    """The binary if it is built already, else None (nothing is compiled)."""
    return TOOL.cached_binary()


class S3Server:
    """One kdash-s3 process on 127.0.0.1:<free port> with one access key."""

    def __init__(self, access_key: str | None = None, secret_key: str | None = None,
                 buckets: tuple[str, ...] | list[str] = (), seed: Path | None = None,
                 host: str = "127.0.0.1", port: int | None = None,
                 binary: Path | None = None, data: Path | None = None):
        self.access_key = access_key or "AK" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.buckets = list(buckets)
        self.seed = seed
        self.data = data
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> S3Server:
        binary = self.binary or ensure_binary(progress=lambda _line: None)
        argv = [str(binary), "-listen", f"{self.host}:{self.port}"]
        for bucket in self.buckets:
            argv += ["-bucket", bucket]
        if self.seed is not None:
            argv += ["-seed", str(self.seed)]
        if self.data is not None:
            argv += ["-data", str(self.data)]
        env = {"PATH": os.environ.get("PATH", os.defpath),
               "KDASH_S3_ACCESS_KEY": self.access_key, "KDASH_S3_SECRET_KEY": self.secret_key}
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # the ready line, or "" when it exits
        if not line.startswith(READY_LINE) or time.monotonic() > deadline:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"kdash-s3 did not start on {self.host}:{self.port}: "
                               f"{(line + err).strip() or 'no output'}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(TOOL.main())
