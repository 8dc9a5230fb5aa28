"""code-server (VS Code in the browser) from npm, installed on demand for the demo into a cache
outside the checkout, one folder per version: ~/.cache/kdash-hub/code-server/<version>.

Not part of `make setup` (CI time): the install downloads a few hundred MB and builds native
modules. The cache is under ~/.cache/kdash-hub, which the process kubelet lets pods see, so a
notebook pod's jupyter-server-proxy can run it. The version is the newest whose `engines.node`
accepts this machine's Node 20 (newer ones ask for Node 22 or 24).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

VERSION = "4.100.3"
TIMEOUT = 900  # seconds for the whole npm install


def cache_dir(version: str = VERSION) -> Path:
    return Path.home() / ".cache" / "kdash-hub" / "code-server" / version


def installed(version: str = VERSION) -> Path | None:
    """The cached code-server program, or None when it isn't (completely) installed."""
    folder = cache_dir(version)
    program = folder / "node_modules" / ".bin" / "code-server"
    return program if (folder / ".complete").exists() and program.exists() else None


async def ensure(log: Callable[[str], None] = print, version: str = VERSION) -> Path | None:
    """The cached code-server, installed first if need be (one progress line); None, with
    one line saying why, when npm or the install fails: the demo runs without VS Code."""
    found = installed(version)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        log("demo: VS Code is off: npm is not installed (code-server comes from npm)")
        return None
    folder = cache_dir(version)
    partial = folder.with_name(f".{version}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "package.json").write_text('{"private": true}\n')
    log(f"demo: installing code-server {version} from npm into {folder} (once; a few "
        "minutes)...")
    started = time.monotonic()
    # code-server's postinstall refuses to run as root unless npm says unsafe-perm
    env = {**os.environ, "npm_config_unsafe_perm": "true"}
    proc = await asyncio.create_subprocess_exec(
        npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"code-server@{version}",
        cwd=partial, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        err, proc.returncode = f"timed out after {TIMEOUT} s".encode(), -1
    if proc.returncode != 0:
        (folder.parent / f"{version}.install.log").write_bytes(err or b"")
        shutil.rmtree(partial, ignore_errors=True)
        last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        log(f"demo: VS Code is off: npm install code-server failed ({last[0][:160]}); the "
            f"whole log is {folder.parent / f'{version}.install.log'}")
        return None
    (partial / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return installed(version)
