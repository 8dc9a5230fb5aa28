"""Pod addresses a real API server accepts: each pod in a network namespace of its own.

The real kube-apiserver refuses loopback addresses in Endpoints and EndpointSlices, so on
the real control plane pods with 127.x addresses leave Services without endpoints. With
`NetnsPodNetwork` a node's pods get addresses in a private /24 of 10.244.0.0/16 instead:

- the node's /24 is 10.244.R.0/24 with R picked free on this machine (no address or route
  of the machine in it), so several control planes can run side by side;
- a process pod gets a network namespace `kdash-R-<n>` (`ip netns add`) whose `eth0` is one
  end of a veth pair; the other end is on the network's Linux bridge `kdash-brR` (R of its
  first node), which holds 10.244.R.1 for each node R, the node's address. The pod's
  processes run inside it (`nsenter --net`, see `podsandbox.py`); the host (the hub, the
  proxy, tests) reaches the pod at its address;
- pods get no default route: only the /24s of this network's nodes, on the bridge, are
  reachable, so nothing a pod sends can leave this machine (IP forwarding stays off; the
  real control plane has one network per node, so there pods of two nodes don't meet);
- the hub listens on the host's loopback, which a pod can't reach: a pod's
  JUPYTERHUB_API_URL and JUPYTERHUB_ACTIVITY_URL pointing at 127.x:PORT are rewritten to
  10.244.R.1:PORT, where the kubelet relays each connection to 127.x:PORT
  (`expose_loopback_urls`). Anyone who may create pods chooses those variables, so ports
  in `denied_ports` (the control plane's own: etcd, which has no authentication, the API
  server, the controllers) are never relayed;
- the node's address also serves the cluster DNS the pods' resolv.conf names
  (`clusterdns.py`, run by the kubelet on 10.244.R.1:53);
- a pod's namespace and veth are deleted when the pod goes, all of them and the bridge when
  the kubelet stops; a kubelet killed before it could (kill -9) is swept by the next one.

Status-only pods get no namespace: their address is put on the node's bridge, so this
machine (a test standing in for a side service, say) can listen at it, as loopback
addresses allowed on the emulator. Creating namespaces and addresses needs root; without
it pods only get their addresses (status mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .nodes import PodNetwork

log = logging.getLogger("kdash_hub.localcluster.podnetwork")

POD_RANGE = "10.244"  # 10.244.0.0/16, as kubeadm's default pod network
STATE_DIR = Path("/run/kdash-hub-net")  # R -> pid of the kubelet using it
RELAYED_VARS = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL")
_LOOPBACK_URL = re.compile(r"^https?://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?(/|$)")


class NetworkSetupError(RuntimeError):
    """A pod's network namespace could not be made; the message says which command."""


