"""`kdash-hub demo`: the whole pack on this machine, no cluster and no Docker needed.

Starts the local cluster (emulated Kubernetes API; notebook pods run as real
jupyterhub-singleuser processes, each in a network namespace of its own with cluster DNS and
enforced NetworkPolicies when this machine allows it) with a simulated GPU node, slapd with
demo users and a
local OIDC provider when their programs are installed, and a real JupyterHub with
configurable-http-proxy, KDashSpawner, KDashAuthenticator, the launcher and the culler.
Prints the URL and the logins; Ctrl-C (or SIGTERM) stops everything. The demo's files (hub
database and log, cluster log, the pods' homes) stay in a folder of their own, printed at start
and at stop; `--clean` removes it at stop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import secrets
import shutil
import signal
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dev.hub import HubProcess
from .dev.ports import free_port, port_is_free

GPU_RESOURCE = "nvidia.com/gpu"
OIDC_PROVIDER = "demo-sso"
OIDC_CLIENT = "kdash-demo"
OIDC_SECRET = "kdash-demo-secret"
OIDC_DISPLAY = "Demo SSO"
CULLER_SCOPES = ["list:users", "read:users", "read:users:activity", "read:servers",
                 "delete:servers", "read:groups", "admin:users", "access:servers"]

# two CPU flavors and a GPU flavor (the simulated node has 4 GPUs)
DEMO_FLAVORS: list[dict[str, Any]] = [
    {"slug": "cpu-small", "display_name": "CPU small (1 core, 2 GB)",
     "description": "For notebooks and plotting.", "cpu_guarantee": 0.1, "cpu_limit": 1,
     "mem_guarantee": "256M", "mem_limit": "2G", "idle_timeout": 3600, "default": True},
    {"slug": "cpu-large", "display_name": "CPU large (4 cores, 8 GB)",
     "description": "For heavier data processing.", "cpu_guarantee": 0.5, "cpu_limit": 4,
     "mem_guarantee": "512M", "mem_limit": "8G", "idle_timeout": 3600,
     "groups": ["datasci", "admins"]},
    {"slug": "gpu-a100", "display_name": "GPU A100 (simulated)",
     "description": "A GPU flavor on the simulated GPU node.", "cpu_guarantee": 0.5,
     "cpu_limit": 4, "mem_guarantee": "512M", "mem_limit": "8G",
     "gpu": {"resource": GPU_RESOURCE, "counts": [1, 2]}, "idle_timeout": 1800,
     "groups": ["gpu-users"]},
]


def default_workdir() -> Path:
    """A new folder per run under the user's state directory: kept after Ctrl-C (logs!)."""
    import os
    import time

    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "kdash-hub" / time.strftime("demo-%Y%m%d-%H%M%S")


NETNS_TOOLS = ("ip", "nsenter", "unshare", "setpriv", "nft")


def pod_network_choice(wanted: str = "auto") -> tuple[str, str]:
    """("netns" or "loopback", the line the banner prints about it).

    netns (each pod in a network namespace: its own 10.244.R.x address, cluster DNS so a
    notebook reaches a side service by its name, NetworkPolicies enforced) needs root,
    iproute2, util-linux and nftables, and a kernel that lets us make namespaces: tried
    once, with a namespace made and deleted. Otherwise pods share the loopback."""
    import os
    import subprocess

    if wanted == "loopback":
        return "loopback", ("pod network: loopback (--pod-network loopback): pods share this "
                            "machine's network; no cluster DNS, NetworkPolicies not enforced")
    problem = None
    missing = [t for t in NETNS_TOOLS
               if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if os.geteuid() != 0:
        problem = "it needs root"
    elif missing:
        problem = f"{', '.join(missing)} missing (apt-get install iproute2 util-linux nftables)"
    else:
        probe = f"kdash-probe-{os.getpid()}"
        ip = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or "ip"
        made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True,
                              timeout=30, check=False)
        if made.returncode != 0:
            problem = f"`ip netns add` fails here: {made.stderr.strip()}"
        else:
            subprocess.run([ip, "netns", "del", probe], capture_output=True, timeout=30,
                           check=False)
    if problem is None:
        return "netns", ("pod network: netns (each pod in a network namespace of its own, "
                         "10.244.x addresses; cluster DNS: a notebook reaches a side service "
                         "by its name; NetworkPolicies enforced)")
    if wanted == "netns":
        raise RuntimeError(f"--pod-network netns: {problem}")
    return "loopback", (f"pod network: loopback, as netns is not possible ({problem}): pods "
                        "share this machine's network; no cluster DNS (side services by "
                        "address only), NetworkPolicies not enforced")


