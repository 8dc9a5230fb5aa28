"""A real Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler built from their Go modules (`build.py`), with our kubelet as node agent.

    plane = RealControlPlane(nodes=2, gpus={"nvidia.com/gpu": 4}, kubelet="status")
    await plane.start()       # plane.url, plane.kubeconfig_path (admin), plane.pki
    await plane.stop()

What is real: the API server with its authentication (client certificates, ServiceAccount
tokens), the Node and RBAC authorizers, the admission chain (NamespaceLifecycle, LimitRanger,
ServiceAccount, PodSecurity, ResourceQuota, ValidatingAdmissionPolicy, NodeRestriction and
the other defaults), the controllers and the scheduler. What is ours: the kubelet (status
or process mode, one identity `system:node:<name>` per node) and a hostPath provisioner for
the default StorageClass. There is no container runtime, no CNI and no cluster DNS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from ...dev.ports import free_port
from ..apiclient import ApiError, KubeHTTP
from ..cluster import DEFAULT_GPU_PRODUCT, default_node_specs
from ..kubeconfig import write_kubeconfig
from ..kubelet import Kubelet, KubeletMode, NodeSpec
from ..podnetwork import pod_network as make_pod_network
from .build import KUBERNETES_VERSION, ensure_binaries
from .pki import SERVICE_CLUSTER_IP, ClusterPKI
from .provisioner import HostPathProvisioner

log = logging.getLogger("kdash_hub.localcluster.real")

SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMISSION_PLUGINS = ("NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota,"
                     "ValidatingAdmissionPolicy,NodeRestriction,DefaultStorageClass,"
                     "DefaultTolerationSeconds,Priority,RuntimeClass,StorageObjectInUseProtection,"
                     "TaintNodesByCondition,PersistentVolumeClaimResize,MutatingAdmissionWebhook,"
                     "ValidatingAdmissionWebhook")
START_TIMEOUT = 120.0
# the controllers' and the scheduler's API client rate (requests/s) and burst (see
# _start_controllers)
CLIENT_QPS = 200
CLIENT_BURST = 400


class ComponentFailed(RuntimeError):
    """A component did not start; the message names it and ends with its log."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Children get SIGKILL when the process that started them dies, even by kill -9."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Component:
    """One control-plane process, its log file and how to stop it."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, why: str) -> ComponentFailed:
        try:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        except OSError:
            tail = "(no log)"
        return ComponentFailed(f"{self.name} {why}; its log ({self.log_path}) ends with:\n{tail}")

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, and SIGKILL after `grace` seconds."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def _b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


class RealControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + our kubelet(s)."""

    def __init__(
        self,
        nodes: int = 1,
        gpus: Mapping[str, int | str] | None = None,
        kubelet: KubeletMode = "status",
        kubeconfig_path: Path | str | None = None,
        port: int = 0,
        node_cpu: str = "8",
        node_memory: str = "32Gi",
        gpu_nodes: int | None = None,
        node_specs: list[NodeSpec] | None = None,
        workdir: Path | str | None = None,
        gpu_product: str = DEFAULT_GPU_PRODUCT,
        host: str = "127.0.0.1",
        pod_network: str | None = None,
    ):
        if kubelet not in ("status", "process"):
            raise ValueError(f"kubelet must be 'status' or 'process', not {kubelet!r}")
        if host != "127.0.0.1":
            raise ValueError("the real control plane listens on 127.0.0.1 only")
        self.node_specs = list(node_specs) if node_specs is not None else default_node_specs(
            nodes, gpus=gpus, gpu_nodes=gpu_nodes, cpu=node_cpu, memory=node_memory,
            gpu_product=gpu_product)
        self.kubelet_mode: KubeletMode = kubelet
        # the API server refuses loopback pod addresses in Endpoints/EndpointSlices: pods
        # get 10.244.x addresses, process pods in network namespaces (needs root)
        if pod_network is None:
            pod_network = "netns" if kubelet == "status" or os.geteuid() == 0 else "loopback"
        self.pod_network = pod_network
        self.host = host
        self.port = port or free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self._kubeconfig_arg = Path(kubeconfig_path) if kubeconfig_path else None
        self.kubeconfig_path: Path | None = self._kubeconfig_arg
        self.components: list[Component] = []
        self.kubelets: list[Kubelet] = []
        self.provisioner: HostPathProvisioner | None = None
        self.pki: ClusterPKI | None = None
        self.api = None  # no emulator: tests needing its internals skip
        self.binaries: dict[str, Path] = {}
        self.own_ports: set[int] = {self.port}  # never relayed to pods (podnetwork.py)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def kubelet(self) -> Kubelet | None:
        return self.kubelets[0] if self.kubelets else None

    # --- start ---------------------------------------------------------------------------

    async def start(self) -> RealControlPlane:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kdash-realcp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binaries = await asyncio.to_thread(
            ensure_binaries, ("etcd", "kube-apiserver", "kube-controller-manager",
                              "kube-scheduler"), lambda line: log.info("build: %s", line))
        try:
            await asyncio.to_thread(self._make_credentials)
            await self._start_etcd()
            await self._start_apiserver()
            self.kubeconfig_path = self._kubeconfig(
                self._kubeconfig_arg or self.workdir / "admin.kubeconfig", "admin")
            await self._start_controllers()
            await self._bootstrap_objects()
            await self._start_nodes()
        except BaseException:
            await self.stop()
            raise
        return self

    def _make_credentials(self) -> None:
        assert self.workdir is not None
        pki = self.pki = ClusterPKI(self.workdir / "pki")
        pki.ensure_ca()
        pki.issue("apiserver", "kube-apiserver", client=False, server_names=(
            "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
            SERVICE_CLUSTER_IP))
        pki.issue("admin", "kdash-admin", organizations=("system:masters",))
        pki.issue("controller-manager", "system:kube-controller-manager")
        pki.issue("scheduler", "system:kube-scheduler")
        pki.issue("provisioner", "kdash:hostpath-provisioner")
        pki.issue("serving", "localhost", client=False, server_names=("127.0.0.1", "localhost"))
        # how the API server reaches the kubelets for pods/log and pods/exec
        pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
        for spec in self.node_specs:
            pki.issue(f"node-{spec.name}", f"system:node:{spec.name}",
                      organizations=("system:nodes",))
        pki.service_account_keys()

    def _kubeconfig(self, path: Path, stem: str) -> Path:
        assert self.pki is not None
        return write_kubeconfig(
            path, self.url, name=f"kdash-real-{stem}",
            certificate_authority_data=_b64(self.pki.ca_cert),
            client_certificate_data=_b64(self.pki.root / f"{stem}.crt"),
            client_key_data=_b64(self.pki.root / f"{stem}.key"), token=None)

    def ssl_context(self, stem: str) -> ssl.SSLContext:
        """TLS to the API server as identity `stem` (its client certificate), CA verified."""
        assert self.pki is not None
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.root / f"{stem}.crt", self.pki.root / f"{stem}.key")
        return context

    def _launch(self, name: str, argv: list[str]) -> Component:
        assert self.workdir is not None
        component = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        component.start()
        self.components.append(component)
        return component

    async def _wait_healthy(self, component: Component, url: str,
                            context: ssl.SSLContext | None = None,
                            ok: tuple[int, ...] = (200,)) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not component.alive():
                    raise component.failure("exited during start-up")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, ssl=context if context else False) as resp:
                        if resp.status in ok:
                            return
                if time.monotonic() > deadline:
                    raise component.failure(f"was not healthy at {url} in {START_TIMEOUT:.0f} s")
                await asyncio.sleep(0.2)

    async def _start_etcd(self) -> None:
        assert self.workdir is not None
        client, peer = free_port(), free_port()
        self.own_ports |= {client, peer}
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._launch("etcd", [
            str(self.binaries["etcd"]), "--name", "kdash", "--data-dir",
            str(self.workdir / "etcd"), "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"kdash=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", "", "--unsafe-no-fsync", "--log-level", "warn",
            "--quota-backend-bytes", str(2 * 1024**3),
        ])
        await self._wait_healthy(etcd, f"{self.etcd_url}/health")

    async def _start_apiserver(self) -> None:
        assert self.pki is not None
        pki = self.pki.root
        apiserver = self._launch("kube-apiserver", [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}", f"--secure-port={self.port}",
            f"--advertise-address={self.host}", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={ISSUER}", f"--api-audiences={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            "--event-ttl=1h",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            # pass kubectl's exec WebSocket through to our kubelet (which speaks no SPDY)
            "--feature-gates=TranslateStreamCloseWebsocketRequests=false",
        ])
        await self._wait_healthy(apiserver, f"{self.url}/readyz", self.ssl_context("admin"))

    async def _start_controllers(self) -> None:
        assert self.pki is not None and self.workdir is not None
        pki = self.pki.root
        for name, stem, extra in (
            ("kube-controller-manager", "controller-manager", [
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}", "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--concurrent-gc-syncs=20", "--concurrent-namespace-syncs=10",
            ]),
            ("kube-scheduler", "scheduler", []),
        ):
            kubeconfig = self._kubeconfig(self.workdir / f"{stem}.kubeconfig", stem)
            port = free_port()
            self.own_ports.add(port)
            component = self._launch(name, [
                str(self.binaries[name]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={self.host}", f"--secure-port={port}",
                f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}",
                "--leader-elect=false", "--v=1",
                # their clients' rate limits: at the defaults (controller-manager 20/s,
                # scheduler 50/s) the PV controller binds about 5 claims a second and the
                # ServiceAccount controller lags a burst of new namespaces: a burst of users
                # waits on a client-side limiter, not on the API server (docs/e2e.md)
                f"--kube-api-qps={CLIENT_QPS}", f"--kube-api-burst={CLIENT_BURST}", *extra,
            ])
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            await self._wait_healthy(component, f"https://127.0.0.1:{port}/healthz", context)

    async def _bootstrap_objects(self) -> None:
        """The default StorageClass and the provisioner's rights (admin credentials)."""
        admin = KubeHTTP(self.url, None, ssl_context=self.ssl_context("admin"))
        try:
            for path, obj in bootstrap_objects():
                try:
                    await admin.request("POST", path, body=obj)
                except ApiError as e:
                    if e.status != 409:
                        raise
        finally:
            await admin.close()

    async def _start_nodes(self) -> None:
        assert self.workdir is not None
        self.provisioner = HostPathProvisioner(
            KubeHTTP(self.url, None, ssl_context=self.ssl_context("provisioner")),
            self.workdir / "volumes")
        await self.provisioner.start()
        assert self.pki is not None
        for spec in self.node_specs:
            network = make_pod_network(self.pod_network)
            network.denied_ports = self.own_ports  # type: ignore[attr-defined]
            serving = None
            if self.pod_network == "loopback" or os.geteuid() == 0:  # its address exists
                pair = self.pki.issue(f"kubelet-{spec.name}", f"system:node:{spec.name}",
                                      organizations=("system:nodes",), client=False,
                                      server_names=(network.host_ip(spec.name), spec.name))
                serving = (pair.cert, pair.key, self.pki.ca_cert)
            kubelet = Kubelet(
                self.url, [spec], mode=self.kubelet_mode, token=None,
                ssl_context=self.ssl_context(f"node-{spec.name}"),
                workdir=self.workdir / "kubelet" / spec.name, schedule_pods=False,
                heartbeat_seconds=10.0, network=network, serving_cert=serving)
            self.kubelets.append(kubelet)
            await kubelet.start()
        # share one pod network so two nodes never hand out the same address
        await self._wait_nodes_ready()

    async def _wait_nodes_ready(self) -> None:
        """Until the node lifecycle controller has lifted the not-ready taints."""
        admin = KubeHTTP(self.url, None, ssl_context=self.ssl_context("admin"))
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                nodes = (await admin.request("GET", "/api/v1/nodes")).get("items") or []
                tainted = [n["metadata"]["name"] for n in nodes
                           if any(t.get("key", "").startswith("node.kubernetes.io/not-ready")
                                  for t in (n.get("spec") or {}).get("taints") or [])]
                if len(nodes) >= len(self.node_specs) and not tainted:
                    return
                if time.monotonic() > deadline:
                    raise ComponentFailed(f"nodes still not ready: {tainted}")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    # --- stop ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Kubelets (and their pod processes) first, then the components in reverse order."""
        for kubelet in reversed(self.kubelets):
            with contextlib.suppress(Exception):
                await kubelet.stop()
        self.kubelets.clear()
        if self.provisioner is not None:
            with contextlib.suppress(Exception):
                await self.provisioner.stop()
            self.provisioner = None
        for component in reversed(self.components):
            await component.stop()
        self.components.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> RealControlPlane:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        return {"version": KUBERNETES_VERSION, "url": self.url,
                "kubeconfig": str(self.kubeconfig_path),
                "logs": str(self.workdir / "logs") if self.workdir else None}


def bootstrap_objects() -> list[tuple[str, dict]]:
    """What a fresh cluster of ours holds besides upstream's bootstrap: the default
    StorageClass served by our provisioner, the provisioner's own narrow role, and the
    read-only role of the nodes' NetworkPolicy agent."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    return [
        ("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": HostPathProvisioner.NAME, "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate"}),
        (f"{rbac}/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kdash:hostpath-provisioner"},
            "rules": [
                {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["persistentvolumes"],
                 "verbs": ["get", "list", "watch", "create", "delete"]},
                {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ]}),
        (f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kdash:hostpath-provisioner"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "kdash:hostpath-provisioner"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "kdash:hostpath-provisioner"}]}),
        # the kubelets' NetworkPolicy agent (netpolicy.py) reads what a CNI's agent reads;
        # the Node authorizer gives nodes no networkpolicies, namespaces or other nodes' pods
        (f"{rbac}/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kdash:netpolicy-agent"},
            "rules": [
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods", "namespaces"],
                 "verbs": ["get", "list", "watch"]},
            ]}),
        (f"{rbac}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kdash:netpolicy-agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "kdash:netpolicy-agent"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                          "name": "system:nodes"}]}),
    ]