def _ip(*args: str, stdin: str | None = None) -> str:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([ip, *args], input=stdin, capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        raise NetworkSetupError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead() -> list[int]:
    """Delete the bridges and namespaces of kubelets that died without cleaning up."""
    swept = []
    if not STATE_DIR.is_dir():
        return swept
    for entry in STATE_DIR.iterdir():
        try:
            pid = int(entry.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and _alive(pid):
            continue
        with contextlib.suppress(ValueError):
            _remove_all(int(entry.name))
            swept.append(int(entry.name))
        entry.unlink(missing_ok=True)
    return swept


def namespaces(block: int | None = None) -> list[str]:
    """Our pod namespaces on this machine (of node block R, or all)."""
    prefix = f"kdash-{block}-" if block is not None else "kdash-"
    with contextlib.suppress(NetworkSetupError, FileNotFoundError):
        return [line.split()[0] for line in _ip("netns", "list").splitlines()
                if line.startswith(prefix)]
    return []


def links(block: int | None = None) -> list[str]:
    """Our bridges and host-side veths on this machine (of node block R, or all)."""
    if block is None:
        prefixes: tuple[str, ...] = ("kdash-br", "kdv")
    else:
        prefixes = (f"kdv{block}x",)
    names = []
    with contextlib.suppress(NetworkSetupError, FileNotFoundError):
        for line in _ip("-o", "link", "show").splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(prefixes) or name == f"kdash-br{block}":
                names.append(name)
    return names


def _remove_all(block: int) -> None:
    from .netpolicy import delete_tables  # the NetworkPolicy agent's nftables tables

    delete_tables(block)
    for name in namespaces(block):
        with contextlib.suppress(NetworkSetupError):
            _ip("netns", "del", name)
    for name in links(block):
        with contextlib.suppress(NetworkSetupError):
            _ip("link", "del", name)


def _blocks_in_use() -> set[int]:
    used = set()
    with contextlib.suppress(NetworkSetupError, FileNotFoundError):
        text = _ip("-4", "-o", "addr", "show") + _ip("-4", "route", "show", "table", "all")
        used |= {int(m) for m in re.findall(rf"\b{re.escape(POD_RANGE)}\.(\d+)\.", text)}
    if STATE_DIR.is_dir():
        used |= {int(p.name) for p in STATE_DIR.iterdir() if p.name.isdigit()}
    return used


class NetnsPodNetwork(PodNetwork):
    """Pods on one bridge, a /24 per node, each pod in its own network namespace (module
    docstring). The bridge is named after the first node's block R: `kdash-brR`."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[str, int] = {}  # node -> R of its 10.244.R.0/24
        self.bridge_up = False
        self._attached: dict[str, str] = {}  # pod ip -> namespace name
        self._on_bridge: set[str] = set()  # status-only pods' addresses, on the bridge
        self._relays: dict[tuple[str, int], asyncio.Server] = {}  # (node address, port)
        self.denied_ports: set[int] = set()  # never relayed (the control plane's own)

    # the address plan --------------------------------------------------------------------

    def prefix(self, node: str) -> str:
        if node not in self._prefix:
            self.blocks[node] = self._claim_block()
            self._prefix[node] = f"{POD_RANGE}.{self.blocks[node]}"
            self._used[node] = set()
            if self.bridge_up:  # a node added later: its address on the bridge too
                _ip("addr", "add", f"{self._prefix[node]}.1/24", "dev", self.bridge)
        return self._prefix[node]

    def _claim_block(self) -> int:
        sweep_dead()
        used = _blocks_in_use() | set(self.blocks.values())
        free = [r for r in range(1, 255) if r not in used]
        if not free:
            raise NetworkSetupError(f"no free /24 left in {POD_RANGE}.0.0/16 on this machine")
        random.shuffle(free)
        try:
            STATE_DIR.mkdir(mode=0o755, exist_ok=True)
        except OSError:  # without root: addresses only, nothing to sweep
            return free[0]
        # created exclusively: two control planes starting at once never take the same R
        for block in free:
            try:
                with open(STATE_DIR / str(block), "x") as claim:
                    claim.write(str(os.getpid()))
            except FileExistsError:
                continue
            except OSError:
                return block
            return block
        raise NetworkSetupError(f"no free /24 left in {POD_RANGE}.0.0/16 on this machine")

    @property
    def block(self) -> int | None:
        """The first node's R (the bridge's name)."""
        return next(iter(self.blocks.values()), None)

    @property
    def bridge(self) -> str:
        return f"kdash-br{self.block}"

    @property
    def host_address(self) -> str:
        """The first node's address on the bridge."""
        return f"{POD_RANGE}.{self.block}.1"

    @staticmethod
    def node_address(ip: str) -> str:
        """The address of the node a pod address belongs to (10.244.R.1)."""
        return ip.rsplit(".", 1)[0] + ".1"

    @staticmethod
    def _names(ip: str) -> tuple[str, str]:
        """The pod's namespace and the host end of its veth."""
        block, last = ip.split(".")[2:4]
        return f"kdash-{block}-{last}", f"kdv{block}x{last}"

    def allocate(self, node: str, ports: list[int] | tuple[int, ...] = ()) -> str:
        # a fresh namespace has every port free: no need to check them here
        return super().allocate(node, ())

    # namespaces --------------------------------------------------------------------------

    def ensure_host_address(self) -> None:
        self._ensure_bridge()

    def _ensure_bridge(self) -> None:
        if self.bridge_up:
            return
        if os.geteuid() != 0:
            raise NetworkSetupError("pod network namespaces need root (ip netns, veth, "
                                    "bridge); run the kubelet as root or use the loopback "
                                    "pod network")
        assert self.block is not None
        lines = [f"link add {self.bridge} type bridge"]
        lines += [f"addr add {POD_RANGE}.{b}.1/24 dev {self.bridge}"
                  for b in self.blocks.values()]
        lines.append(f"link set {self.bridge} up")
        _ip("-batch", "-", stdin="\n".join(lines) + "\n")
        self.bridge_up = True

    def attach(self, ip: str) -> str:
        """Make the pod's namespace for `ip` (its veth on the bridge); its name. Its routes:
        the pod range on the bridge (pods of every node of this network), nothing else."""
        if ip in self._attached:
            return self._attached[ip]
        self._ensure_bridge()
        name, host_end = self._names(ip)
        try:
            _ip("-batch", "-", stdin=(f"netns add {name}\n"
                                       f"link add {host_end} type veth peer name eth0 "
                                       f"netns {name}\n"
                                       f"link set {host_end} master {self.bridge} up\n"))
            _ip("-n", name, "-batch", "-", stdin=(
                f"addr add {ip}/24 dev eth0\nlink set eth0 up\nlink set lo up\n"
                + "".join(f"route add {POD_RANGE}.{b}.0/24 dev eth0\n"
                          for b in self.blocks.values()
                          if f"{POD_RANGE}.{b}." != ip.rsplit(".", 1)[0] + ".")))
        except NetworkSetupError:
            self._detach(name, host_end)
            raise
        self._attached[ip] = name
        return name

    def attach_host(self, ip: str) -> None:
        """A status-only pod's address on the bridge: this machine answers for it."""
        if os.geteuid() != 0 or ip in self._on_bridge:
            return
        self._ensure_bridge()
        _ip("addr", "add", f"{ip}/32", "dev", self.bridge)
        self._on_bridge.add(ip)

    def namespace(self, ip: str) -> str | None:
        return self._attached.get(ip)

    @staticmethod
    def _detach(name: str, host_end: str) -> None:
        with contextlib.suppress(NetworkSetupError, FileNotFoundError):
            _ip("netns", "del", name)
        with contextlib.suppress(NetworkSetupError, FileNotFoundError):
            _ip("link", "del", host_end)  # gone with the namespace, unless a process holds it

    def release(self, ip: str | None) -> None:
        if ip and ip in self._on_bridge:
            self._on_bridge.discard(ip)
            with contextlib.suppress(NetworkSetupError, FileNotFoundError):
                _ip("addr", "del", f"{ip}/32", "dev", self.bridge)
        if ip and ip in self._attached:
            self._attached.pop(ip)
            self._detach(*self._names(ip))
        super().release(ip)

    # the host's loopback, as pods see it -------------------------------------------------

    async def expose_loopback_urls(self, env: dict[str, str], ip: str) -> None:
        """Point the hub URLs (RELAYED_VARS) at 127.x:PORT to the address of the node of
        pod `ip`, relayed there. Other URLs (the browser-facing ones) are kept."""
        address = self.node_address(ip)
        for key in RELAYED_VARS:
            value = env.get(key, "")
            if not _LOOPBACK_URL.match(value):
                continue
            parts = urlsplit(value)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if port in self.denied_ports:
                log.warning("not relaying %s (%s): port %d is the control plane's", key,
                            value, port)
                continue
            target = "127.0.0.1" if parts.hostname == "localhost" else str(parts.hostname)
            await self._relay(address, port, target)
            env[key] = urlunsplit(parts._replace(netloc=f"{address}:{port}"))

    async def _relay(self, address: str, port: int, target: str) -> None:
        if (address, port) in self._relays:
            return
        self._ensure_bridge()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target, port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self._relays[address, port] = await asyncio.start_server(handle, address, port)
        log.info("relaying %s:%d to %s:%d for pods", address, port, target, port)

    # the end -----------------------------------------------------------------------------

    async def close(self) -> None:
        for server in self._relays.values():
            server.close()
        self._relays.clear()
        for ip in list(self._attached):
            self.release(ip)
        for block in self.blocks.values():
            if self.bridge_up:
                _remove_all(block)
            (STATE_DIR / str(block)).unlink(missing_ok=True)
        self.bridge_up = False


def pod_network(kind: str) -> PodNetwork:
    """`loopback` (127.A.B.x, the emulator's) or `netns` (this module's)."""
    if kind == "loopback":
        return PodNetwork()
    if kind == "netns":
        return NetnsPodNetwork()
    raise ValueError(f"pod network must be 'loopback' or 'netns', not {kind!r}")

