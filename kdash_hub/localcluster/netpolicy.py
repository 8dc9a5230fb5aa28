"""NetworkPolicy enforcement for pods in network namespaces (`podnetwork.py`), with nftables.

The pack's isolation rests on the NetworkPolicy it writes in each user namespace; a cluster
enforces those only if its network plugin does. With pod_network="netns" this agent is that
plugin's policy half, as a CNI's agent would be: it watches NetworkPolicies, Pods and
Namespaces with the kubelet's own credentials and renders ONE nftables ruleset per pod
network, named after its bridge's block R (`kdash_np_R`, in two families), replaced
atomically (`nft -f -`) at every change and deleted when the kubelet stops (or swept with
the bridge after a kill -9, `podnetwork.sweep_dead`):

- `table inet kdash_np_R`, hook forward, for frames bridged between two pods on `kdash-brR`
  (the bridge is switched to `nf_call_iptables`, so bridged IPv4 meets the IP hooks and
  conntrack): replies of allowed connections pass (`ct state established,related`); a new
  connection must be allowed by the source pod's egress AND the destination pod's ingress.
  A pod is isolated for a direction when a policy of its namespace selects it with that
  policyType (default Ingress, plus Egress when it has egress rules); then the union of
  those policies' rules is all it may do (Kubernetes' semantics: podSelector,
  namespaceSelector, both, ipBlock with except; TCP/UDP/SCTP, numeric, endPort ranges and
  named ports resolved from the destination pod's containerPorts).
- `table bridge kdash_np_R`, hook prerouting: anti-spoofing. A frame from a pod's veth must
  carry that pod's MAC and IPv4 address (ARP included); any other ethertype (IPv6 link-local
  traffic would otherwise bypass every rule) and any veth the agent does not know yet are
  dropped, so a new pod is fail-closed until its rules are in place.

Traffic between a pod and the node (10.244.R.1: the hub, the proxy, probes, tests all run on
this machine) is always allowed, as Kubernetes specifies ("traffic to and from the node
where a Pod is running is always allowed") and most CNIs do: it never crosses the forward
hook. The same holds for status-only pods' addresses, which live on the bridge (the host).
Without `nft` (Debian package `nftables`) nothing is enforced and the kubelet says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .apiclient import ApiError, KubeHTTP, WatchExpired
from .podnetwork import NetnsPodNetwork

log = logging.getLogger("kdash_hub.localcluster.netpolicy")

TABLE_PREFIX = "kdash_np_"
FAMILIES = ("inet", "bridge")
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
SYNC_TIMEOUT_SECONDS = 30.0

# what the agent watches: (key, list path)
RESOURCES = (
    ("policies", "/apis/networking.k8s.io/v1/networkpolicies"),
    ("pods", "/api/v1/pods"),
    ("namespaces", "/api/v1/namespaces"),
)


class NftMissing(RuntimeError):
    """nftables' `nft` is not installed: NetworkPolicies can't be enforced."""


def nft_binary() -> str | None:
    found = shutil.which("nft")
    if found:
        return found
    return "/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None


def table_name(block: int) -> str:
    return f"{TABLE_PREFIX}{block}"


def delete_tables(block: int) -> None:
    """Remove the agent's tables of bridge block R (a stopped or killed kubelet's)."""
    nft = nft_binary()
    if nft is None:
        return
    for family in FAMILIES:
        subprocess.run([nft, "delete", "table", family, table_name(block)],
                       capture_output=True, timeout=30, check=False)


# --- the cluster as the rules see it --------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """What policies look at in a pod: where it is, its labels, address and named ports."""

    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, number)
    uid: str = ""

    @classmethod
    def of(cls, pod: Mapping, ip: str | None = None) -> PodView | None:
        """The view of a pod object; None when it has no address of its own (yet)."""
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        status = pod.get("status") or {}
        ip = ip or status.get("podIP")
        if not ip or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
            return None
        ports = tuple(
            (p["name"], p.get("protocol") or "TCP", int(p["containerPort"]))
            for c in spec.get("containers") or [] for p in c.get("ports") or []
            if p.get("name") and p.get("containerPort"))
        return cls(meta.get("namespace", "default"), meta.get("name", ""), ip,
                   dict(meta.get("labels") or {}), ports, meta.get("uid", ""))

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((n for pname, proto, n in self.ports
                     if pname == name and proto == protocol), None)


def selector_matches(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels AND matchExpressions); {} matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown operator: select nothing rather than everything
    return True


def policy_types(policy: Mapping) -> set[str]:
    """spec.policyTypes, defaulted as the API server does: Ingress, plus Egress when the
    policy has egress rules."""
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


# --- policies -> allowed peers and ports ----------------------------------------------------


@dataclass(frozen=True)
class Allow:
    """One allowed (peer, port) pair of a pod's ingress or egress.

    `ips`: these addresses (pods); `cidr`/`excepts`: an ipBlock; neither: anyone.
    `protocol` None: any traffic; `ports` None: every port of `protocol`."""

    ips: frozenset[str] | None = None
    cidr: str | None = None
    excepts: tuple[str, ...] = ()
    protocol: str | None = None
    ports: tuple[int, int] | None = None


@dataclass
class Rules:
    """Per pod address: the allows of each direction it is isolated for (absent: open)."""

    ingress: dict[str, list[Allow]] = field(default_factory=dict)
    egress: dict[str, list[Allow]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Peer:
    pods: tuple[PodView, ...] | None = None  # None: not a pod peer
    cidr: str | None = None
    excepts: tuple[str, ...] = ()

    def ip_block_holds(self, ip: str) -> bool:
        if self.cidr is None:
            return True
        address = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(self.cidr, strict=False)
        if address.version != net.version or address not in net:
            return False
        return not any(address in ipaddress.ip_network(e, strict=False)
                       for e in self.excepts
                       if ipaddress.ip_network(e, strict=False).version == address.version)


_ANYONE = _Peer()


def _peers(entries: list | None, policy_ns: str, by_ns: Mapping[str, list[PodView]],
           ns_labels: Mapping[str, Mapping[str, str]]) -> list[_Peer]:
    if not entries:
        return [_ANYONE]
    out = []
    for entry in entries:
        if entry.get("ipBlock"):
            block = entry["ipBlock"]
            out.append(_Peer(cidr=block["cidr"], excepts=tuple(block.get("except") or ())))
            continue
        pod_sel, ns_sel = entry.get("podSelector"), entry.get("namespaceSelector")
        if pod_sel is None and ns_sel is None:
            continue  # an empty peer selects nothing (the API server refuses it anyway)
        if ns_sel is None:
            namespaces = [policy_ns]
        else:
            namespaces = [ns for ns in by_ns if selector_matches(
                ns_sel, ns_labels.get(ns, {"kubernetes.io/metadata.name": ns}))]
        out.append(_Peer(pods=tuple(p for ns in namespaces for p in by_ns.get(ns, ())
                                    if selector_matches(pod_sel or {}, p.labels))))
    return out


def _port_entries(entries: list | None) -> list[dict] | None:
    """None: any port and protocol."""
    if not entries:
        return None
    return [{"protocol": e.get("protocol") or "TCP", "port": e.get("port"),
             "endPort": e.get("endPort")} for e in entries]


def _numeric(entry: Mapping, dest: PodView | None) -> tuple[str, tuple[int, int] | None] | None:
    """(protocol, port range) of a port entry; a named port resolved on `dest` (None when it
    can't be: no such port there, or no pod to resolve it on)."""
    protocol, port = entry["protocol"], entry["port"]
    if protocol not in PROTOCOLS:
        return None
    if port is None:
        return protocol, None
    if isinstance(port, str) and not port.isdigit():
        if dest is None:
            return None
        number = dest.named_port(port, protocol)
        return (protocol, (number, number)) if number is not None else None
    low = int(port)
    return protocol, (low, int(entry.get("endPort") or low))


def _allow(peer: _Peer, port: tuple[str, tuple[int, int] | None] | None,
           only_ip: str | None = None) -> Allow | None:
    protocol, ports = port if port is not None else (None, None)
    if only_ip is not None:
        return Allow(ips=frozenset({only_ip}), protocol=protocol, ports=ports)
    if peer.pods is not None:
        if not peer.pods:
            return None
        return Allow(ips=frozenset(p.ip for p in peer.pods), protocol=protocol, ports=ports)
    return Allow(cidr=peer.cidr, excepts=peer.excepts, protocol=protocol, ports=ports)


def _ingress_allows(rule: Mapping, policy_ns: str, target: PodView,
                    by_ns: Mapping[str, list[PodView]],
                    ns_labels: Mapping[str, Mapping[str, str]]) -> list[Allow]:
    ports = _port_entries(rule.get("ports"))
    resolved = [None] if ports is None else [_numeric(e, target) for e in ports]
    out = []
    for peer in _peers(rule.get("from"), policy_ns, by_ns, ns_labels):
        for port in resolved:
            if ports is not None and port is None:
                continue  # a named port the target doesn't have
            allow = _allow(peer, port)
            if allow is not None:
                out.append(allow)
    return out


def _egress_allows(rule: Mapping, policy_ns: str, by_ns: Mapping[str, list[PodView]],
                   ns_labels: Mapping[str, Mapping[str, str]]) -> list[Allow]:
    ports = _port_entries(rule.get("ports"))
    out = []
    for peer in _peers(rule.get("to"), policy_ns, by_ns, ns_labels):
        if ports is None:
            allow = _allow(peer, None)
            if allow is not None:
                out.append(allow)
            continue
        for entry in ports:
            port = _numeric(entry, None)
            if port is not None:
                allow = _allow(peer, port)
                if allow is not None:
                    out.append(allow)
                continue
            # a named port: its number is the destination pod's, pod by pod
            candidates = peer.pods if peer.pods is not None else tuple(
                p for pods in by_ns.values() for p in pods if peer.ip_block_holds(p.ip))
            for dest in candidates:
                numbered = _numeric(entry, dest)
                if numbered is not None:
                    allow = _allow(peer, numbered, only_ip=dest.ip)
                    if allow is not None:
                        out.append(allow)
    return out


def compile_rules(policies: Iterable[Mapping], pods: Iterable[PodView],
                  namespaces: Mapping[str, Mapping[str, str]],
                  targets: Iterable[str] | None = None) -> Rules:
    """The allows of each pod (of `targets`' addresses, or all) for each direction it is
    isolated for. `namespaces`: name -> labels."""
    pods = list(pods)
    by_ns: dict[str, list[PodView]] = {ns: [] for ns in namespaces}
    for pod in pods:
        by_ns.setdefault(pod.namespace, []).append(pod)
    wanted = set(targets) if targets is not None else None
    rules = Rules()
    by_policy_ns: dict[str, list[Mapping]] = {}
    for policy in policies:
        by_policy_ns.setdefault((policy.get("metadata") or {}).get("namespace", ""),
                                []).append(policy)
    for pod in pods:
        if wanted is not None and pod.ip not in wanted:
            continue
        for policy in by_policy_ns.get(pod.namespace, ()):
            spec = policy.get("spec") or {}
            if not selector_matches(spec.get("podSelector") or {}, pod.labels):
                continue
            types = policy_types(policy)
            if "Ingress" in types:
                allows = rules.ingress.setdefault(pod.ip, [])
                for rule in spec.get("ingress") or []:
                    allows += _ingress_allows(rule, pod.namespace, pod, by_ns, namespaces)
            if "Egress" in types:
                allows = rules.egress.setdefault(pod.ip, [])
                for rule in spec.get("egress") or []:
                    allows += _egress_allows(rule, pod.namespace, by_ns, namespaces)
    return rules


# --- rules -> nftables ---------------------------------------------------------------------


def _ipv4_set(items: Iterable[str]) -> str | None:
    """An nft anonymous set of IPv4 addresses/prefixes, merged so no two overlap."""
    return _ipv4_set_of(tuple(sorted(items)))


@functools.lru_cache(maxsize=4096)
def _ipv4_set_of(items: tuple[str, ...]) -> str | None:
    nets = [ipaddress.ip_network(i, strict=False) for i in items]
    nets = [n for n in nets if n.version == 4]
    if not nets:
        return None
    merged = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
    text = [str(n.network_address) if n.prefixlen == 32 else str(n) for n in merged]
    return "{ " + ", ".join(text) + " }"


def _allow_rule(allow: Allow, side: str) -> str | None:
    """One nft rule (`return` = allowed) for an allow; side: "saddr" or "daddr"."""
    parts = []
    if allow.ips is not None:
        addresses = _ipv4_set(allow.ips)
        if addresses is None:
            return None
        parts.append(f"ip {side} {addresses}")
    elif allow.cidr is not None:
        net = ipaddress.ip_network(allow.cidr, strict=False)
        if net.version != 4:
            return None
        if net.prefixlen:
            parts.append(f"ip {side} {net}")
        excepts = _ipv4_set(allow.excepts)
        if excepts:
            parts.append(f"ip {side} != {excepts}")
    if allow.protocol is not None:
        parts.append(f"meta l4proto {PROTOCOLS[allow.protocol]}")
        if allow.ports is not None:
            low, high = allow.ports
            parts.append(f"th dport {low}" if low == high else f"th dport {low}-{high}")
    parts.append("return")
    return " ".join(parts)


def _chain(name: str, allows: list[Allow], side: str) -> list[str]:
    lines, seen = [f"  chain {name} {{"], set()
    for allow in allows:
        rule = _allow_rule(allow, side)
        if rule is not None and rule not in seen:
            seen.add(rule)
            lines.append(f"    {rule}")
    lines += ["    drop", "  }"]
    return lines


@dataclass(frozen=True)
class Port:
    """A pod's end of the bridge: its host-side veth, MAC and address."""

    veth: str
    mac: str
    ip: str


def render(block: int, bridge: str, rules: Rules, ports: Iterable[Port],
           veth_prefixes: Iterable[str]) -> str:
    """The nft script replacing the agent's two tables atomically (module docstring).
    `veth_prefixes`: the names every pod veth of this bridge starts with."""
    name = table_name(block)
    lines = [f"table inet {name}", f"delete table inet {name}", f"table inet {name} {{",
             "  chain forward {",
             "    type filter hook forward priority filter; policy accept;",
             f'    iifname != "{bridge}" return',
             f'    oifname != "{bridge}" return',
             "    ct state established,related accept"]
    chains: list[str] = []
    for direction, table, side, match in (("eg", rules.egress, "daddr", "saddr"),
                                          ("in", rules.ingress, "saddr", "daddr")):
        if not table:
            continue
        entries = []
        for index, (ip, allows) in enumerate(sorted(table.items())):
            chain = f"{direction}_{index}"
            entries.append(f"{ip} : jump {chain}")
            chains += _chain(chain, allows, side)
        lines.append(f"    ip {match} vmap {{ {', '.join(entries)} }}")
    lines += ["  }", *chains, "}"]
    ports = sorted(ports, key=lambda p: p.veth)
    lines += [f"table bridge {name}", f"delete table bridge {name}",
              f"table bridge {name} {{",
              "  chain prerouting {",
              "    type filter hook prerouting priority filter; policy accept;",
              *(f'    iifname "{prefix}*" jump pod_ports' for prefix in sorted(veth_prefixes)),
              "  }",
              "  chain pod_ports {",
              "    ether type != { ip, arp } drop"]
    if ports:
        ip_ok = ", ".join(f'"{p.veth}" . {p.mac} . {p.ip}' for p in ports)
        arp_ok = ", ".join(f'"{p.veth}" . {p.mac} . {p.ip} . {p.mac}' for p in ports)
        lines += [f"    ether type ip iifname . ether saddr . ip saddr {{ {ip_ok} }} return",
                  "    ether type arp iifname . ether saddr . arp saddr ip . arp saddr ether "
                  f"{{ {arp_ok} }} return"]
    lines += ["    drop", "  }", "}"]
    return "\n".join(lines) + "\n"


# --- the agent -----------------------------------------------------------------------------


class NetworkPolicyAgent:
    """Keeps the ruleset of one pod network in step with the cluster (module docstring).

    The kubelet calls `admit` once a pod's namespace exists and before its processes start
    (the rules are in place when it first runs), `forget` when the pod's address goes back,
    `start` and `stop` with itself."""

    def __init__(self, api: KubeHTTP, network: NetnsPodNetwork):
        self.api = api
        self.network = network
        self.enforcing = False
        self.objects: dict[str, dict[str, dict]] = {key: {} for key, _ in RESOURCES}
        self.local: dict[str, tuple[PodView, Port]] = {}  # pod ip -> (view, its bridge port)
        self.applied = 0  # rulesets applied, for tests and logs
        self.last_error: str | None = None
        self._nft = nft_binary()
        self._block: int | None = None
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._synced: dict[str, asyncio.Event] = {key: asyncio.Event() for key, _ in RESOURCES}
        self._bridge_flagged = False

    async def start(self) -> None:
        if self._nft is None:
            log.warning("NetworkPolicies are NOT enforced on this pod network: `nft` is "
                        "missing (install the Debian package nftables)")
            return
        self._block = self.network.block
        if self._block is None:
            raise RuntimeError("the pod network has no node yet: register nodes first")
        self.enforcing = True
        for key, path in RESOURCES:
            self._tasks.append(asyncio.create_task(self._watch(key, path),
                                                   name=f"netpolicy-watch-{key}"))
        self._tasks.append(asyncio.create_task(self._render_loop(), name="netpolicy-render"))
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self._synced.values())),
                                   SYNC_TIMEOUT_SECONDS)
        except TimeoutError:
            log.error("NetworkPolicy agent: could not list %s in %ss (%s); rules follow "
                      "when it can", [k for k, e in self._synced.items() if not e.is_set()],
                      SYNC_TIMEOUT_SECONDS, self.last_error)
        await self.apply()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.enforcing and self._block is not None:
            await asyncio.to_thread(delete_tables, self._block)
        self.enforcing = False

    # the kubelet's hooks ----------------------------------------------------------------

    async def admit(self, pod: Mapping, ip: str) -> None:
        """A pod's namespace was made for `ip`: let its traffic through as its policies
        say, before its first process runs."""
        if not self.enforcing:
            return
        view = PodView.of(pod, ip)
        namespace = self.network.namespace(ip)
        if view is None or namespace is None:
            return
        mac = await asyncio.to_thread(_pod_mac, namespace)
        self.local[ip] = (view, Port(NetnsPodNetwork._names(ip)[1], mac, ip))
        await self.apply()

    def forget(self, ip: str | None) -> None:
        if ip and self.local.pop(ip, None) is not None:
            self._dirty.set()

    # the cluster ------------------------------------------------------------------------

    def _pod_views(self) -> list[PodView]:
        views: dict[str, PodView] = {}
        for pod in self.objects["pods"].values():
            view = PodView.of(pod)
            if view is not None:
                views[view.ip] = view
        for ip, (view, _) in self.local.items():
            known = views.get(ip)
            if known is None or known.uid != view.uid:  # status not written yet, or stale
                views[ip] = view
        return list(views.values())

    def script(self) -> str:
        return self._snapshot()()

    def _snapshot(self) -> Callable[[], str]:
        """What the ruleset depends on, copied (taken on the event loop); the returned
        function compiles and renders it (off the loop: 0.1-0.3 s for 200 users)."""
        namespaces = {name: dict((ns.get("metadata") or {}).get("labels") or {})
                      for name, ns in self.objects["namespaces"].items()}
        policies = list(self.objects["policies"].values())
        pods, targets = self._pod_views(), list(self.local)
        ports = [port for _, port in self.local.values()]
        prefixes = [f"kdv{block}x" for block in self.network.blocks.values()]
        block, bridge = self._block, self.network.bridge
        assert block is not None

        def build() -> str:
            rules = compile_rules(policies, pods, namespaces, targets=targets)
            return render(block, bridge, rules, ports, prefixes)
        return build

    async def apply(self) -> None:
        """Render and load the ruleset now (one nft transaction)."""
        if not self.enforcing:
            return
        async with self._lock:
            self._dirty.clear()
            await asyncio.to_thread(self._flag_bridge)
            text = await asyncio.to_thread(self._snapshot())
            assert self._nft is not None
            proc = await asyncio.create_subprocess_exec(
                self._nft, "-f", "-", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate(text.encode())
            if proc.returncode != 0:
                self.last_error = err.decode(errors="replace").strip()
                log.error("NetworkPolicy agent: nft refused the ruleset: %s\n%s",
                          self.last_error, text)
                return
            self.applied += 1

    def _flag_bridge(self) -> None:
        """Bridged IPv4 through the IP hooks (and conntrack), on our bridge only."""
        if self._bridge_flagged or not self.network.bridge_up:
            return
        ip = shutil.which("ip") or "/usr/sbin/ip"
        done = subprocess.run([ip, "link", "set", self.network.bridge, "type", "bridge",
                               "nf_call_iptables", "1"], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            log.error("NetworkPolicy agent: can't route %s's traffic through nftables: %s",
                      self.network.bridge, done.stderr.strip())
            return
        self._bridge_flagged = True

    async def _render_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.05)  # one ruleset for a burst of events
            try:
                await self.apply()
            except (OSError, ValueError) as e:
                log.error("NetworkPolicy agent: applying rules failed: %s", e)
                self.last_error = str(e)

    async def _watch(self, key: str, path: str) -> None:
        """List then watch one resource (relisting on 410), as the kubelet watches pods."""
        store = self.objects[key]
        resource_version: str | None = None
        delay = 0.05
        while True:
            try:
                if resource_version is None:
                    listing = await self.api.request("GET", path)
                    store.clear()
                    for item in listing.get("items") or []:
                        store[_key(item)] = item
                    resource_version = listing["metadata"]["resourceVersion"]
                    self._synced[key].set()
                    self._dirty.set()
                async for event in self.api.watch(path, {"resourceVersion": resource_version,
                                                         "allowWatchBookmarks": True}):
                    delay = 0.05
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        resource_version = rv
                    if event.get("type") == "DELETED":
                        store.pop(_key(obj), None)
                    elif event.get("type") in ("ADDED", "MODIFIED"):
                        store[_key(obj)] = obj
                    else:
                        continue
                    self._dirty.set()
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                resource_version = None
            except (aiohttp.ClientError, OSError, TimeoutError, ApiError, ValueError) as e:
                self.last_error = f"{path}: {e}"
                level = logging.ERROR if isinstance(e, ApiError) and e.status == 403 else \
                    logging.INFO
                log.log(level, "NetworkPolicy agent: watching %s failed (%s); again in %.2fs",
                        path, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                if isinstance(e, ApiError):
                    resource_version = None


def _key(obj: Mapping) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _pod_mac(namespace: str) -> str:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    done = subprocess.run([ip, "-n", namespace, "-j", "link", "show", "eth0"],
                          capture_output=True, text=True, timeout=30, check=True)
    data: Any = json.loads(done.stdout)
    return str(data[0]["address"])


def agent_for(network: Any, api: KubeHTTP) -> NetworkPolicyAgent | None:
    """The agent of a network-namespace pod network run by root; None otherwise (loopback
    pods share the host's network: nothing to enforce there)."""
    if not isinstance(network, NetnsPodNetwork) or os.geteuid() != 0:
        return None
    return NetworkPolicyAgent(api, network)