def ldap_available() -> bool:
    """slapd and slapadd (Debian: slapd ldap-utils) are installed."""
    from .dev import ldap

    return Path(ldap.SLAPD).exists() and Path(ldap.SLAPADD).exists()


def oidc_available() -> bool:
    """node and the oidc-provider npm package (`npm install` in the checkout) are there."""
    from .dev import oidc

    return shutil.which("node") is not None and (
        oidc.REPO_ROOT / "node_modules" / "oidc-provider").is_dir()


@dataclass
class Demo:
    """The demo's parts, started in order and stopped in reverse order."""

    port: int | None = None
    workdir: Path | None = None
    log: Any = print
    clean: bool = False
    cluster: Any = None
    ldap: Any = None
    oidc: Any = None
    hub: HubProcess | None = None
    logins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vscode: bool = False  # install code-server if it isn't cached yet (make demo-vscode)
    pod_network: str = "auto"  # auto (netns when possible), netns or loopback
    code_server: Path | None = None  # the cached code-server the CPU flavors offer

    @property
    def url(self) -> str:
        return self.hub.url if self.hub else f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if self.workdir is None:
            self.workdir = default_workdir()
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if not port_is_free("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is in use: choose another with "
                               "--port (0 picks a free one)")
        await self._start_cluster()
        await self._start_ldap()
        await self._start_oidc()
        await self._find_code_server()
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
        if self.clean and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- parts --------------------------------------------------------------------------

    async def _start_cluster(self) -> None:
        from .localcluster import LocalCluster

        network, note = await asyncio.to_thread(pod_network_choice, self.pod_network)
        self.log(f"demo: {note}")
        self.cluster = LocalCluster(
            nodes=2, gpus={GPU_RESOURCE: 4}, gpu_nodes=1, kubelet="process",
            flag_idle_containers=True, pod_network=network,
            kubeconfig_path=self.workdir / "kubeconfig", workdir=self.workdir / "cluster",
        )
        await self.cluster.start()
        self.notes.append(note)
        self.notes.append(f"local cluster: {self.cluster.url} (KUBECONFIG="
                          f"{self.cluster.kubeconfig_path}); node-0 has 4 simulated GPUs")

    async def _stop_cluster(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
            self.cluster = None

    async def _start_ldap(self) -> None:
        from .dev import ldap

        if not ldap_available():
            self.notes.append("LDAP: slapd is not installed (apt-get install slapd ldap-utils),"
                              " so there is no LDAP login")
            return
        server = ldap.SlapdServer(workdir=self.workdir / "slapd")
        await asyncio.to_thread(server.start)
        self.ldap = server
        for user in server.users:
            groups = [g["cn"] for g in server.groups if user["uid"] in g["members"]]
            self.logins.append(f"{user['uid']} / {user['password']}   (LDAP form; groups: "
                               f"{', '.join(groups) or '-'})")
        self.notes.append(f"LDAP: slapd at {server.url} ({server.base_dn})")

    async def _stop_ldap(self) -> None:
        if self.ldap is not None:
            await asyncio.to_thread(self.ldap.stop)
            self.ldap = None

    async def _start_oidc(self) -> None:
        from .dev import oidc

        if not oidc_available():
            self.notes.append("OIDC: node or the oidc-provider package is missing (npm install),"
                              " so there is no OIDC login")
            return
        callback = f"{self.url}/hub/oauth_callback/{OIDC_PROVIDER}"
        provider = oidc.OIDCProvider(
            clients=[oidc.client(OIDC_CLIENT, [callback], secret=OIDC_SECRET,
                                 post_logout_redirect_uris=[f"{self.url}/hub/login"])],
            workdir=self.workdir / "oidc",
        )
        await asyncio.to_thread(provider.start)
        self.oidc = provider
        for name, user in provider.users.items():
            groups = user["claims"].get("groups") or []
            self.logins.append(f"{name} / {user['password']}   (\"{OIDC_DISPLAY}\" button; "
                               f"groups: {', '.join(groups) or '-'})")
        self.notes.append(f"OIDC: oidc-provider at {provider.issuer}")

    async def _stop_oidc(self) -> None:
        if self.oidc is not None:
            await asyncio.to_thread(self.oidc.stop)
            self.oidc = None

    async def _find_code_server(self) -> None:
        """VS Code next to JupyterLab: code-server from the cache, installed first with
        --vscode (a large npm install, never part of setup)."""
        from .dev import codeserver

        self.code_server = (await codeserver.ensure(self.log) if self.vscode
                            else codeserver.installed())
        if self.code_server is not None:
            self.notes.append("VS Code: the CPU profiles' Interface choice (code-server, "
                              f"{self.code_server.parents[2].name}); JupyterLab's launcher "
                              "opens it too")
        else:
            self.notes.append("VS Code: off (code-server is not installed; `make demo-vscode` or "
                              "`kdash-hub demo --vscode` installs it from npm)")

    def flavors(self) -> list[dict[str, Any]]:
        """DEMO_FLAVORS, the CPU ones offering JupyterLab and VS Code when code-server is
        there (through jupyter-server-proxy at /user/<name>/vscode/)."""
        if self.code_server is None:
            return DEMO_FLAVORS
        from .spawner.interfaces import KNOWN

        vscode = {"name": "vscode",
                  "command": [str(self.code_server), *KNOWN["vscode"].command[1:]]}
        return [{**f, "interfaces": ["lab", vscode]} if not f.get("gpu") else f
                for f in DEMO_FLAVORS]

    # --- the hub ------------------------------------------------------------------------

    def hub_config(self, launcher_port: int) -> str:
        """jupyterhub_config.py text for the demo (appended to HubProcess's base config).

        The pack's settings are a `custom.kdash` mapping applied by the same loader as the
        Helm values (kdash_hub.z2jh), so the demo runs the deployment's code path.
        """
        from .services.launcher.hubconfig import launcher_roles, launcher_service

        # one record-signing key for the launcher (which signs) and the culler (which
        # verifies before it expires anything); a fresh one per demo run
        env = {"KUBECONFIG": str(self.cluster.kubeconfig_path),
               "KDASH_RECORD_SIGNING_KEY": secrets.token_hex(32)}
        services = [
            launcher_service(port=launcher_port, environment=env),
            {"name": "kdash-culler", "environment": env,
             "command": [sys.executable, "-m", "kdash_hub.services.culler"]},
        ]
        roles = [*launcher_roles(), {"name": "kdash-culler", "services": ["kdash-culler"],
                                     "scopes": CULLER_SCOPES}]
        hub_settings = {
            # several servers per user, each with its own profile, one home (named servers)
            "JupyterHub": {"spawner_class": "kdash", "authenticator_class": "kdash",
                           "allow_named_servers": True, "named_server_limit_per_user": 3},
            # z2jh's singleuser.cmd: KubeSpawner passes `args` (the interfaces') only with it
            "KDashSpawner": {"cmd": ["jupyterhub-singleuser"]},
            "Authenticator": {"enable_auth_state": True, "allow_all": True},
        }
        custom = self.custom_kdash()
        if custom["authenticator"] is None:  # no LDAP and no OIDC here
            custom["authenticator"] = {}
            hub_settings["JupyterHub"]["authenticator_class"] = "dummy"
            hub_settings["DummyAuthenticator"] = {"password": "demo"}
            self.logins = [f"{name} / demo   (no LDAP or OIDC here: any username, password "
                           "demo)" for name in ("alice", "bob")]
        return textwrap.dedent(f"""
            import json
            from traitlets.config import Config
            from kdash_hub.z2jh import apply_custom_config
            c.merge(Config(json.loads({json.dumps(hub_settings)!r})))
            c.JupyterHub.services.extend(json.loads({json.dumps(services)!r}))
            c.JupyterHub.load_roles.extend(json.loads({json.dumps(roles)!r}))
            apply_custom_config(c, json.loads({json.dumps(custom)!r}))
        """)

    def custom_kdash(self) -> dict[str, Any]:
        """The demo's `custom.kdash` (as in a Helm values file)."""
        kubeconfig = str(self.cluster.kubeconfig_path)
        return {
            "spawner": {
                "flavors": self.flavors(), "hub_namespace": "default",
                "group_quotas": {"gpu-users": {f"requests.{GPU_RESOURCE}": "2"}},
                # homes on the local cluster's disk (under the demo's folder), kept across
                # server restarts: a claim per user, bound by the cluster's provisioner
                "storage_preset": "dynamic", "dynamic_storage": {"capacity": "1Gi"},
                "start_timeout": 60, "http_timeout": 60,
                "image": "quay.io/jupyter/minimal-notebook:2024-12-02",
                # users add their own S3 buckets (their MinIO instance's, say) on the
                # launcher's Datasets page; the launcher is told through kdash_hub.z2jh
                "s3_datasets_user_secret": "my-datasets",
            },
            "authenticator": self.authenticator_settings(),
            "launcher": {"kubeconfig": kubeconfig, "public_url": self.url,
                         "default_ttl": "8h"},
            "culler": {"kubeconfig": kubeconfig, "cull_every": "1m", "side_services": True,
                       "log_style": "text", "default_rule": {"idle": "1h", "max_age": "never"}},
        }

    def authenticator_settings(self) -> dict[str, Any] | None:
        """KDashAuthenticator (+ LDAPBackend) settings for the demo's LDAP and OIDC."""
        if self.ldap is None and self.oidc is None:
            return None
        settings: dict[str, Any] = {
            "enable_ldap": self.ldap is not None, "admin_groups": ["admins"],
        }
        if self.ldap is not None:
            settings.update({
                "server_address": "127.0.0.1", "server_port": self.ldap.port,
                "tls_strategy": "insecure",
                "bind_dn_template": [f"uid={{username}},{self.ldap.people_dn}"],
                "lookup_dn_search_user": self.ldap.service_dn,
                "lookup_dn_search_password": self.ldap.service_password,
                "user_search_base": self.ldap.people_dn, "user_attribute": "uid",
                "group_search_base": self.ldap.groups_dn,
            })
        if self.oidc is not None:
            settings["oidc_providers"] = {OIDC_PROVIDER: {
                "issuer": self.oidc.issuer, "client_id": OIDC_CLIENT,
                "client_secret": OIDC_SECRET, "display_name": OIDC_DISPLAY, "trusted": True,
                "scope": ["openid", "profile", "email", "groups"],
                # the demo IdP's accounts are the directory's people: the admin's rule
                **({"ldap_link_claim": "preferred_username"} if self.ldap else {}),
            }}
        return settings

    async def _start_hub(self) -> None:
        if importlib.util.find_spec("jupyterlab") is None:
            self.notes.append("notebooks: JupyterLab is not installed in this environment, so "
                              "servers have no UI (pip install jupyterlab ipykernel)")
        # a free port can be taken by another program before the hub binds it: try again
        # with new ports once
        for attempt in (1, 2):
            config = self.hub_config(free_port())
            self.hub = HubProcess(
                config, self.workdir / "hub",
                env={"KUBECONFIG": str(self.cluster.kubeconfig_path)}, port=self.port,
            )
            try:
                await self.hub.start()
                return
            except (RuntimeError, TimeoutError):
                await self.hub.stop()
                log = self.hub.log_path.read_text(errors="replace")
                self.hub = None
                if attempt == 2 or "Address already in use" not in log:
                    raise
                self.log("demo: a port was taken while the hub started; trying again")

    async def _stop_hub(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
            self.hub = None

    def banner(self) -> str:
        lines = ["", "kdash-hub demo is running:", f"  {self.url}", ""]
        if self.logins:
            lines += ["logins:", *(f"  {line}" for line in self.logins), ""]
        lines += [
            "then: pick a profile (GPU ones for gpu-users), open your server, and launch a side",
            f"service at {self.url}/services/kdash-launcher/", "",
            *(f"  {n}" for n in self.notes), "",
            f"files and logs: {self.workdir} (hub log: hub/jupyterhub.log)",
            "Press Ctrl-C to stop" + (" (the folder is removed then: --clean)." if self.clean
                                      else "; the folder is kept."), "",
        ]
        return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """Start the demo, print the URL and logins, and stop it all on Ctrl-C / SIGTERM."""
    demo = Demo(port=args.port, workdir=Path(args.workdir) if args.workdir else None,
                clean=args.clean, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                vscode=args.vscode, pod_network=args.pod_network)
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
        kept = ("" if demo.clean or demo.workdir is None
                else f"; files and logs kept in {demo.workdir}")
        print(f"kdash-hub demo: stopped{kept}", file=sys.stderr, flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pack on this machine (no cluster needed)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--port", type=int, default=8000,
                        help="port of the hub's public URL http://127.0.0.1:PORT (default 8000;"
                             " 0 picks a free one)")
    parser.add_argument("--workdir", help="the demo's files (hub database, logs, kubeconfig, "
                                          "pod homes) go here (default: a new folder under "
                                          "$XDG_STATE_HOME or ~/.local/state/kdash-hub)")
    parser.add_argument("--clean", action="store_true",
                        help="remove the demo's folder when it stops (default: keep it)")
    parser.add_argument("--vscode", action="store_true",
                        help="install code-server (VS Code) from npm into "
                             "~/.cache/kdash-hub/code-server if it isn't there yet, so the CPU "
                             "flavors offer VS Code next to JupyterLab (once; a few minutes). "
                             "Without it, a cached code-server is used if there is one")
    parser.add_argument("--pod-network", choices=("auto", "netns", "loopback"),
                        default="auto",
                        help="auto (default): each pod in a network namespace of its own "
                             "(cluster DNS, NetworkPolicies enforced) when this machine allows"
                             " it (root, iproute2, util-linux, nftables), else the loopback; "
                             "netns: that or fail; loopback: pods share this machine's "
                             "network")
    parser.set_defaults(func=run)
