"""`kdash-hub demo`: the whole pack on this machine, no cluster and no Docker needed.

Starts the local cluster (emulated Kubernetes API; notebook pods run as real
jupyterhub-singleuser processes) with a simulated GPU node, slapd with demo users and a
local OIDC provider when their programs are installed, and a real JupyterHub with
configurable-http-proxy, KDashSpawner, KDashAuthenticator, the launcher and the culler.
Prints the URL and the logins; Ctrl-C (or SIGTERM) stops everything and removes the
temporary directory (kept with --workdir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dev.hub import HubProcess
from .dev.ports import free_port


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    groups: tuple[str, ...]
    admin: bool = False
    uid: int = 1000
    gid: int = 100


DEMO_USERS = (
    DemoUser("alice", "alice-demo", ("data-science", "gpu-users"), uid=2001, gid=2000),
    DemoUser("bob", "bob-demo", ("data-science",), uid=2002, gid=2000),
    DemoUser("admin", "admin-demo", ("platform-admins",), admin=True, uid=2000, gid=2000),
)
GPU_RESOURCE = "nvidia.com/gpu"

# two CPU flavors and a GPU flavor (the simulated node has 4 GPUs)
DEMO_FLAVORS: list[dict[str, Any]] = [
    {"slug": "cpu-small", "display_name": "CPU small (1 core, 2 GB)",
     "description": "For notebooks and plotting.", "cpu_guarantee": 0.1, "cpu_limit": 1,
     "mem_guarantee": "256M", "mem_limit": "2G", "idle_timeout": 3600, "default": True},
    {"slug": "cpu-large", "display_name": "CPU large (4 cores, 8 GB)",
     "description": "For heavier data processing.", "cpu_guarantee": 0.5, "cpu_limit": 4,
     "mem_guarantee": "512M", "mem_limit": "8G", "idle_timeout": 3600,
     "groups": ["data-science"]},
    {"slug": "gpu-a100", "display_name": "GPU A100 (simulated)",
     "description": "A GPU flavor on the simulated GPU node.", "cpu_guarantee": 0.5,
     "cpu_limit": 4, "mem_guarantee": "512M", "mem_limit": "8G",
     "gpu": {"resource": GPU_RESOURCE, "counts": [1, 2]}, "idle_timeout": 1800,
     "groups": ["gpu-users"]},
]


@dataclass
class Demo:
    """The demo's parts, started in order and stopped in reverse order."""

    port: int | None = None
    workdir: Path | None = None
    log: Any = print
    _own_workdir: bool = False
    cluster: Any = None
    ldap: Any = None
    oidc: Any = None
    hub: HubProcess | None = None
    logins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.hub.url if self.hub else f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kdash-demo-"))
            self._own_workdir = True
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        await self._start_cluster()
        await self._start_ldap()
        await self._start_oidc()
        await self._start_hub()

    async def stop(self) -> None:
        """Stop every part that started (reverse order); never raises."""
        for name, stop in (
            ("hub", self._stop_hub), ("oidc", self._stop_oidc), ("ldap", self._stop_ldap),
            ("cluster", self._stop_cluster),
        ):
            try:
                await stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                self.log(f"demo: stopping {name} failed: {exc}")
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- parts --------------------------------------------------------------------------

    async def _start_cluster(self) -> None:
        from .localcluster import LocalCluster

        self.cluster = LocalCluster(
            nodes=2, gpus={GPU_RESOURCE: 4}, gpu_nodes=1, kubelet="process",
            kubeconfig_path=self.workdir / "kubeconfig", workdir=self.workdir / "cluster",
        )
        await self.cluster.start()
        self.notes.append(f"local cluster: {self.cluster.url} (KUBECONFIG="
                          f"{self.cluster.kubeconfig_path}); node-0 has 4 simulated GPUs")

    async def _stop_cluster(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None

    async def _start_ldap(self) -> None:
        if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
            self.notes.append("LDAP: slapd is not installed (apt-get install slapd ldap-utils); "
                              "LDAP logins are off")
            return
        self.ldap = None  # filled in once kdash_hub.dev.ldap lands

    async def _stop_ldap(self) -> None:
        if self.ldap is not None:
            await self.ldap.stop()
            self.ldap = None

    async def _start_oidc(self) -> None:
        self.oidc = None

    async def _stop_oidc(self) -> None:
        if self.oidc is not None:
            await self.oidc.stop()
            self.oidc = None

    # --- the hub ------------------------------------------------------------------------

    def hub_config(self, launcher_port: int) -> str:
        """jupyterhub_config.py text for the demo (appended to HubProcess's base config)."""
        from .services.launcher.hubconfig import launcher_roles, launcher_service

        kubeconfig = str(self.cluster.kubeconfig_path)
        launcher_config = self.workdir / "launcher_config.py"
        launcher_config.write_text(textwrap.dedent(f"""
            c.LauncherApp.kubeconfig = {kubeconfig!r}
            c.LauncherSettings.public_url = {self.url!r}
        """))
        env = {"KUBECONFIG": kubeconfig}
        services = [launcher_service(port=launcher_port, config_file=str(launcher_config),
                                     environment=env)]
        roles = launcher_roles()
        settings = {
            "JupyterHub": {"spawner_class": "kdash"},
            "Authenticator": {"enable_auth_state": True,
                              "admin_users": [u.username for u in DEMO_USERS if u.admin]},
            **self.authenticator_settings(),
            "KDashSpawner": {
                "flavors": DEMO_FLAVORS, "hub_namespace": "default",
                "storage_preset": "none", "start_timeout": 60, "http_timeout": 60,
                "image": "quay.io/jupyter/minimal-notebook:2024-12-02",
            },
        }
        return textwrap.dedent(f"""
            import json
            from traitlets.config import Config
            c.merge(Config(json.loads({json.dumps(settings)!r})))
            c.JupyterHub.services.extend(json.loads({json.dumps(services)!r}))
            c.JupyterHub.load_roles.extend(json.loads({json.dumps(roles)!r}))
        """)

    def authenticator_settings(self) -> dict[str, Any]:
        """KDashAuthenticator with the demo's LDAP and OIDC; a shared password without them."""
        self.logins = []
        return {
            "JupyterHub": {"spawner_class": "kdash",
                           "authenticator_class": "dummy"},
            "DummyAuthenticator": {"password": "demo", "allow_all": True},
        }

    async def _start_hub(self) -> None:
        launcher_port = free_port()
        config = self.hub_config(launcher_port)
        self.hub = HubProcess(
            config, self.workdir / "hub", env={"KUBECONFIG": str(self.cluster.kubeconfig_path)},
            port=self.port,
        )
        await self.hub.start()

    async def _stop_hub(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None

    def banner(self) -> str:
        lines = [
            "", "kdash-hub demo is running:", f"  {self.url}", "",
        ]
        if self.logins:
            lines += ["logins:", *(f"  {line}" for line in self.logins), ""]
        lines += [*(f"  {n}" for n in self.notes), "", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """Start the demo, print the URL and logins, and stop it all on Ctrl-C / SIGTERM."""
    demo = Demo(port=args.port, workdir=Path(args.workdir) if args.workdir else None,
                log=lambda msg: print(msg, file=sys.stderr, flush=True))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.ensure_future(demo.start())
    waiting = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # raises when a part failed to start
            print(demo.banner(), flush=True)
            await waiting
        else:
            starting.cancel()
    except Exception as exc:  # noqa: BLE001 - reported in one line, detail in the logs
        print(f"kdash-hub demo: could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        waiting.cancel()
        print("kdash-hub demo: stopping...", file=sys.stderr, flush=True)
        await demo.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("kdash-hub demo: stopped", file=sys.stderr, flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pack on this machine (no cluster needed)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--port", type=int, default=8000,
                        help="port of the hub's public URL http://127.0.0.1:PORT (default 8000;"
                             " 0 picks a free one)")
    parser.add_argument("--workdir", help="keep the demo's files (hub database, logs, "
                                          "kubeconfig, pod homes) in this directory")
    parser.set_defaults(func=run)
