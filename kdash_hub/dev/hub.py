"""A real JupyterHub with a real configurable-http-proxy, run as a subprocess on 127.0.0.1.

The demo and the integration tests both need "a hub with this config, up, and an admin
token for its API"; this is that, once. The caller's config text is appended to a base
config, so it can set anything; it should *append* to `c.JupyterHub.services` and
`c.JupyterHub.load_roles` (the base puts an admin service there) rather than replace them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from .ports import free_ports
from .process import terminate

ADMIN_SERVICE = "kdash-test-admin"
REPO_ROOT = Path(__file__).resolve().parents[2]


def find_proxy_command() -> str:
    """The configurable-http-proxy program: on PATH, or in this checkout's node_modules."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    local = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    raise RuntimeError(
        "configurable-http-proxy not found: run `make setup` (npm install) or put it on PATH"
    )


def base_config(
    *, port: int, hub_port: int, proxy_api_port: int, proxy_token: str, admin_token: str,
    workdir: Path,
) -> str:
    """The hub settings every HubProcess shares: loopback ports, sqlite, the admin service."""
    return f"""
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{workdir / 'jupyterhub_cookie_secret'}"
c.JupyterHub.pid_file = "{workdir / 'jupyterhub.pid'}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.auth_token = "{proxy_token}"
c.ConfigurableHTTPProxy.command = [{find_proxy_command()!r}]
c.ConfigurableHTTPProxy.pid_file = "{workdir / 'proxy.pid'}"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": "{ADMIN_SERVICE}", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["{ADMIN_SERVICE}"]}}]
"""


# Packages the dev venv holds only for the local cluster, absent from the z2jh hub image. Hidden
# from the hub and the services it starts, they import what they import in production:
# kubernetes_asyncio's dynamic client loads kubernetes_validate whenever it is installed, and
# that loads jsonschema's IRI grammar, about 2.5 s more at every launcher or culler start
# (JupyterHub 5.5 gives a managed service ten seconds to answer).
NOT_IN_HUB_IMAGE = ("kubernetes_validate",)


def hide_from_hub(site: Path, modules: tuple[str, ...] = NOT_IN_HUB_IMAGE) -> Path:
    """A directory to put first on PYTHONPATH where each of `modules` fails to import, as it
    does in the hub image."""
    for module in modules:
        package = site / module
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ImportError({module!r} ' is not in the z2jh hub image; kdash_hub.dev.hub "
            f"hides it from the hubs it starts')\n")
    return site


