"""Benchmark of the local cluster's NetworkPolicy agent: what a policy change costs at scale.

For N users (a notebook pod and the pack's own bundle NetworkPolicy each, plus a hub pod):
the time to compile the policies into rules and render the nftables script, its size, and
the time `nft -f -` takes to load it, beside a baseline measured in the same run: loading
the same table with no pod in it (what every change costs whatever the cluster's size).
Needs root and nft (Debian's nftables); the table it loads is deleted at the end.

    python -m benchmarks.bench_netpolicy [--users 20,200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from kdash_hub.localcluster import netpolicy, podnetwork
from kdash_hub.spawner.bundle import BundleSpec, network_policy

# a block no local cluster on this machine uses now, so its table is the benchmark's own
BLOCK = next(r for r in range(254, 0, -1) if r not in podnetwork._blocks_in_use())
HUB_LABELS = {"hub.jupyter.org/network-access-singleuser": "true", "component": "hub"}


def cluster_of(users: int) -> tuple[list[dict], list[netpolicy.PodView], dict, list]:
    """Policies, pods, namespace labels and veth ports of `users` users and a hub."""
    pods = [netpolicy.PodView("hub", "hub", "10.254.0.2", HUB_LABELS, (("http", "TCP", 8081),))]
    policies, ports = [], []
    for u in range(users):
        ip = f"10.254.{1 + u // 250}.{2 + u % 250}"
        pods.append(netpolicy.PodView(f"user-{u}", "nb", ip, {"app": "nb"},
                                      (("notebook", "TCP", 8888),)))
        policies.append(network_policy(BundleSpec(
            username=f"u{u}", namespace=f"user-{u}", hub_namespace="hub", quota={},
            limit_range={})))
        ports.append(netpolicy.Port(f"kdv{BLOCK}x{u}", f"02:00:00:00:{u // 256:02x}:{u % 256:02x}",
                                    ip))
    namespaces = {p.namespace: {"kubernetes.io/metadata.name": p.namespace} for p in pods}
    return policies, pods, namespaces, ports


def load(script: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
    return time.perf_counter() - t0


def measure(users: int, repeat: int) -> dict:
    policies, pods, namespaces, ports = cluster_of(users)
    builds, script = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        rules = netpolicy.compile_rules(policies, pods, namespaces)
        script = netpolicy.render(BLOCK, f"kdash-br{BLOCK}", rules, ports, [f"kdv{BLOCK}x"])
        builds.append(time.perf_counter() - t0)
    empty = netpolicy.render(BLOCK, f"kdash-br{BLOCK}", netpolicy.compile_rules([], [], {}),
                             [], [f"kdv{BLOCK}x"])
    loads, baseline = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine
        baseline.append(load(empty))
        loads.append(load(script))
    return {"users": users, "build_ms": 1000 * statistics.median(builds),
            "lines": len(script.splitlines()), "load_ms": 1000 * statistics.median(loads),
            "baseline_ms": 1000 * statistics.median(baseline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="20,200",
                        help="comma-separated user counts (default 20,200)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("nft"):
        sys.exit("bench_netpolicy needs root and nft (apt-get install nftables)")
    try:
        print(f"{'users':>6} {'compile+render':>15} {'lines':>6} {'nft load':>9} "
              f"{'empty table':>12} {'ratio':>7}")
        for users in (int(n) for n in args.users.split(",")):
            f = measure(users, args.repeat)
            print(f"{f['users']:>6} {f['build_ms']:>12.1f} ms {f['lines']:>6} "
                  f"{f['load_ms']:>6.0f} ms {f['baseline_ms']:>9.0f} ms "
                  f"{f['load_ms'] / f['baseline_ms']:>6.2f}x")
    finally:
        netpolicy.delete_tables(BLOCK)


if __name__ == "__main__":
    main()
