"""What the benchmarks that talk to Kubernetes share: a client-side request counter and the
two control planes (the in-process emulator, and the real one built from its Go modules).

Counting on the client side (every request kubernetes_asyncio sends from this process) gives
the same figure on both control planes, and sees only what the process under test asked: the
kubelet's traffic, the controllers' and the scheduler's are not in it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from kubernetes_asyncio.client import rest
from kubernetes_asyncio.client.exceptions import ApiException

from kdash_hub.dev.process import terminate
from kdash_hub.localcluster.apiclient import ApiError
from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.localcluster.real.apply import apply_objects
from tests.fixtures.realcp import (
    HUB_NAMESPACE,
    RealTier,
    identity_kubeconfig,
    install_identities,
    mint_token,
)

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Request:
    """One request as the client sent it; `end`/`status` once answered (headers, for a
    watch)."""

    start: float
    method: str
    path: str
    query: dict[str, str]
    end: float = 0.0
    status: int = 0

    @property
    def kind(self) -> str:
        """"watch" (a long-lived watch, opened once and reopened when it times out) or
        "request" (everything else: what a spawn itself asked)."""
        return "watch" if self.query.get("watch", "").lower() in ("true", "1") else "request"

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status}"


class RequestCounter:
    """Records every request kubernetes_asyncio's REST client sends in this process."""

    def __init__(self) -> None:
        self.records: list[Request] = []
        self._original = None

    def install(self) -> RequestCounter:
        if self._original is not None:
            return self
        original = self._original = rest.RESTClientObject.request
        records = self.records

        async def request(client, method, url, query_params=None, *args, **kwargs):
            parts = urlsplit(url)
            query = dict(parse_qsl(parts.query))
            query.update({str(k): str(v) for k, v in (query_params or [])})
            record = Request(time.perf_counter(), method.upper(), parts.path, query)
            records.append(record)
            try:
                response = await original(client, method, url, query_params, *args, **kwargs)
                record.status = getattr(response, "status", 0)
                return response
            except ApiException as e:
                record.status = e.status
                raise
            finally:
                record.end = time.perf_counter()

        rest.RESTClientObject.request = request
        return self

    def uninstall(self) -> None:
        if self._original is not None:
            rest.RESTClientObject.request = self._original
            self._original = None

    def mark(self) -> int:
        return len(self.records)

    def since(self, mark: int) -> list[Request]:
        return list(self.records[mark:])


def rounds(requests: list[Request], origin: float) -> list[str]:
    """The requests of one spawn as `+start..end ms METHOD path status`, in start order: the
    serial rounds show as groups of overlapping intervals."""
    out = []
    for r in sorted(requests, key=lambda r: r.start):
        out.append(f"+{1000 * (r.start - origin):7.1f}..{1000 * (r.end - origin):7.1f} ms  "
                   f"{r.method:6s} {r.path} {r.status}")
    return out


# --- a control plane in a subprocess (`kdash-hub local-cluster --control-plane real|emulator`) --


@dataclass
class PlaneProcess:
    """A control plane for one benchmark run in a process of its own, as a cluster's API
    server never shares the hub's process, and the identities it runs the pack as (real)."""

    workdir: Path
    control_plane: str = "real"
    nodes: int = 4
    node_cpu: str = "512"
    node_memory: str = "2048Gi"
    admin_kubeconfig: Path | None = None
    identities: dict[str, Path] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 300.0) -> None:
        """Start it (foreground CLI in a child process) and wait until it serves."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.log_path = self.workdir / "local-cluster.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kdash_hub.cli", "local-cluster", "--control-plane",
                 self.control_plane, "--kubeconfig", str(self.admin_kubeconfig),
                 "--nodes", str(self.nodes),
                 "--node-cpu", self.node_cpu, "--node-memory", self.node_memory,
                 "--kubelet", "status", "--workdir", str(self.workdir / "cluster")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
        deadline = time.monotonic() + timeout
        while b"local cluster: http" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.control_plane} control plane did not start:\n"
                                   + self.log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (the CLI stops every component), SIGKILL after a minute."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=60)

    async def install_identities(self) -> None:
        """What helm-values/rbac ships (hub, launcher, culler ServiceAccounts, roles and
        admission policies, in namespace `kdash-hub`) with a token for each, and a
        `plain-hub` ServiceAccount holding the cluster-wide rights plain KubeSpawner with
        user namespaces needs (z2jh's documented ClusterRole), with its token."""
        assert self.admin_kubeconfig is not None
        tier = RealTier(admin_kubeconfig=self.admin_kubeconfig, workdir=self.workdir)
        await install_identities(tier)
        self.identities.update(tier.identities)
        admin = client_for(self.admin_kubeconfig)
        try:
            await apply_objects(admin, plain_hub_objects(), field_manager="kdash-bench")
        finally:
            await admin.close()
        token = await mint_token(self.admin_kubeconfig, HUB_NAMESPACE, "plain-hub")
        self.identities["plain-hub"] = identity_kubeconfig(
            self.admin_kubeconfig, self.workdir / "plain-hub.kubeconfig", token, HUB_NAMESPACE)


def plain_hub_objects() -> list[dict]:
    """A ServiceAccount with what plain KubeSpawner (user namespaces, a PVC) asks of the API."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods"],
         "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
         "verbs": ["get", "create", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "plain-hub", "namespace": HUB_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "kdash-bench-plain-hub"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kdash-bench-plain-hub"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "kdash-bench-plain-hub"},
         "subjects": [{"kind": "ServiceAccount", "name": "plain-hub",
                       "namespace": HUB_NAMESPACE}]},
    ]


async def ensure_namespace(admin_kubeconfig: Path, name: str) -> None:
    """Create namespace `name` if it is missing (with the admin kubeconfig)."""
    api = client_for(admin_kubeconfig)
    try:
        await api.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as e:
        if e.status != 409:
            raise
    finally:
        await api.close()
