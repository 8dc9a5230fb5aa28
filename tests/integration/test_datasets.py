"""S3 datasets end to end: a real S3 server (tools/s3: gofakes3 checking SigV4), the hub's
credentials Secret, the bundle's Secrets in the user's namespace (emulator, or the real
control plane with KDASH_REAL_TIER=1), and boto3, s3fs and rclone reading the objects with
nothing but the files and variables those Secrets give."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from kdash_hub import labels as L
from kdash_hub.dev.s3 import S3Server
from kdash_hub.spawner import datasets
from tests.fixtures.spawner import build_spawner
from tests.integration.test_localcluster_side_programs import process_env  # noqa: F401

ACCESS, SECRET = "AKDATASETS0001", "s3cr3t/Key+for-the-climate-team"
OBJECTS = {("climate", "2024/temps.csv"): b"day,temp\n1,21.5\n",
           ("genomes", "ref/chr1.txt"): b"ACGT" * 8}
HUB_SECRET = "s3-team-keys"


@pytest.fixture(scope="module")
def s3():
    with S3Server(ACCESS, SECRET, buckets=["climate", "genomes"]) as server:
        client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
        for (bucket, key), body in OBJECTS.items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
        yield server


def declared(endpoint: str) -> list[dict]:
    creds = {"secret": HUB_SECRET}
    return [{"name": "climate", "bucket": "climate", "endpoint": endpoint, "credentials": creds},
            {"name": "gen-omes", "bucket": "genomes", "endpoint": endpoint,
             "region": "eu-west-1", "credentials": creds, "groups": ["bio"]}]


async def hub_secret(kube, namespace: str, access: str = ACCESS, secret: str = SECRET) -> None:
    data = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    await kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": HUB_SECRET, "namespace": namespace},
                       "data": {k: base64.b64encode(v.encode()).decode()
                                for k, v in data.items()}})


def decoded(secret: dict | None) -> dict[str, str]:
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def user_secrets(kube, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    files = await kube.get("Secret", "kdash-datasets", namespace)
    env = await kube.get("Secret", "kdash-datasets-env", namespace)
    return decoded(files), decoded(env)


def mount(files: dict[str, str], where: Path) -> None:
    """What the kubelet does with the read-only Secret volume."""
    where.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (where / name).write_text(text)
        (where / name).chmod(0o444)


def run_clean(argv: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    """`argv` with only the Secret's variables (no AWS_* or CA bundle of this machine)."""
    home.mkdir(parents=True, exist_ok=True)
    clean = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), **env}
    return subprocess.run(argv, env=clean, capture_output=True, text=True, timeout=60)


CLIENT_SCRIPT = r"""
import os, sys, boto3, s3fs
name, key = sys.argv[1], sys.argv[2]
prefix = "KDASH_DATASET_" + name.upper().replace("-", "_") + "_"
bucket, profile = os.environ[prefix + "BUCKET"], os.environ[prefix + "PROFILE"]
client = boto3.Session(profile_name=profile).client("s3")
one = client.get_object(Bucket=bucket, Key=key)["Body"].read()
two = s3fs.S3FileSystem(profile=profile).cat(f"{bucket}/{key}")
three = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() if len(
    os.environ["KDASH_DATASETS"].split(",")) == 1 else one  # the default profile
sys.stdout.write(repr((one, two, three)))
"""


