"""Process mode's pure parts: how a container's command, env and bind address become a process."""

import base64
import os
from pathlib import Path

import pytest
import yaml

from kdash_hub.localcluster import processes, volumes
from kdash_hub.localcluster.kubeconfig import server_of, write_kubeconfig
from kdash_hub.localcluster.nodes import PodNetwork


def pod(env=None, env_from=None, **container):
    return {
        "metadata": {"name": "jupyter-ann", "namespace": "hub", "uid": "u-1",
                     "labels": {"app": "jupyterhub"}},
        "spec": {"nodeName": "node-0", "containers": [
            {"name": "notebook", "image": "img", "env": env or [], "envFrom": env_from or [],
             **container}]},
    }


async def lookup(kind, namespace, name):
    objects = {
        ("Secret", "hub", "creds"): {"data": {"token": base64.b64encode(b"s3cret").decode()}},
        ("ConfigMap", "hub", "settings"): {"data": {"MODE": "dev", "LEVEL": "3"}},
    }
    return objects.get((kind, namespace, name))


async def resolve(p, **kw):
    return await processes.container_env(p, p["spec"]["containers"][0], pod_ip="127.9.9.2",
                                         host_ip="127.9.9.1", lookup=lookup, **kw)


async def test_env_resolution_like_the_kubelet():
    p = pod(
        env=[
            {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/ann/"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "value": "prod"},  # env wins over envFrom
            {"name": "GREETING", "value": "$(MODE)-$(LEVEL)-$(UNKNOWN)-$$(MODE)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                "resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {
                "name": "nope", "key": "k", "optional": True}}},
        ],
        env_from=[{"configMapRef": {"name": "settings"}}],
        resources={"limits": {"memory": "1Gi"}},
    )
    env = await resolve(p)
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.9.9.2:8888/user/ann/"
    assert env["TOKEN"] == "s3cret"
    assert env["MODE"] == "prod"
    assert env["GREETING"] == "prod-3-$(UNKNOWN)-$(MODE)"
    assert (env["POD"], env["IP"], env["APP"], env["MEM"]) == (
        "jupyter-ann", "127.9.9.2", "jupyterhub", "1024")
    assert "OPT" not in env


async def test_missing_secret_is_a_config_error_with_the_kubelets_words():
    p = pod(env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}])
    with pytest.raises(processes.ContainerConfigError, match='secret "gone" not found'):
        await resolve(p)


@pytest.mark.parametrize("url,rewritten", [
    ("http://0.0.0.0:8888/user/a/", "http://127.1.2.3:8888/user/a/"),
    ("http://:8888/", "http://127.1.2.3:8888/"),
    ("http://[::]:8888/", "http://127.1.2.3:8888/"),
    ("http://10.0.0.1:8888/", "http://10.0.0.1:8888/"),
])
def test_bind_all_means_the_pod_ip(url, rewritten):
    assert processes.rewrite_bind_url(url, "127.1.2.3") == rewritten


def test_notebook_commands_run_this_environments_singleuser():
    single = processes.singleuser_program()
    root = ["--allow-root"] if os.geteuid() == 0 else []
    assert Path(single).name == "jupyterhub-singleuser"
    assert processes.container_argv({"command": ["jupyterhub-singleuser"],
                                     "args": ["--debug"]}) == [single, "--debug", *root]
    assert processes.container_argv({"args": ["start-notebook.sh", "--x"]}) == [
        single, "--x", *root]
    assert processes.container_argv({}) == [single, *root]
    assert processes.container_argv({"command": ["/bin/sh", "-c", "echo $(A) $$(A)"]},
                                    {"A": "1"}) == ["/bin/sh", "-c", "echo 1 $(A)"]


def test_notebook_port_prefers_the_bind_url():
    container = {"ports": [{"name": "notebook-port", "containerPort": 8888}]}
    assert processes.notebook_port(container, {}) == 8888
    assert processes.notebook_port(container, {"JUPYTERHUB_SERVICE_URL": "http://x:9999/"}) == 9999


def test_pod_network_gives_each_node_a_loopback_slash_24():
    net = PodNetwork()
    a, b = net.allocate("n0"), net.allocate("n0")
    assert a != b and a.startswith("127.") and net.pod_cidr("n0").endswith(".0/24")
    assert net.host_ip("n0").rsplit(".", 1)[0] == a.rsplit(".", 1)[0]
    assert net.prefix("n1") != net.prefix("n0")
    net.release(a)
    assert net.allocate("n0") == a


def test_kubeconfig_points_the_current_context_at_the_server(tmp_path):
    path = write_kubeconfig(tmp_path / "sub" / "kubeconfig", "http://127.0.0.1:1234")
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "kdash-local"
    assert config["users"][0]["user"]["token"]
    assert server_of(path) == "http://127.0.0.1:1234"
    assert path.stat().st_mode & 0o777 == 0o600


