"""Attack: a deleted pod's address goes to the next pod; nothing of the deleted pod may
answer there.

Found by CI in session 11: a notebook pod deleted while the process kubelet was still
making its process left that process running; the pod's address went back to the pod
network, another user's pod got it, and the hub routed that user to the leaked notebook.
Here alice's pod is deleted at moments around the making of its process (the window of
that bug), bob's pod is made next on the same node, and every answer on bob's address
must be bob's; alice's process must be gone. The emulator's process kubelet only: a
real control plane runs no process of ours per pod.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from kdash_hub.kube import KubeResources, resource_for
from kdash_hub.localcluster.containers import ContainerRunner
from kdash_hub.localcluster.processes import RUN_AS_PROCESS
from tests.fixtures.cluster import api_client_for, requires_emulator
from tests.fixtures.polling import eventually
from tests.fixtures.processes import process_alive

# a notebook's stand-in: says whose it is, on the pod's address, and leaves its pid behind
SERVER = """
import http.server, os, pathlib
who = os.environ["WHO"].encode()
pathlib.Path(os.environ["PID_FILE"]).write_text(str(os.getpid()))
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(who)))
        self.end_headers()
        self.wfile.write(who)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 8080), Answer).serve_forever()
"""

# how long the node takes to make a container's process once it set out to (its Created
# event): a busy node's, as in CI, so that the bug's window is wide enough to hit
MAKING_SECONDS = 0.3
# when alice's pod is deleted: seconds after its Created event (while the process is made:
# the bug's window), or after the API showed the pod's address (the process is made then)
DELETE_AFTER = (("address", 0.0), ("created", 0.0), ("created", 0.1), ("created", 0.2),
                ("address", 0.3))


def notebook(name: str, namespace: str, who: str, pid_file: Path) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "annotations": {RUN_AS_PROCESS: "true"}},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "notebook", "image": "quay.io/jupyter/base-notebook",
            "command": ["python", "-c", SERVER],
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            "env": [{"name": "WHO", "value": who},
                    {"name": "PID_FILE", "value": str(pid_file)},
                    {"name": "POD_IP",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]},
    }





async def _answers(http: aiohttp.ClientSession, ip: str) -> str | None:
    try:
        async with http.get(f"http://{ip}:8080/", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return await r.text()
    except (TimeoutError, aiohttp.ClientConnectionError):
        return None


class Pods:
    """The pods of the attack, by namespace and name."""

    def __init__(self, kube: KubeResources, cluster):
        self.kube = kube
        self.cluster = cluster

    async def address(self, namespace: str, name: str) -> str | None:
        pod = await self.kube.get("Pod", name, namespace)
        return pod and pod["status"].get("podIP")

    async def created(self, namespace: str, name: str) -> bool:
        """The kubelet's Created event for the pod: it is making the process now."""
        events = await self.kube.list("Event", namespace,
                                      field_selector=f"involvedObject.name={name}")
        return any(e.get("reason") == "Created" for e in events)

    async def ready(self, namespace: str, name: str) -> dict | None:
        """The pod once its container is ready; fails when the container ended."""
        pod = await self.kube.get("Pod", name, namespace)
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
        assert "terminated" not in statuses[0].get("state", {}), (
            f"{namespace}/{name}: the notebook ended: {statuses[0]}; its log: "
            f"{self.cluster.kubelet.read_log(namespace, name)}")
        return pod if statuses[0].get("ready") else None

    async def torn_down(self, namespace: str, name: str) -> bool:
        """The kubelet runs nothing of the pod any more (its address is free again)."""
        return f"{namespace}/{name}" not in self.cluster.kubelet.runs

    def kubelet_state(self, namespace: str, name: str) -> str:
        """What the kubelet still holds of the pod, for a failure's message."""
        kubelet, key = self.cluster.kubelet, f"{namespace}/{name}"
        run, worker = kubelet.runs.get(key), kubelet._workers.get(key)
        held = "no run" if run is None else (
            f"run stopping={run.stopping} finished={run.finished} ip={run.ip} "
            f"containers={ {n: r.state for n, r in run.runners.items()} }")
        stack = worker.get_stack(limit=6) if worker is not None else []
        return (f"{held}; worker: {'none' if worker is None else worker}; at: "
                + " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in stack))

    async def delete(self, namespace: str, name: str) -> None:
        """Delete at once (grace 0) and wait until the API no longer has it."""
        await self.kube.request("DELETE", resource_for("Pod").path(namespace, name),
                              body={"kind": "DeleteOptions", "apiVersion": "v1",
                                    "gracePeriodSeconds": 0})

        async def gone() -> bool:
            return await self.kube.get("Pod", name, namespace) is None
        await eventually(gone, f"{namespace}/{name} is not deleted", interval=0.005, within=20)


async def _attack(pods: Pods, http: aiohttp.ClientSession, pid_dir: Path, round_: int,
                  after: str, delay: float, address: str | None) -> str:
    """One round: alice's pod deleted `delay` s `after` "created" or "address", then bob's
    pod made; bob's address must be alice's (`address`, when known) and only bob may
    answer there. Returns that address."""
    name = f"notebook-{round_}"
    alice_pid, bob_pid = pid_dir / f"alice-{round_}.pid", pid_dir / f"bob-{round_}.pid"
    await pods.kube.create(notebook(name, "alice", f"alice-{round_}", alice_pid))
    if after == "address":
        address = await eventually(partial(pods.address, "alice", name),
                                   f"round {round_}: alice's pod has no address",
                                   interval=0.005, within=20)
    else:
        await eventually(partial(pods.created, "alice", name),
                         f"round {round_}: no Created event for alice's pod",
                         interval=0.005, within=20)
    await asyncio.sleep(delay)
    await pods.delete("alice", name)
    # a grace-0 delete ends the API object first; the kubelet then stops what the pod ran
    # and gives its address back (a real one too): wait for that, then for any process
    # made late (the bug made one after this point) to show itself
    await eventually(partial(pods.torn_down, "alice", name),
                 f"round {round_}: the kubelet still runs alice's deleted pod", within=10,
                 detail=partial(pods.kubelet_state, "alice", name), interval=0.005)
    await asyncio.sleep(MAKING_SECONDS + 0.3)
    if alice_pid.exists():
        pid = int(alice_pid.read_text())
        assert not process_alive(pid), f"round {round_}: alice's process {pid} outlived her pod"

    await pods.kube.create(notebook(name, "bob", f"bob-{round_}", bob_pid))
    bob = await eventually(partial(pods.ready, "bob", name),
                           f"round {round_}: bob's pod not ready", interval=0.005, within=20)
    # the attack needs the address reused: the network hands out the lowest free one, and
    # alice's is free again
    assert address is None or bob["status"]["podIP"] == address, (
        f"round {round_}: bob got {bob['status']['podIP']}, not alice's {address} "
        f"(still taken by alice's process?)")
    address = bob["status"]["podIP"]
    # long enough for a leaked process of alice's to have started and bound
    for _ in range(5):
        assert await _answers(http, address) == f"bob-{round_}", (
            f"round {round_} (deleted {delay} s after {after}): something other than "
            f"bob's notebook answers on bob's address")
        await asyncio.sleep(0.1)
    if alice_pid.exists():  # a process of alice's made since: ended at once
        pid = int(alice_pid.read_text())
        assert not process_alive(pid), f"round {round_}: alice's process {pid} outlived her pod"

    await pods.delete("bob", name)
    await eventually(partial(pods.torn_down, "bob", name),
                 f"round {round_}: the kubelet still runs bob's deleted pod", within=10,
                 detail=partial(pods.kubelet_state, "bob", name), interval=0.005)
    pid = int(bob_pid.read_text())
    assert not process_alive(pid), f"round {round_}: bob's process {pid} outlived his pod"
    assert await _answers(http, address) is None, (
        f"round {round_}: something still answers on bob's old address")
    return address


@pytest.fixture
def slow_to_make_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every container's process is made MAKING_SECONDS after the kubelet set out to."""
    real_init = ContainerRunner.__init__

    def init(self, container, *, start, **kwargs):
        async def slow_start(log_path):
            await asyncio.sleep(MAKING_SECONDS)
            return await start(log_path)
        real_init(self, container, start=slow_start, **kwargs)
    monkeypatch.setattr(ContainerRunner, "__init__", init)


@pytest.fixture
def pid_dir() -> Iterator[Path]:
    """Where the pods' processes leave their pids: they run as the pod's user, which may
    not reach pytest's own temporary directories."""
    path = Path(tempfile.mkdtemp(prefix="kdash-pod-pids-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_deleted_pods_process_never_answers_on_the_next_pods_address(
        make_local_cluster, pid_dir, slow_to_make_processes):
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    async with api_client_for(cluster.kubeconfig_path) as client, \
            aiohttp.ClientSession() as http:
        pods = Pods(KubeResources(client), cluster)
        for namespace in ("alice", "bob"):
            await pods.kube.create({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": namespace}})
        address = None
        for round_, (after, delay) in enumerate(DELETE_AFTER):
            address = await _attack(pods, http, pid_dir, round_, after, delay, address)