async def test_a_notebook_reads_its_datasets_with_boto3_s3fs_and_rclone(
        local_cluster, kube, chart_hub_role, s3, tmp_path):
    probe = build_spawner(username="ada")
    await hub_secret(kube, probe.hub_namespace)
    where = tmp_path / "mnt"
    s = build_spawner(username="ada", groups=["bio"], s3_datasets=declared(s3.endpoint),
                      s3_datasets_dir=str(where))
    try:
        await s.start()
        files, env = await user_secrets(kube, s.namespace)
        for obj in [await kube.get("Secret", n, s.namespace)
                    for n in ("kdash-datasets", "kdash-datasets-env")]:
            assert L.is_owned_by(obj, "ada")
        assert set(files) == set(datasets.FILES)
        assert env["KDASH_DATASETS"] == "climate,gen-omes"
        assert env["KDASH_DATASET_GEN_OMES_BUCKET"] == "genomes"
        assert env["AWS_ENDPOINT_URL"] == s3.endpoint  # one endpoint for both
        assert env["AWS_CONFIG_FILE"] == f"{where}/aws-config"
        assert SECRET not in json.dumps(env) and SECRET not in files["datasets.json"]
        # the notebook pod: the files read-only at the directory, the variables by envFrom
        pod = await kube.get("Pod", s.pod_name, s.namespace)
        container = pod["spec"]["containers"][0]
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == datasets.VOLUME)
        assert volume["secret"]["secretName"] == "kdash-datasets"
        assert {"name": datasets.VOLUME, "mountPath": str(where), "readOnly": True} in [
            {k: m[k] for k in ("name", "mountPath", "readOnly") if k in m}
            for m in container["volumeMounts"]]
        assert {"secretRef": {"name": "kdash-datasets-env", "optional": True}} in container[
            "envFrom"]
        # the clients, with nothing but what the Secrets give
        mount(files, where)
        for name, (bucket, key) in (("climate", ("climate", "2024/temps.csv")),
                                    ("gen-omes", ("genomes", "ref/chr1.txt"))):
            done = run_clean([sys.executable, "-c", CLIENT_SCRIPT, name, key], env,
                             tmp_path / "home")
            assert done.returncode == 0, done.stderr[-2000:]
            body = OBJECTS[(bucket, key)]
            assert done.stdout == repr((body, body, body))
            rclone = shutil.which("rclone")
            assert rclone, "rclone is a Debian package (APT_PACKAGES)"
            done = run_clean([rclone, "cat", f"{name}:{bucket}/{key}"], env, tmp_path / "home")
            assert done.returncode == 0, done.stderr[-2000:]
            assert done.stdout.encode() == body
        # rclone writes too (the keys are the dataset's, not read-only ones)
        (tmp_path / "new.txt").write_text("written from the notebook\n")
        done = run_clean([shutil.which("rclone"), "copyto", str(tmp_path / "new.txt"),
                          "climate:climate/notes/new.txt"], env, tmp_path / "home")
        assert done.returncode == 0, done.stderr[-2000:]
        admin = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                             aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
        assert admin.get_object(Bucket="climate", Key="notes/new.txt")["Body"].read() == \
            b"written from the notebook\n"
    finally:
        await s.stop()
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)


def test_the_server_checks_signatures(s3):
    """A real S3 server: a wrong secret, or no signature at all, is refused."""
    wrong = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                         aws_access_key_id=ACCESS, aws_secret_access_key=SECRET + "x")
    with pytest.raises(ClientError) as e:
        wrong.get_object(Bucket="climate", Key="2024/temps.csv")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{s3.endpoint}/climate/2024/temps.csv", timeout=10)
    assert denied.value.code == 403


async def test_another_users_namespace_never_gets_a_groups_dataset(
        local_cluster, kube, chart_hub_role, s3):
    """`gen-omes` is for the group bio: a user outside it gets `climate` alone (as the
    default profile too), and no key of `gen-omes` is anywhere in their namespace."""
    probe = build_spawner(username="bea")
    other_key = "AKGENOMESONLY99"
    await hub_secret(kube, probe.hub_namespace)
    entries = declared(s3.endpoint)
    entries[1]["credentials"] = {"secret": "s3-genomes"}
    await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "s3-genomes", "namespace": probe.hub_namespace}, "data": {
        "AWS_ACCESS_KEY_ID": base64.b64encode(other_key.encode()).decode(),
        "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"genomes-secret").decode()}})
    bea = build_spawner(username="bea", groups=["ml"], s3_datasets=entries)
    try:
        await bea.start()
        files, env = await user_secrets(kube, bea.namespace)
        assert env["KDASH_DATASETS"] == "climate"
        assert not any(k.startswith("KDASH_DATASET_GEN_OMES") for k in env)
        everything = json.dumps([decoded(s) for s in (await kube.list(
            "Secret", bea.namespace))])
        assert other_key not in everything and "genomes-secret" not in everything
        assert "[default]" in files["aws-credentials"]  # one dataset: the default profile
    finally:
        await bea.stop()
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)
        await kube.delete("Secret", "s3-genomes", probe.hub_namespace)


async def test_leaving_the_group_takes_the_keys_out_at_the_next_start(
        local_cluster, kube, chart_hub_role, s3):
    probe = build_spawner(username="gil")
    await hub_secret(kube, probe.hub_namespace, access="AKGROUPKEY")
    try:
        for groups, names in ((["bio"], "climate,gen-omes"), ([], "climate")):
            s = build_spawner(username="gil", groups=groups,
                              s3_datasets=declared(s3.endpoint))
            await s.start()
            files, env = await user_secrets(kube, s.namespace)
            await s.stop()
            assert env["KDASH_DATASETS"] == names
        assert "gen-omes" not in json.dumps(files) and "GEN_OMES" not in json.dumps(env)
    finally:
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)


