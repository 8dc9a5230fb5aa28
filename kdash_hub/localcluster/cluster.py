"""LocalCluster: the emulated API server + the kubelet + a kubeconfig, started and stopped as one.

    cluster = LocalCluster(nodes=2, gpus={"nvidia.com/gpu": 4}, kubelet="process")
    await cluster.start()      # or cluster.start_in_thread() from synchronous code
    cluster.url, cluster.kubeconfig_path, cluster.api (the APIServer)
    await cluster.stop()       # or cluster.stop_thread()

Nodes come from `node_specs` when given (full control: names, capacity, extended
resources, labels, taints), otherwise `nodes` identical nodes of `node_cpu`/`node_memory`,
the first `gpu_nodes` of them (all by default) with `gpus` and GPU feature-discovery labels.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .kubeconfig import write_kubeconfig
from .kubelet import Kubelet, KubeletMode, NodeSpec

DEFAULT_GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"


def default_node_specs(
    nodes: int = 1,
    *,
    gpus: Mapping[str, int | str] | None = None,
    gpu_nodes: int | None = None,
    cpu: str = "8",
    memory: str = "32Gi",
    gpu_product: str = DEFAULT_GPU_PRODUCT,
) -> list[NodeSpec]:
    """`nodes` alike nodes named node-0, node-1, ...; the first `gpu_nodes` get `gpus`."""
    gpus = dict(gpus or {})
    with_gpus = nodes if gpu_nodes is None else gpu_nodes
    specs = []
    for i in range(nodes):
        spec = NodeSpec(name=f"node-{i}", cpu=cpu, memory=memory)
        if gpus and i < with_gpus:
            spec.extended = dict(gpus)
            for resource, count in gpus.items():
                vendor = resource.split("/", 1)[0]
                spec.labels[f"{vendor}/gpu.present"] = "true"
                spec.labels[f"{vendor}/gpu.count"] = str(count)
                if vendor == "nvidia.com":
                    spec.labels["nvidia.com/gpu.product"] = gpu_product
        specs.append(spec)
    return specs


def _as_spec(spec: NodeSpec | Mapping[str, Any]) -> NodeSpec:
    return spec if isinstance(spec, NodeSpec) else NodeSpec(**dict(spec))


class LocalCluster:
    """An API server on `host:port` (0 = any free port), its nodes and kubelet."""

    def __init__(
        self,
        nodes: int = 1,
        gpus: Mapping[str, int | str] | None = None,
        kubelet: KubeletMode = "status",
        kubeconfig_path: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        node_cpu: str = "8",
        node_memory: str = "32Gi",
        gpu_nodes: int | None = None,
        node_specs: list[NodeSpec | Mapping[str, Any]] | None = None,
        workdir: Path | str | None = None,
        gpu_product: str = DEFAULT_GPU_PRODUCT,
        graceful_pod_deletion: bool = True,
        pod_network: str = "loopback",
        flag_idle_containers: bool = False,
    ):
        if kubelet not in ("status", "process"):
            raise ValueError(f"kubelet must be 'status' or 'process', not {kubelet!r}")
        self.node_specs = (
            [_as_spec(s) for s in node_specs] if node_specs is not None
            else default_node_specs(nodes, gpus=gpus, gpu_nodes=gpu_nodes, cpu=node_cpu,
                                    memory=node_memory, gpu_product=gpu_product)
        )
        self.kubelet_mode: KubeletMode = kubelet
        # as on a real cluster: deleting a bound pod sets deletionTimestamp, and the
        # kubelet removes it once its containers are stopped
        self.graceful_pod_deletion = graceful_pod_deletion
        # "netns": process pods in network namespaces of their own (podnetwork.py, root)
        self.pod_network = pod_network
        # process mode: pods whose containers run nothing say so in a condition (the demo)
        self.flag_idle_containers = flag_idle_containers
        self.host = host
        self.port = port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self._kubeconfig_arg = Path(kubeconfig_path) if kubeconfig_path else None
        self.kubeconfig_path: Path | None = self._kubeconfig_arg
        self.api = None  # the APIServer, once started
        self.kubelet: Kubelet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.api is None:
            raise RuntimeError("the local cluster is not started")
        return self.api.url

    async def start(self) -> LocalCluster:
        try:
            from .apiserver import APIServer
        except ImportError:  # the package may not re-export it (yet)
            from .apiserver.server import APIServer

        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kdash-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = APIServer(host=self.host, port=self.port,
                             graceful_pod_deletion=self.graceful_pod_deletion)
        await self.api.start()
        try:
            self.kubeconfig_path = write_kubeconfig(
                self._kubeconfig_arg or self.workdir / "kubeconfig", self.api.url)
            from .podnetwork import pod_network

            self.kubelet = Kubelet(self.api.url, self.node_specs, mode=self.kubelet_mode,
                                   workdir=self.workdir / "kubelet",
                                   network=pod_network(self.pod_network),
                                   flag_idle_containers=self.flag_idle_containers)
            await self.kubelet.start()
            # `kubectl logs`: the API server asks the kubelet, who has the container output
            self.api.pod_log_source = self.kubelet.read_log
            self.api.pod_streams = self.kubelet  # pods/log (streamed) and pods/exec
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop the kubelet (and every pod process), then the API server."""
        if self.kubelet is not None:
            await self.kubelet.stop()
            self.kubelet = None
        if self.api is not None:
            await self.api.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- on a loop of its own, for synchronous callers ---------------------------------

    def start_in_thread(self, timeout: float = 60.0) -> LocalCluster:
        """Start on a new event loop in a daemon thread; returns once it serves."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:  # reported to the caller below
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="kdash-local-cluster", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"the local cluster did not start in {timeout}s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def run_in_thread(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the cluster's loop (started with start_in_thread)."""
        if self._loop is None:
            raise RuntimeError("start_in_thread() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_thread(self, timeout: float = 60.0) -> None:
        """Stop a cluster started with start_in_thread and join its thread."""
        if self._thread is None or self._loop is None:
            return
        try:
            self.run_in_thread(self.stop(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
            self._loop = None
