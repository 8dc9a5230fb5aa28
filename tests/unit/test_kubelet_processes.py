"""Process mode's pure parts: how a container's command, env and bind address become a process."""

import base64
import os
from pathlib import Path

import pytest
import yaml

from kdash_hub.localcluster import processes
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
        await processes.prepare_volumes(pod_with(name), container, pod_root=root,
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