async def test_a_user_editing_their_secrets_gains_nothing(local_cluster, kube, chart_hub_role,
                                                          s3):
    """The user's copy is theirs to break: the hub never reads it back, its own Secret is
    untouched, and the next start writes the copy again from the hub's state."""
    probe = build_spawner(username="cy")
    await hub_secret(kube, probe.hub_namespace)
    s = build_spawner(username="cy", s3_datasets=declared(s3.endpoint)[:1])
    try:
        await s.start()
        want_files, want_env = await user_secrets(kube, s.namespace)
        forged = {"aws-credentials": "[climate]\naws_access_key_id = STOLEN\n",
                  "KDASH_DATASET_GEN_OMES_BUCKET": "genomes"}
        for name in ("kdash-datasets", "kdash-datasets-env"):
            await kube.patch("Secret", name, s.namespace, {"data": {
                k: base64.b64encode(v.encode()).decode() for k, v in forged.items()}})
        await s.stop()
        hub_side = decoded(await kube.get("Secret", HUB_SECRET, probe.hub_namespace))
        assert hub_side == {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
        await s.start()
        files, env = await user_secrets(kube, s.namespace)
        assert files["aws-credentials"] == want_files["aws-credentials"]
        assert env["KDASH_DATASETS"] == want_env["KDASH_DATASETS"] == "climate"
        assert (files, env) == (want_files, want_env)  # the keys the user added are gone too
    finally:
        await s.stop()
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)


async def test_unusable_credentials_leave_the_dataset_out(local_cluster, kube, chart_hub_role,
                                                           s3):
    """A missing credentials Secret, or keys that would break the files (a newline: another
    profile injected), leave that dataset out; the server still starts."""
    probe = build_spawner(username="dee")
    await hub_secret(kube, probe.hub_namespace, secret="ok\n[evil]\nx = 1")
    entries = declared(s3.endpoint)[:1] + [{"name": "gone", "bucket": "genomes",
                                            "endpoint": s3.endpoint,
                                            "credentials": {"secret": "no-such-secret"}}]
    s = build_spawner(username="dee", s3_datasets=entries)
    try:
        await s.start()
        files, env = await user_secrets(kube, s.namespace)
        assert env == {} and "[evil]" not in json.dumps(files)
        assert files["datasets.json"].strip() == "[]"
    finally:
        await s.stop()
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)


SIDE_TEMPLATE = """\
kind: Template
name: Reader {folder}
description: A side service that opts in to the user's datasets.
datasets: {flag}
variables:
- name: NAME
  default: reader
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $NAME
spec:
  replicas: 1
  selector:
    matchLabels: {{app: $NAME}}
  template:
    metadata:
      labels: {{app: $NAME}}
    spec:
      containers:
      - name: reader
        image: docker.io/library/python:3.12
        command: [python, -m, http.server]
"""


async def test_side_services_opt_in_to_the_same_secrets(kube, launcher_identity, instance_user,
                                                         tmp_path):
    """A template with `datasets: true` (Karvdash's flag) gets the files and variables in
    its pods; one without it gets nothing of them."""
    from kdash_hub.services.launcher.instances import InstanceManager
    from kdash_hub.templating import load_directories

    user = instance_user
    for flag, folder in (("true", "with"), ("false", "without")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"reader-{folder}.yaml").write_text(SIDE_TEMPLATE.format(
            flag=flag, folder=folder))
    manager = InstanceManager(launcher_identity, user.settings(ensure_namespace=False),
                              load_directories([tmp_path / "with", tmp_path / "without"]))
    if not user.real:
        await kube.create({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": user.namespace,
                                        "labels": L.owner_labels(user.name)}})
    found = datasets.parse(declared("http://127.0.0.1:9")[:1])
    for obj in datasets.secrets(user.name, user.namespace, "kdash-datasets",
                                "/etc/kdash/datasets", found, {"climate": (ACCESS, SECRET)}):
        await kube.create(obj)
    opted = await manager.launch(user.actor, "reader-with")
    plain = await manager.launch(user.actor, "reader-without", name="plain")
    with_spec = (await kube.get("Deployment", opted["name"], user.namespace))["spec"][
        "template"]["spec"]
    volume = next(v for v in with_spec["volumes"] if v["name"] == datasets.VOLUME)
    assert volume["secret"]["secretName"] == "kdash-datasets"
    container = with_spec["containers"][0]
    assert {"secretRef": {"name": "kdash-datasets-env", "optional": True}} in container[
        "envFrom"]
    assert any(m["mountPath"] == "/etc/kdash/datasets" and m.get("readOnly")
               for m in container["volumeMounts"])
    plain_spec = (await kube.get("Deployment", plain["name"], user.namespace))["spec"][
        "template"]["spec"]
    assert datasets.VOLUME not in json.dumps(plain_spec)
    assert "kdash-datasets-env" not in json.dumps(plain_spec)


