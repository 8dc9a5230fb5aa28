"""Cluster DNS for process pods in network namespaces: `<svc>.<ns>.svc.cluster.local`.

A real cluster runs CoreDNS behind a ClusterIP; we have neither ClusterIPs nor kube-proxy,
so this responder, run by the kubelet on each node address (10.244.R.1:53, on the pod
network's bridge only), answers a Service's name with the addresses of the pods behind it,
as CoreDNS does for a headless Service:

- `<svc>.<ns>.svc.<domain>` (A): the ready pods its selector matches (every pod with an
  address under `publishNotReadyAddresses`), from the pods the kubelet watches already;
  a Service without a selector: the addresses of its Endpoints object (someone else's);
  a Service that doesn't exist, or any other name in the domain: NXDOMAIN; other record
  types of an existing name: no data (IPv4 only);
- a name outside the domain: NXDOMAIN, not authoritative. Nothing is forwarded, so no pod
  learns anything of (or sends anything to) the world outside this machine through it
  (pods have no route out of it either). Not REFUSED: after a search list, the C library
  turns a refusal into "temporary failure" (EAI_AGAIN), which makes programs retry a
  mistyped Service name for ever, where NXDOMAIN says "Name or service not known";
- labels are checked as DNS-1123 labels before they go into an API path (a query for
  `..` must not become `/services/..`), and at most MAX_IN_FLIGHT queries are answered at
  once: a pod flooding the responder can't turn it into a flood of API requests.

What it reads: Services (get) and Endpoints (get), which the Node authorizer already allows
a node (`system:node` rules: services get/list/watch, endpoints get), and the pods the
kubelet sees (on the real control plane: its node's only, which are also the only pods a
pod of that node can reach). No extra role.

Pods see it through a resolv.conf of their own (`resolv_conf`: `nameserver 10.244.R.1`,
`search <ns>.svc.<domain> svc.<domain> <domain>`, `options ndots:5`, as the kubelet writes
for `dnsPolicy: ClusterFirst`) and a `hosts: files dns` nsswitch.conf (the host's may hand
`.local` names to mDNS), bound over /etc in the pod's mount namespace (`podsandbox.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from .apiclient import ApiError, KubeHTTP

log = logging.getLogger("kdash_hub.localcluster.clusterdns")

DOMAIN = "cluster.local"
PORT = 53
TTL = 5  # seconds: pods come and go; CoreDNS's kubernetes plugin answers with 5 too
UDP_LIMIT = 512  # without EDNS; a longer answer is truncated (TC) and asked again over TCP
TCP_IDLE_SECONDS = 10.0
MAX_IN_FLIGHT = 64  # queries being answered at once; more UDP ones are dropped (clients retry)

A, AAAA, ANY = 1, 28, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_OPTION = re.compile(r"^[A-Za-z0-9_-]{1,40}(:[0-9]{1,5})?$")
_SEARCH = re.compile(r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.?$")


class DNSFormatError(ValueError):
    """A message that isn't one DNS query we can read."""


# --- the wire format (RFC 1035), as much as a stub resolver's query needs ---------------


def parse_query(data: bytes) -> tuple[int, int, list[bytes], int, int, int]:
    """(id, flags, name labels, qtype, qclass, end of the question section)."""
    if len(data) < 12:
        raise DNSFormatError("short header")
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        raise DNSFormatError("not exactly one question")
    labels, offset = [], 12
    while True:
        if offset >= len(data):
            raise DNSFormatError("name runs past the message")
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length > 63:  # a compression pointer (or a reserved kind): no query needs one
            raise DNSFormatError("compressed or bad label")
        labels.append(data[offset:offset + length])
        offset += length
        if offset > len(data) or sum(len(x) + 1 for x in labels) > 254:
            raise DNSFormatError("name too long")
    if offset + 4 > len(data):
        raise DNSFormatError("short question")
    qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
    return ident, flags, labels, qtype, qclass, offset + 4