async def test_volumes_are_directories_that_live_as_long_as_their_kind(tmp_path):
    def pod_with(name):
        return {
            "metadata": {"name": name, "namespace": "hub", "uid": name},
            "spec": {"nodeName": "node-0", "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": "home-ann"}},
                {"name": "shared", "nfs": {"server": "nfs.example", "path": "/exports/data"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "settings", "configMap": {"name": "settings"}},
            ]},
        }

    container = {"volumeMounts": [  # a child mount listed before its parent
        {"name": "shared", "mountPath": "/home/jovyan/shared"},
        {"name": "home", "mountPath": "/home/jovyan"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "settings", "mountPath": "/etc/settings"},
    ]}
    roots = []
    for name in ("one", "two"):
        root = tmp_path / "pods" / name
        await volumes.prepare_volumes(pod_with(name), container, pod_root=root,
                                        cluster_root=tmp_path, lookup=lookup)
        roots.append(root)
    one, two = roots
    (one / "home/jovyan/notes.txt").write_text("kept")
    assert (two / "home/jovyan/notes.txt").read_text() == "kept"  # same claim
    (one / "home/jovyan/shared/d.csv").write_text("1,2")
    assert (two / "home/jovyan/shared/d.csv").read_text() == "1,2"  # same NFS export
    assert (tmp_path / "nfs/nfs.example/exports/data/d.csv").exists()
    (one / "scratch/tmp").write_text("x")
    assert not (two / "scratch/tmp").exists()  # emptyDir is per pod
    assert (one / "etc/settings/MODE").read_text() == "dev"


# --- parity with a real kubelet (issue 10) ---------------------------------------------


async def test_python_processes_connect_from_the_pod_address(tmp_path):
    """The kubelet's sitecustomize binds outgoing loopback connections to the pod's IP."""
    import asyncio
    import sys

    peers = []

    async def record(reader, writer):
        peers.append(writer.get_extra_info("peername")[0])
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = {"PATH": os.environ["PATH"], **processes.source_address_env("127.77.0.9", {})}
    script = (f"import socket, urllib.request\n"
              f"socket.create_connection(('127.0.0.1', {port})).close()\n"
              f"s = socket.socket(); s.connect(('127.0.0.1', {port})); s.close()\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env)
    assert await proc.wait() == 0
    without = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env={"PATH": os.environ["PATH"]})
    assert await without.wait() == 0
    server.close()
    assert peers == ["127.77.0.9", "127.77.0.9", "127.0.0.1", "127.0.0.1"]


async def test_sub_paths_and_item_paths_never_leave_their_volume(tmp_path):
    async def lookup_cm(kind, namespace, name):
        return {"data": {"a": "1", "../../escape": "x"}}

    p = {"metadata": {"name": "p", "namespace": "hub", "uid": "u"},
         "spec": {"volumes": [{"name": "cm", "configMap": {"name": "c", "items": [
             {"key": "a", "path": "../../outside"}]}}]}}
    root = tmp_path / "pods" / "p"
    await volumes.prepare_volumes(p, {"volumeMounts": [{"name": "cm", "mountPath": "/etc/c"}]},
                                  pod_root=root, cluster_root=tmp_path, lookup=lookup_cm)
    assert not list(tmp_path.rglob("outside")) and not list(tmp_path.rglob("escape"))
    with pytest.raises(volumes.MountError) as e:
        await volumes.prepare_volumes(
            p, {"volumeMounts": [{"name": "cm", "mountPath": "/x", "subPath": "../../.."}]},
            pod_root=root, cluster_root=tmp_path, lookup=lookup_cm)
    assert "inside the volume" in e.value.message


async def test_volume_check_speaks_like_the_kubelet():
    async def none(kind, namespace, name):
        return None

    async def present(kind, namespace, name):
        return {"data": {"k": base64.b64encode(b"v").decode()}}

    p = {"metadata": {"name": "p", "namespace": "hub"}, "spec": {"volumes": [
        {"name": "a", "configMap": {"name": "cm-a"}},
        {"name": "b", "secret": {"secretName": "s-b"}},
        {"name": "c", "configMap": {"name": "cm-c", "optional": True}},
        {"name": "d", "projected": {"sources": [{"configMap": {"name": "cm-d"}},
                                                {"serviceAccountToken": {"path": "t"}}]}},
        {"name": "e", "emptyDir": {}}]}}
    problems = await volumes.check(p, none)
    assert [x.event_message() for x in problems] == [
        'MountVolume.SetUp failed for volume "a" : configmap "cm-a" not found',
        'MountVolume.SetUp failed for volume "b" : secret "s-b" not found',
        'MountVolume.SetUp failed for volume "d" : configmap "cm-d" not found']
    p["spec"]["volumes"] = [{"name": "k", "secret": {"secretName": "s", "items": [
        {"key": "missing", "path": "x"}]}}]
    [problem] = await volumes.check(p, present)
    assert problem.message == "references non-existent secret key: missing"