POD_SCRIPT = r"""
import os, subprocess, sys
# the variables as the pod got them: the process kubelet mounts the volume under the pod's
# root and rewrites the variables naming paths in it (a real kubelet mounts it at the path)
import boto3, s3fs
bucket = os.environ["KDASH_DATASET_CLIMATE_BUCKET"]
print(boto3.client("s3").get_object(Bucket=bucket, Key="2024/temps.csv")["Body"].read())
print(s3fs.S3FileSystem().cat(bucket + "/2024/temps.csv"))
print(subprocess.run(["rclone", "cat", "climate:" + bucket + "/2024/temps.csv"],
                     capture_output=True, check=True).stdout)
print(sorted(os.listdir(os.environ["KDASH_DATASETS_DIR"])))
"""


async def test_a_pods_process_reads_the_datasets_the_kubelet_gives_it(make_local_cluster, s3):
    """The notebook pod's volume and envFrom as KDashSpawner makes them, on a kubelet that
    runs processes: the Secrets become files and variables, and boto3, s3fs and rclone in
    the pod's process read the bucket with them."""
    from kdash_hub.kube import KubeResources
    from kdash_hub.localcluster.processes import RUN_AS_PROCESS
    from tests.fixtures.cluster import api_client_for, requires_emulator
    from tests.fixtures.spawner import to_dict

    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    spawner = build_spawner(username="eve", s3_datasets=declared(s3.endpoint)[:1])
    pod = to_dict(await spawner.get_pod_manifest())
    container = pod["spec"]["containers"][0]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == datasets.VOLUME)
    mount = next(m for m in container["volumeMounts"] if m["name"] == datasets.VOLUME)
    env_from = [e for e in container["envFrom"] if "datasets" in json.dumps(e)]
    found = datasets.parse(spawner.s3_datasets)
    async with api_client_for(cluster.kubeconfig_path) as client:
        nodes = KubeResources(client)
        await nodes.create({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": spawner.namespace}})
        for obj in datasets.secrets("eve", spawner.namespace, spawner.s3_datasets_secret,
                                    spawner.s3_datasets_dir, found,
                                    {"climate": (ACCESS, SECRET)}):
            await nodes.create(obj)
        await nodes.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nb", "namespace": spawner.namespace,
                         "annotations": {RUN_AS_PROCESS: "true"}},
            "spec": {"restartPolicy": "Never", "volumes": [volume], "containers": [{
                "name": "notebook", "image": "python",
                "command": [sys.executable, "-c", POD_SCRIPT],
                "volumeMounts": [mount], "envFrom": env_from}]}})
        for _ in range(600):
            got = await nodes.get("Pod", "nb", spawner.namespace)
            if got["status"].get("phase") in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.1)
        log = cluster.kubelet.read_log(spawner.namespace, "nb")
        assert got["status"].get("phase") == "Succeeded", log
    body = repr(OBJECTS[("climate", "2024/temps.csv")])
    assert log.splitlines() == [body, body, body, repr(sorted(datasets.FILES))]