class HubProcess:
    """Start, wait for, and stop one JupyterHub (+ its proxy) in `workdir`; the hub (and the
    services it starts, which inherit PYTHONPATH) sees the packages the hub image has."""

    def __init__(self, config: str, workdir: Path, env: dict[str, str] | None = None,
                 *, port: int | None = None, start_timeout: float = 180.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_chosen_here = port is None  # a public port a caller gave stays
        self._log_start = 0  # where this launch's lines begin in the log
        self.port, self.hub_port, self.proxy_api_port = self._ports(port)
        self.admin_token = secrets.token_hex(24)
        self.proxy_token = secrets.token_hex(24)
        self.crypt_key = secrets.token_hex(32)
        self.config = config
        self.env = env or {}
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "jupyterhub_config.py"
        self.log_path = self.workdir / "jupyterhub.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    def auth_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"token {token or self.admin_token}"}

    def _write_config(self) -> None:
        base = base_config(
            port=self.port, hub_port=self.hub_port, proxy_api_port=self.proxy_api_port,
            proxy_token=self.proxy_token, admin_token=self.admin_token, workdir=self.workdir,
        )
        self.config_path.write_text(base + "\n# --- caller's config ---\n" + self.config)

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dirs = [str(Path(sys.executable).parent), str(REPO_ROOT / "node_modules" / ".bin")]
        env["PATH"] = os.pathsep.join(bin_dirs + [env.get("PATH", "")])
        env["JUPYTERHUB_CRYPT_KEY"] = self.crypt_key
        hidden = hide_from_hub(self.workdir / "not-in-hub-image")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(hidden), env.get("PYTHONPATH", "")) if p)
        env.update(self.env)
        return env

    @staticmethod
    def _ports(public: int | None) -> tuple[int, int, int]:
        """The public port (`public`, or a new one), the hub's and the proxy API's: three
        different ports."""
        if public is None:
            public, hub, api = free_ports(3)
        else:
            hub, api = free_ports(2, taken=(public,))
        return public, hub, api

    def launch(self) -> None:
        """Start the hub process without waiting for it (see `start`)."""
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self._log_start = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
            cwd=self.workdir, env=self._environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def log_tail(self, lines: int = 40, *, hub_only: bool = False) -> str:
        """The log's last `lines`; `hub_only` leaves out the proxy's, which can fill a tail
        with its errors while the hub is dying (and hide why)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if hub_only:  # a proxy line and its indented continuation (an error object)
            kept, in_proxy = [], False
            for line in text:
                if "[ConfigProxy]" in line:
                    in_proxy = True
                elif not (in_proxy and line.startswith((" ", "\t", "}"))):
                    in_proxy = False
                    kept.append(line)
            text = kept
        return "\n".join(text[-lines:])

    # why a hub start can fail for the machine and not for its config: a port picked free was
    # taken meanwhile (by another process, or as the source port of a connection on a busy
    # loopback), or configurable-http-proxy was not listening within the 10 s JupyterHub
    # waits for it (a loaded 2-core machine: seen once in a CI-like run)
    RETRIED_START_FAILURES = ("Address already in use", "EADDRINUSE", "Failed to start proxy")

    def _launch_log(self) -> str:
        """What this launch has written to the log so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _failed_for_the_machine(self) -> bool:
        """Did the hub die for one of RETRIED_START_FAILURES?"""
        text = self._launch_log()
        return any(reason in text for reason in self.RETRIED_START_FAILURES)

    def _proxy_lost_a_port(self) -> bool:
        """configurable-http-proxy could not listen on one of its ports: the hub runs on
        (JupyterHub does not notice), but nothing of it answers there."""
        return "EADDRINUSE" in self._launch_log()

    async def start(self, port_retries: int = 2) -> HubProcess:
        """Start the hub and wait until its API answers through the proxy."""
        self.launch()
        deadline = time.monotonic() + self.start_timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                died = self.process.poll() is not None
                lost_a_port = not died and self._proxy_lost_a_port()
                if died or lost_a_port:
                    if port_retries and (lost_a_port or self._failed_for_the_machine()):
                        # the internal ports again, and the public one unless a caller
                        # gave it (then the failure may be on the others)
                        port_retries -= 1
                        with contextlib.suppress(ProcessLookupError):  # its proxy, if left
                            os.killpg(self.process.pid, signal.SIGKILL)
                        self.process.wait()
                        self.port, self.hub_port, self.proxy_api_port = self._ports(
                            None if self._port_chosen_here else self.port)
                        self.log_path.rename(self.log_path.with_suffix(
                            f".failed-start-{port_retries}.log"))
                        self.launch()
                        continue
                    with contextlib.suppress(ProcessLookupError):  # its proxy outlives it
                        os.killpg(self.process.pid, signal.SIGKILL)
                    if lost_a_port:
                        raise RuntimeError(
                            "configurable-http-proxy could not listen on its ports (in use "
                            f"by another process):\n{self.log_tail()}")
                    raise RuntimeError(
                        f"JupyterHub exited with {self.process.returncode}; its own last "
                        f"lines (the proxy's left out):\n{self.log_tail(hub_only=True)}"
                    )
                try:
                    async with session.get(
                        f"{self.api_url}/", headers=self.auth_headers(),
                        timeout=aiohttp.ClientTimeout(total=2),
                    ) as resp:
                        if resp.status == 200:
                            return self
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.1)
        await self.stop()
        raise TimeoutError(
            f"JupyterHub did not answer in {self.start_timeout}s:\n{self.log_tail()}"
        )

    def stop_sync(self, timeout: float = 15.0) -> None:
        """Stop the hub (SIGTERM, then SIGKILL) and everything in its process group."""
        proc = self.process
        if proc is None:
            return
        terminate(proc, signal.SIGTERM, timeout)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any local servers it left
        except (ProcessLookupError, PermissionError):
            pass
        self._stop_proxy()
        self.process = None

    def _stop_proxy(self) -> None:
        """configurable-http-proxy runs in a session of its own (JupyterHub starts it so):
        a hub that was killed, or slow to clean up, leaves it running unless it is stopped
        here, by its pid file."""
        try:
            pid = int((self.workdir / "proxy.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"configurable-http-proxy" not in cmdline:
            return  # the pid is someone else's by now
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    async def __aenter__(self) -> HubProcess:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