def test_pod_phase_follows_the_kubelets_get_phase():
    from kdash_hub.localcluster.podstatus import pod_phase

    def spec(policy):
        return {"restartPolicy": policy, "containers": [{"name": "a"}, {"name": "b"}]}

    running = {"running": {}}
    ok = {"terminated": {"exitCode": 0}}
    bad = {"terminated": {"exitCode": 1}}
    backoff = {"waiting": {"reason": "CrashLoopBackOff"}}
    creating = {"waiting": {"reason": "ContainerCreating"}}

    def statuses(a, b, last=None):
        return [{"name": "a", "state": a}, {"name": "b", "state": b, **(
            {"lastState": last} if last else {})}]

    assert pod_phase(spec("Always"), statuses(running, creating)) == "Pending"
    assert pod_phase(spec("Always"), statuses(running, backoff, bad)) == "Running"
    assert pod_phase(spec("Always"), statuses(ok, ok)) == "Running"
    assert pod_phase(spec("OnFailure"), statuses(ok, ok)) == "Succeeded"
    assert pod_phase(spec("OnFailure"), statuses(ok, bad)) == "Running"
    assert pod_phase(spec("Never"), statuses(ok, bad)) == "Failed"
    assert pod_phase(spec("Never"), statuses(running, bad)) == "Running"


def test_back_off_doubles_to_five_minutes_and_resets_after_ten():
    from kdash_hub.localcluster.containers import Backoff, go_duration

    b = Backoff()
    assert b.wait_after(100.0) == 0  # the first crash restarts at once
    waits = []
    t = 100.0
    for _ in range(7):
        t += 1
        waits.append(b.wait_after(t))
        b.advance(t)
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert b.wait_after(t + 601) == 0  # ten quiet minutes: forgiven
    assert [go_duration(s) for s in (0.4, 10, 80, 300)] == ["400ms", "10s", "1m20s", "5m0s"]


def test_cri_log_lines_round_trip(tmp_path):
    import asyncio

    from kdash_hub.localcluster import containerlogs

    async def write(out) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"one\ntwo\n" + b"x" * (containerlogs.PARTIAL_AT + 5) + b"\nlast")
        reader.feed_eof()
        await containerlogs.pump(reader, "stdout", out)

    with open(tmp_path / "0.log", "ab") as out:
        asyncio.run(write(out))
    raw = (tmp_path / "0.log").read_bytes().splitlines()
    assert raw[0].split(b" ", 3)[1:] == [b"stdout", b"F", b"one"]
    assert raw[2].split(b" ", 3)[2] == b"P"  # a long line is written in parts
    text = containerlogs.read(tmp_path / "0.log")
    assert text.split(b"\n")[:2] == [b"one", b"two"]
    assert len(text.split(b"\n")[2]) == containerlogs.PARTIAL_AT + 5
    assert containerlogs.read(tmp_path / "0.log", containerlogs.LogOptions(
        tail_lines=1)) == b"last\n"
    stamped = containerlogs.read(tmp_path / "0.log", containerlogs.LogOptions(
        tail_lines=1, timestamps=True))
    assert stamped.endswith(b"Z last\n")
    later = containerlogs.LogOptions(since=containerlogs.parse_time("2999-01-01T00:00:00Z"))
    assert containerlogs.read(tmp_path / "0.log", later) == b""


def test_variables_naming_paths_in_a_mount_follow_the_mount():
    """The process kubelet mounts volumes under the pod's root, so a variable naming a file
    in a mount (AWS_CONFIG_FILE in the datasets' Secret) is rewritten with it; a look-alike
    prefix or a path outside every mount is left as it is."""
    from kdash_hub.localcluster.kubelet import container_path_variables

    container = {"volumeMounts": [{"name": "d", "mountPath": "/etc/kdash/datasets"},
                                  {"name": "s", "mountPath": "/etc/kdash/services/"}]}
    env = {"HOME": "/home/jovyan", "AWS_CONFIG_FILE": "/etc/kdash/datasets/aws-config",
           "KDASH_DATASETS_DIR": "/etc/kdash/datasets", "KDASH_SERVICES_DIR":
           "/etc/kdash/services", "EVIL": "/etc/kdash/datasets-other/x",
           "OUTSIDE": "/usr/share/data", "RELATIVE": "etc/kdash/datasets/x", "EMPTY": ""}
    assert sorted(container_path_variables(container, env)) == [
        "AWS_CONFIG_FILE", "HOME", "KDASH_DATASETS_DIR", "KDASH_SERVICES_DIR"]
    assert container_path_variables({}, {"AWS_CONFIG_FILE": "/x"}) == []