def build_response(query: bytes, question_end: int, rcode: int, addresses: Iterable[str] = (),
                   *, ttl: int = TTL, limit: int | None = None, authoritative: bool = True
                   ) -> bytes:
    """The answer to `query`: its id and question, `rcode`, an A record per address (the
    name as a pointer to the question's). Over `limit` bytes: fewer records and TC set."""
    ident, flags = struct.unpack("!HH", query[:4])
    question = query[12:question_end]
    records = [b"\xc0\x0c" + struct.pack("!HHIH", A, 1, ttl, 4)
               + ipaddress.IPv4Address(a).packed for a in addresses]
    truncated = False
    if limit is not None:
        room = max(0, (limit - 12 - len(question)) // 16)
        if len(records) > room:
            records, truncated = records[:room], True
    out_flags = (0x8000 | (flags & 0x7800) | (0x0400 if authoritative else 0)
                 | (0x0200 if truncated else 0) | (flags & 0x0100) | (rcode & 0xF))
    header = struct.pack("!HHHHHH", ident, out_flags, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def error_response(query: bytes, rcode: int) -> bytes | None:
    """A header-only answer (FORMERR, NOTIMP) to something we could not read; None when
    it is not even a header (dropped)."""
    if len(query) < 12:
        return None
    ident, flags = struct.unpack("!HH", query[:4])
    if flags & 0x8000:  # a response: never answer one (no loops between responders)
        return None
    return struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


# --- Services -> addresses -------------------------------------------------------------


def _pod_ready(pod: Mapping) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def service_pod_addresses(service: Mapping, pods: Iterable[Mapping]) -> list[str]:
    """The addresses of the pods a Service's selector picks in its namespace: ready ones,
    or every one with an address under `publishNotReadyAddresses`; none are terminating."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    selector = spec.get("selector") or {}
    everyone = bool(spec.get("publishNotReadyAddresses"))
    found = []
    for pod in pods:
        pod_meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if pod_meta.get("namespace") != meta.get("namespace") or pod_meta.get(
                "deletionTimestamp"):
            continue
        labels = pod_meta.get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if everyone or _pod_ready(pod):
            found.append(ip)
    return sorted(set(found))


def endpoints_addresses(endpoints: Mapping, not_ready: bool = False) -> list[str]:
    found = []
    for subset in endpoints.get("subsets") or []:
        entries = list(subset.get("addresses") or [])
        if not_ready:
            entries += subset.get("notReadyAddresses") or []
        found += [e["ip"] for e in entries if e.get("ip")]
    return sorted(set(found))


def _ipv4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


# --- the responder ---------------------------------------------------------------------


class ClusterDNS:
    """The node's DNS responder (module docstring). `pods()` gives the pods the kubelet
    knows; `serve_on(address)` adds a listening address (idempotent)."""

    def __init__(self, api: KubeHTTP, pods: Callable[[], Iterable[Mapping]], *,
                 domain: str = DOMAIN, port: int = PORT, ttl: int = TTL):
        self.api = api
        self.pods = pods
        self.domain = tuple(domain.lower().strip(".").encode().split(b"."))
        self.domain_name = domain.lower().strip(".")
        self.port = port
        self.ttl = ttl
        self.queries = 0  # answered, for tests and logs
        self.dropped = 0  # UDP queries dropped while MAX_IN_FLIGHT were being answered
        self._udp: dict[str, asyncio.DatagramTransport] = {}
        self._tcp: dict[str, asyncio.Server] = {}
        self._tasks: set[asyncio.Task] = set()
        self._clients: set[asyncio.StreamWriter] = set()  # open TCP connections
        self._lock = asyncio.Lock()
        self._limit = asyncio.Semaphore(MAX_IN_FLIGHT)  # over UDP and TCP together

    @property
    def addresses(self) -> list[str]:
        return sorted(self._udp)

    async def serve_on(self, address: str) -> None:
        """Listen on `address`:port (UDP and TCP), once."""
        async with self._lock:
            if address in self._udp:
                return
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDP(self), local_addr=(address, self.port))
            try:
                self._tcp[address] = await asyncio.start_server(
                    self._tcp_client, address, self.port)
            except OSError:
                transport.close()
                raise
            self._udp[address] = transport
            log.info("cluster DNS for %s on %s:%d", self.domain_name, address, self.port)

    async def stop(self) -> None:
        for transport in self._udp.values():
            transport.close()
        for server in self._tcp.values():
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._clients):
            writer.close()
        for server in self._tcp.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._udp.clear()
        self._tcp.clear()

    # answering ---------------------------------------------------------------------------

    async def answer(self, data: bytes, limit: int | None) -> bytes | None:
        try:
            _, flags, labels, qtype, qclass, end = parse_query(data)
        except DNSFormatError:
            return error_response(data, FORMERR)
        if flags & 0x8000:
            return None
        if (flags >> 11) & 0xF != 0:  # not a standard query
            return error_response(data, NOTIMP)
        async with self._limit:
            rcode, addresses = await self.resolve([x.lower() for x in labels], qtype, qclass)
        self.queries += 1
        return build_response(data, end, rcode, addresses, ttl=self.ttl, limit=limit,
                              authoritative=self.in_domain(labels))

    def in_domain(self, labels: list[bytes]) -> bool:
        size = len(self.domain)
        return len(labels) >= size and tuple(x.lower() for x in labels[-size:]) == self.domain

    async def resolve(self, labels: list[bytes], qtype: int = A, qclass: int = 1
                      ) -> tuple[int, list[str]]:
        """(rcode, A addresses) for a lower-cased name."""
        if qclass not in (1, 255):
            return REFUSED, []
        if not self.in_domain(labels):
            return NXDOMAIN, []  # never forwarded (module docstring)
        inside = labels[:-len(self.domain)]
        if not inside or inside == [b"svc"]:  # the zone and `svc`: names without records
            return NOERROR, []
        if len(inside) != 3 or inside[2] != b"svc":
            return NXDOMAIN, []
        try:
            name, namespace = inside[0].decode("ascii"), inside[1].decode("ascii")
        except UnicodeDecodeError:
            return NXDOMAIN, []
        if not (_LABEL.match(name) and _LABEL.match(namespace)):
            return NXDOMAIN, []
        try:
            addresses = await self.service_addresses(namespace, name)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            log.info("cluster DNS: looking up %s/%s failed: %s", namespace, name, e)
            return SERVFAIL, []
        if addresses is None:
            return NXDOMAIN, []
        if qtype not in (A, ANY):
            return NOERROR, []
        random.shuffle(addresses)  # spread clients over the pods, as CoreDNS does
        return NOERROR, addresses

    async def service_addresses(self, namespace: str, name: str) -> list[str] | None:
        """The addresses behind Service `namespace/name`; None when there is no such
        Service."""
        try:
            service = await self.api.request(
                "GET", f"/api/v1/namespaces/{namespace}/services/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        spec = service.get("spec") or {}
        if service.get("kind") not in (None, "Service") or spec.get("type") == "ExternalName":
            return []  # a name elsewhere: never followed (nothing leaves this machine)
        if spec.get("selector"):
            return [a for a in service_pod_addresses(service, self.pods()) if _ipv4(a)]
        try:
            endpoints = await self.api.request(
                "GET", f"/api/v1/namespaces/{namespace}/endpoints/{name}")
        except ApiError as e:
            if e.status == 404:
                return []
            raise
        return [a for a in endpoints_addresses(
            endpoints, bool(spec.get("publishNotReadyAddresses"))) if _ipv4(a)]

    def _spawn(self, coro: Any) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:  # answering or waiting to
            coro.close()
            self.dropped += 1
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_SECONDS):  # wait_for can lose a cancel
                    head = await reader.readexactly(2)
                (length,) = struct.unpack("!H", head)
                async with asyncio.timeout(TCP_IDLE_SECONDS):
                    data = await reader.readexactly(length)
                reply = await self.answer(data, None)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, dns: ClusterDNS):
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        async def reply() -> None:
            answer = await self.dns.answer(data, UDP_LIMIT)
            if answer is not None and self.transport is not None:
                self.transport.sendto(answer, addr)
        self.dns._spawn(reply())


# --- what a pod sees --------------------------------------------------------------------


def resolv_conf(pod: Mapping, nameserver: str, domain: str = DOMAIN) -> str | None:
    """The pod's resolv.conf as a kubelet writes it for its dnsPolicy (ClusterFirst, the
    default: ours; None: only spec.dnsConfig; Default: None here, the host's is kept) plus
    spec.dnsConfig. Values that aren't addresses, domain names or options are dropped (a
    pod must not write other lines)."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    config = spec.get("dnsConfig") or {}
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    if policy == "Default" or (spec.get("hostNetwork") and policy == "ClusterFirst"):
        return None
    servers: list[str] = []
    searches: list[str] = []
    options = ["ndots:5"]
    if policy != "None":
        servers.append(nameserver)
        searches += [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
    for server in config.get("nameservers") or []:
        with contextlib.suppress(ValueError):
            servers.append(str(ipaddress.ip_address(str(server))))
    searches += [s for s in config.get("searches") or [] if _SEARCH.match(str(s).lower())]
    for option in config.get("options") or []:
        text = str(option.get("name") or "")
        if option.get("value") not in (None, ""):
            text += f":{option['value']}"
        if _OPTION.match(text):
            key = text.split(":")[0]
            options = [o for o in options if o.split(":")[0] != key] + [text]
    lines = ["# written by the kdash-hub kubelet (clusterdns.py)"]
    lines += [f"nameserver {s}" for s in list(dict.fromkeys(servers))[:3]]
    if searches:
        lines.append("search " + " ".join(dict.fromkeys(searches[:32])))
    lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


NSSWITCH = ("# written by the kdash-hub kubelet: cluster names go to the cluster DNS\n"
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
            "networks: files\nprotocols: files\nservices: files\n")


def write_pod_files(directory: Path, pod: Mapping, nameserver: str,
                    domain: str = DOMAIN) -> dict[str, Path]:
    """The files bound over /etc in the pod (target -> file): resolv.conf and
    nsswitch.conf, root's and world-readable; {} when the pod keeps the host's."""
    text = resolv_conf(pod, nameserver, domain)
    if text is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    files = {"/etc/resolv.conf": (directory / "resolv.conf", text),
             "/etc/nsswitch.conf": (directory / "nsswitch.conf", NSSWITCH)}
    for path, content in files.values():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return {target: path for target, (path, _) in files.items()}


def dns_for(network: Any, api: KubeHTTP, pods: Callable[[], Iterable[Mapping]]
            ) -> ClusterDNS | None:
    """The responder of a network-namespace pod network run by root; None otherwise
    (loopback pods share the host's network and resolver)."""
    from .podnetwork import NetnsPodNetwork

    if not isinstance(network, NetnsPodNetwork) or os.geteuid() != 0:
        return None
    return ClusterDNS(api, pods)
