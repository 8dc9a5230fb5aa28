"""code-server (VS Code in the browser) from npm, installed on demand for the demo into a cache
outside the checkout, one folder per version: ~/.cache/kdash-hub/code-server/<version>.

Not part of `make setup` (CI time): the install downloads a few hundred MB and builds native
modules (a C++ compiler, python3 and libkrb5-dev's headers for `kerberos`). The cache is under
~/.cache/kdash-hub, which the process kubelet lets pods see, so a notebook pod's
jupyter-server-proxy can run it. The version is the newest whose `engines.node` accepts this
machine's Node 20 (newer ones ask for Node 22 or 24).
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
    # code-server's postinstall refuses to run as root unless npm says unsafe-perm; its
    # ripgrep download (GitHub) is served from a cache seeded with this machine's rg;
    # node-pty's runs `npx node-gyp`, which would wait for a "yes" no one types
    env = {**os.environ, "npm_config_unsafe_perm": "true", "npm_config_yes": "true",
           "TMPDIR": str(partial / "tmp")}
    (partial / "tmp").mkdir()
    steps = [["install", "--no-audit", "--no-fund", "--loglevel=error", "--ignore-scripts",
              f"code-server@{version}"],
             ["rebuild", "--loglevel=error"],  # the install scripts: native modules, postinstall
             [str(partial / "node_modules" / ".bin" / "code-server"), "--version"]]
    err = b""
    for index, step in enumerate(steps):
        if index == 1:
            _seed_ripgrep(partial)
        proc = await asyncio.create_subprocess_exec(
            *([npm, *step] if index < 2 else step), cwd=partial, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            err, proc.returncode = f"timed out after {TIMEOUT} s".encode(), -1
        if proc.returncode != 0:
            break
    if proc.returncode != 0:  # the last step: the program runs
        (folder.parent / f"{version}.install.log").write_bytes(err or b"")
        shutil.rmtree(partial, ignore_errors=True)
        last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        log(f"demo: VS Code is off: npm install code-server failed ({last[0][:160]}); it "
            "builds native modules (Debian: build-essential python3 libkrb5-dev ripgrep); "
            f"the whole log is {folder.parent / f'{version}.install.log'}")
        return None
    shutil.rmtree(partial / "tmp", ignore_errors=True)
    (partial / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return installed(version)


def _seed_ripgrep(partial: Path) -> None:
    """VS Code's @vscode/ripgrep downloads rg from GitHub at install time; this machine
    can't reach it, but the package takes a cached download as it is: seed that cache (under
    the install's own TMPDIR) with Debian's rg (package ripgrep), when it is installed."""
    rg = shutil.which("rg")
    vscode = partial / "node_modules" / "code-server" / "lib" / "vscode"
    lock = next((f for f in (vscode / "npm-shrinkwrap.json", vscode / "package-lock.json")
                 if f.exists()), None)
    if rg is None or lock is None:
        return
    import json
    import tarfile

    found = json.loads(lock.read_text()).get("packages", {}).get(
        "node_modules/@vscode/ripgrep", {})
    if not found.get("version"):
        return
    cache = partial / "tmp" / f"vscode-ripgrep-cache-{found['version']}"
    cache.mkdir(parents=True, exist_ok=True)
    for target in ("x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"):
        for release in ("v13.0.0-10", "v13.0.0-13", "v13.0.0-4"):
            with tarfile.open(cache / f"ripgrep-{release}-{target}.tar.gz", "w:gz") as tar:
                tar.add(rg, arcname="rg")