async def test_the_catalogs_minio_runs_for_real_in_process_mode(process_env, s3):  # noqa: F811
    """The demo's MinIO template, launched through the launcher's REST API on a real hub:
    the process kubelet runs kdash-s3 for `minio server /data` with the template's root
    user as its key, on the pod's address, its health probe answering; its objects live in
    the pod's volume, so the instance's next pod serves them. (`s3`: the server's
    binary is built.)"""
    from kdash_hub.kube import KubeResources
    from kdash_hub.localcluster import imageprograms
    from kdash_hub.naming import user_namespace
    from tests.fixtures.cluster import api_client_for
    from tests.fixtures.launcher import ready_pod
    from tests.integration.test_localcluster_side_programs import launch, ready, secret_value

    assert imageprograms.program_for({"image": "quay.io/minio/minio:latest",
                                      "args": ["server", "/data"]}) is not None
    env, user = process_env, "carol"
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        await launch(env, user, "minio", "store", {"ROOT_USER": "carol-admin"})
        ip = await ready(env, kube, user, "store")
        password = await secret_value(kube, user_namespace(user, "kdash-"), "store",
                                      "MINIO_ROOT_PASSWORD")
    store = boto3.client("s3", endpoint_url=f"http://{ip}:9000", region_name="us-east-1",
                         aws_access_key_id="carol-admin", aws_secret_access_key=password)
    store.create_bucket(Bucket="results")
    store.put_object(Bucket="results", Key="run1/metrics.json", Body=b'{"acc": 0.9}')
    assert store.get_object(Bucket="results", Key="run1/metrics.json")["Body"].read() == \
        b'{"acc": 0.9}'
    wrong = boto3.client("s3", endpoint_url=f"http://{ip}:9000", region_name="us-east-1",
                         aws_access_key_id="carol-admin", aws_secret_access_key=password + "x")
    with pytest.raises(ClientError):
        wrong.list_objects_v2(Bucket="results")
    # the objects are files in the pod's /data volume: a new pod of the instance serves them
    async with api_client_for(env.kubeconfig) as client:
        kube = KubeResources(client)
        namespace = user_namespace(user, "kdash-")
        old = await ready_pod(kube, namespace, "store")
        await kube.delete("Pod", old["metadata"]["name"], namespace)
        deadline = asyncio.get_running_loop().time() + 120
        while (new := await ready_pod(kube, namespace, "store", within=120)
               )["metadata"]["uid"] == old["metadata"]["uid"]:
            assert asyncio.get_running_loop().time() < deadline, "no new pod of the instance"
            await asyncio.sleep(0.5)
    store = boto3.client("s3", endpoint_url=f"http://{new['status']['podIP']}:9000",
                         region_name="us-east-1", aws_access_key_id="carol-admin",
                         aws_secret_access_key=password)
    assert store.get_object(Bucket="results", Key="run1/metrics.json")["Body"].read() == \
        b'{"acc": 0.9}'
    assert (await env.call("DELETE", f"instances/{user}/store", user))[0] == 204


def user_file(entries: list[dict]) -> dict:
    return {"datasets.json": base64.b64encode(json.dumps(entries).encode()).decode()}


async def test_users_add_datasets_only_when_allowed_and_never_over_the_admins(
        local_cluster, kube, chart_hub_role, s3, tmp_path):
    """With `s3_datasets_user_secret` set, a user's own Secret adds datasets to their own
    files: a good one reads for real; one taking an admin dataset's name, one with keys that
    would inject a profile, and one with a bad endpoint are left out. Without the setting
    the same Secret is ignored."""
    probe = build_spawner(username="fiona")
    await hub_secret(kube, probe.hub_namespace)
    where = tmp_path / "mnt"
    admin = declared(s3.endpoint)[:1]
    own = [{"name": "mine", "bucket": "genomes", "endpoint": s3.endpoint,
            "access_key_id": ACCESS, "secret_access_key": SECRET},
           {"name": "climate", "bucket": "genomes", "endpoint": "http://127.0.0.1:1",
            "access_key_id": "STOLEN", "secret_access_key": "x"},
           {"name": "inject", "bucket": "genomes", "endpoint": s3.endpoint,
            "access_key_id": "a", "secret_access_key": "b\n[climate]\naws_access_key_id = Z"},
           {"name": "far", "bucket": "genomes", "endpoint": "file:///etc/passwd",
            "access_key_id": "a", "secret_access_key": "b"}]
    s = build_spawner(username="fiona", s3_datasets=admin, s3_datasets_dir=str(where))
    try:
        await s.start()  # the namespace exists from here on
        await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "my-datasets", "namespace": s.namespace}, "data": user_file(own)})
        await s.stop()
        await s.start()  # not allowed: ignored
        files, env = await user_secrets(kube, s.namespace)
        assert env["KDASH_DATASETS"] == "climate"
        await s.stop()
        s = build_spawner(username="fiona", s3_datasets=admin, s3_datasets_dir=str(where),
                          s3_datasets_user_secret="my-datasets")
        await s.start()
        files, env = await user_secrets(kube, s.namespace)
        assert env["KDASH_DATASETS"] == "climate,mine"
        assert "STOLEN" not in json.dumps(files) and "= Z" not in files["aws-credentials"]
        mount(files, where)
        done = run_clean([sys.executable, "-c", CLIENT_SCRIPT, "mine", "ref/chr1.txt"], env,
                         tmp_path / "home")
        assert done.returncode == 0, done.stderr[-2000:]
        body = OBJECTS[("genomes", "ref/chr1.txt")]
        assert done.stdout == repr((body, body, body))
        # the admin's dataset is the admin's: its profile still reads with the hub's keys
        done = run_clean([sys.executable, "-c", CLIENT_SCRIPT, "climate", "2024/temps.csv"],
                         env, tmp_path / "home")
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        await s.stop()
        await kube.delete("Secret", HUB_SECRET, probe.hub_namespace)


