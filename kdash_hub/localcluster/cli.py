"""`kdash-hub local-cluster`: run the local cluster in the foreground until SIGTERM/SIGINT.

    kdash-hub local-cluster --port 6443 --kubeconfig ./kubeconfig --nodes 2 \\
        --gpus nvidia.com/gpu=4 --kubelet process

It writes the kubeconfig (current context = this cluster), prints the API URL, and on
SIGTERM or SIGINT stops every pod process and the server, then exits 0.

`--control-plane real` runs a real Kubernetes control plane instead of the emulator: etcd,
kube-apiserver, kube-controller-manager and kube-scheduler built from their pinned Go modules
(tools/kube; built once, then cached), with the same kubelet as node agent. The kubeconfig is
then an admin one (client certificate in system:masters, the cluster CA verified).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from .cluster import DEFAULT_GPU_PRODUCT, LocalCluster


def parse_gpus(text: str) -> dict[str, int]:
    """"nvidia.com/gpu=4,amd.com/gpu=2" -> {"nvidia.com/gpu": 4, "amd.com/gpu": 2}."""
    gpus: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        if not sep or "/" not in name or not count.isdigit():
            raise argparse.ArgumentTypeError(
                f"expected RESOURCE=COUNT such as nvidia.com/gpu=4, got {item!r}")
        gpus[name] = int(count)
    return gpus


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "local-cluster",
        help="run the emulated Kubernetes cluster (API server + kubelet) in the foreground",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--control-plane", choices=("emulator", "real"), default="emulator",
                        help="emulator: the in-process API emulator (fast, the demo's); real: "
                             "etcd + kube-apiserver + controller-manager + scheduler built "
                             "from their Go modules")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0,
                        help="API server port (default: any free port)")
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="where to write the kubeconfig for this cluster")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes")
    parser.add_argument("--gpus", type=parse_gpus, default=None,
                        help="extended resources of each GPU node, e.g. nvidia.com/gpu=4")
    parser.add_argument("--gpu-nodes", type=int, default=None,
                        help="how many nodes get --gpus (default: all)")
    parser.add_argument("--gpu-product", default=DEFAULT_GPU_PRODUCT,
                        help="nvidia.com/gpu.product label of the GPU nodes")
    parser.add_argument("--node-cpu", default="8", help="cpu of each node")
    parser.add_argument("--node-memory", default="32Gi", help="memory of each node")
    parser.add_argument("--kubelet", choices=("status", "process"), default="status",
                        help="status: pods only get a Running status; process: notebook "
                             "pods run as real jupyterhub-singleuser processes")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="directory for pod files (default: a temporary one)")
    parser.set_defaults(func=run)
    return parser


async def serve(args: argparse.Namespace) -> int:
    options = dict(
        nodes=args.nodes, gpus=args.gpus, gpu_nodes=args.gpu_nodes, kubelet=args.kubelet,
        kubeconfig_path=args.kubeconfig, host=args.host, port=args.port,
        node_cpu=args.node_cpu, node_memory=args.node_memory, workdir=args.workdir,
        gpu_product=args.gpu_product,
    )
    cluster: Any
    if args.control_plane == "real":
        from .real.build import BuildError
        from .real.controlplane import ComponentFailed, RealControlPlane
        cluster = RealControlPlane(**options)
        failures: tuple[type[Exception], ...] = (BuildError, ComponentFailed)
    else:
        cluster = LocalCluster(**options)
        failures = ()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    start = asyncio.ensure_future(cluster.start())
    interrupted = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({start, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():  # SIGTERM/SIGINT during start-up: stop what was started
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await start
            await cluster.stop()
            print("local cluster stopped", flush=True)
            return 0
        start.result()
    except failures as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        interrupted.cancel()
    try:
        print(f"local cluster: {cluster.url}", flush=True)
        print(f"kubeconfig: {cluster.kubeconfig_path}", flush=True)
        print(f"nodes: {', '.join(s.name for s in cluster.node_specs)}; "
              f"kubelet: {args.kubelet}; control plane: {args.control_plane}", flush=True)
        await stop.wait()
    finally:
        await cluster.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    print("local cluster stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m kdash_hub.localcluster.cli ...`)."""
    parser = argparse.ArgumentParser(prog="kdash-hub")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