async def test_a_users_own_datasets_stay_in_their_namespace(local_cluster, kube,
                                                             chart_hub_role, s3):
    """Gus's own dataset never reaches Hal's namespace, even with the same setting."""
    found = {}
    for name in ("gus", "hal"):
        s = build_spawner(username=name, s3_datasets_user_secret="my-datasets")
        try:
            await s.start()
            if name == "gus":
                await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {
                    "name": "my-datasets", "namespace": s.namespace}, "data": user_file([
                        {"name": "gus-data", "bucket": "climate", "endpoint": s3.endpoint,
                         "access_key_id": "GUSKEY", "secret_access_key": "gus-secret"}])})
                await s.stop()
                await s.start()
            found[name] = await user_secrets(kube, s.namespace)
        finally:
            await s.stop()
    assert found["gus"][1]["KDASH_DATASETS"] == "gus-data"
    assert found["hal"][1] == {} and "GUSKEY" not in json.dumps(found["hal"])


HUB_NS = "kdash-hub"


@pytest.fixture(scope="module")
def dataset_hub(tmp_path_factory, s3):
    """A real JupyterHub (+ proxy) with KDashSpawner and one dataset, on a local cluster
    whose kubelet runs the notebooks as processes; the keys in the hub's namespace."""
    from tests.fixtures.cluster import api_client_for
    from tests.fixtures.spawner import flavor_hub
    from tests.integration.test_spawner_hub import START_TIMEOUT

    flavors = [{"slug": "cpu", "display_name": "CPU", "default": True, "cpu_limit": 1}]
    extra = (f"c.KDashSpawner.hub_namespace = {HUB_NS!r}\n"
             f"c.KDashSpawner.s3_datasets = {declared(s3.endpoint)!r}\n")

    async def keys(hub):
        async with api_client_for(hub.admin_kubeconfig) as client:
            from kdash_hub.kube import KubeResources

            kube = KubeResources(client)
            await kube.create({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": HUB_NS}})
            await hub_secret(kube, HUB_NS)

    with flavor_hub(tmp_path_factory.mktemp("kdash-datasets-hub"), flavors,
                    start_timeout=START_TIMEOUT, extra=extra, before_start=keys) as hub:
        yield hub


async def test_a_real_hub_gives_a_spawned_server_its_datasets(dataset_hub):
    """Through the hub's REST API as the user: the server starts with the Secrets in its
    namespace, mounted and in its environment; the user's server runs."""
    from kdash_hub.kube import KubeResources
    from kdash_hub.naming import user_namespace
    from tests.fixtures.cluster import api_client_for
    from tests.integration.test_chooser_hub import call, pod_of, stop, token_of
    from tests.integration.test_spawner_hub import wait_ready

    hub = dataset_hub
    token = await token_of(hub, "ivy")
    status, body = await call(hub, "POST", "/users/ivy/server", {"profile": "cpu"}, token)
    assert status in (201, 202), body
    try:
        await wait_ready(hub, "ivy")
        pod = await pod_of(hub, "ivy")
        container = pod["spec"]["containers"][0]
        assert {"secretRef": {"name": "kdash-datasets-env", "optional": True}} in container[
            "envFrom"]
        assert any(m["name"] == datasets.VOLUME for m in container["volumeMounts"])
        async with api_client_for(hub.admin_kubeconfig) as client:
            files, env = await user_secrets(KubeResources(client), user_namespace("ivy",
                                                                                  "kdash-"))
        assert env["KDASH_DATASETS"] == "climate"  # gen-omes is for the group bio
        assert f"aws_secret_access_key = {SECRET}" in files["aws-credentials"]
    finally:
        await stop(hub, "ivy")
