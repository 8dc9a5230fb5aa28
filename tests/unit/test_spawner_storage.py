"""Storage presets, shared/dataset volumes and uid/gid: manifests, all strictly valid."""

from __future__ import annotations

import pytest

from kdash_hub.spawner import homedir, identity, storage
from tests.fixtures.spawner import validate


def plan(preset, settings=None, uid=2001, gid=3001, username="Ünïcode"):
    return storage.plan_home(preset, settings or {}, username=username,
                             namespace="kdash-x", pvc_name="claim-x", uid=uid, gid=gid,
                             mount_path="/home/jovyan")


def pod_with(p: storage.StoragePlan, extra_volumes=(), extra_mounts=()) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "kdash-x"},
           "spec": {"containers": [{"name": "notebook", "image": "jupyter",
                                    "volumeMounts": p.volume_mounts + list(extra_mounts)}],
                    "initContainers": p.init_containers,
                    "volumes": p.volumes + list(extra_volumes)}}
    validate(pod)
    return pod


def _volume_paths(p: storage.StoragePlan) -> list[str]:
    """Every path the user's namespace gets a volume of (pod volumes and the PV)."""
    sources = list(p.volumes) + ([p.pv["spec"]] if p.pv else [])
    return [src[k]["path"] for src in sources for k in ("nfs", "hostPath", "local") if k in src]


def test_nfs_pv_mode_makes_a_pv_of_the_users_own_directory():
    p = plan("nfs", {"server": "10.0.0.5", "path": "/export/homes/", "capacity": "20Gi"})
    validate(p.pv)
    home = storage.home_dir("Ünïcode")
    assert p.pv["spec"]["nfs"] == {"server": "10.0.0.5", "path": f"/export/homes/{home}"}
    assert p.pv["spec"]["claimRef"] == {"namespace": "kdash-x", "name": "claim-x"}
    assert p.pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert p.pvc == {"storage_class": "", "capacity": "20Gi",
                     "volume_name": p.pv["metadata"]["name"], "access_modes": ["ReadWriteMany"]}
    pod_with(p)
    # no export-root volume, no subPath trick, no root init container in the user namespace
    assert _volume_paths(p) == [f"/export/homes/{home}"]
    assert p.volume_mounts == [{"name": "home", "mountPath": "/home/jovyan"}]
    assert p.init_containers == []
    # only the admin-namespace Job mounts the root, and chowns exactly the user's directory
    job = homedir.home_job(p, username="Ünïcode", namespace="hub", image="busybox:1.36",
                           uid=2001, gid=3001)
    validate(job)
    assert job["metadata"]["namespace"] == "hub"
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "root",
                               "nfs": {"server": "10.0.0.5", "path": "/export/homes/"}}]
    script = pod["containers"][0]["command"][-1]
    assert script == (f"mkdir -p '/kdash-storage-root/{home}' && chown 2001:3001 "
                      f"'/kdash-storage-root/{home}' && chmod 0750 '/kdash-storage-root/{home}'")
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}
    assert ctx["allowPrivilegeEscalation"] is False
    assert job["metadata"]["annotations"][homedir.PROVISIONED_ANNOTATION] == "2001:3001"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    other = plan("nfs", {"server": "10.0.0.5", "path": "/export/homes"}, username="bob")
    assert other.pv["spec"]["nfs"]["path"] == "/export/homes/bob" != p.pv["spec"]["nfs"]["path"]


def test_nfs_inline_mode_and_missing_settings():
    p = plan("nfs", {"server": "nfs", "path": "/x", "mode": "inline"})
    assert p.pv is None and p.pvc is None
    home = storage.home_dir("Ünïcode")
    assert p.volumes == [{"name": "home", "nfs": {"server": "nfs", "path": f"/x/{home}"}}]
    assert p.init_containers == []
    pod_with(p)
    with pytest.raises(ValueError, match="server"):
        plan("nfs", {"path": "/x"})


def test_local_presets_pin_the_node():
    host = plan("local", {"path": "/scratch", "node": "node-1"}, username="ann")
    assert host.volumes[0]["hostPath"] == {"path": "/scratch/ann", "type": "Directory"}
    assert host.node_selector == {"kubernetes.io/hostname": "node-1"}
    assert host.init_containers == [] and host.pv is None
    assert _volume_paths(host) == ["/scratch/ann"]
    pod_with(host)
    job = homedir.home_job(host, username="ann", namespace="hub", image="b", uid=1, gid=2)
    validate(job)
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    local = plan("local", {"path": "/scratch", "node": "node-1", "type": "local"},
                 username="ann")
    validate(local.pv)
    term = local.pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["node-1"]
    assert local.pv["spec"]["local"] == {"path": "/scratch/ann"}
    assert _volume_paths(local) == ["/scratch/ann"]
    with pytest.raises(ValueError, match="node"):
        plan("local", {"type": "local"})


def test_dynamic_and_none():
    d = plan("dynamic", {"storage_class": "fast", "capacity": "5Gi"})
    assert d.pvc["storage_class"] == "fast" and d.pvc["capacity"] == "5Gi"
    assert d.init_containers == [] and d.volume_mounts[0].get("subPath") is None
    pod_with(d)
    n = plan("none")
    assert (n.volumes, n.volume_mounts, n.pvc, n.pv) == ([], [], None, None)
    with pytest.raises(ValueError, match="unknown storage preset"):
        plan("tape")


def test_home_directories_are_distinct():
    users = ["a.b", "A_B", "a_b", "ab", "x" * 100, "x" * 101]
    assert len({storage.home_dir(u) for u in users}) == len(users)


def test_shared_and_dataset_volumes_follow_groups():
    shared = [{"name": "group-share", "volume": {"nfs": {"server": "n", "path": "/groups"}},
               "mount_path": "/shared/{group}", "sub_path": "{group}", "groups": ["ml", "bio"]},
              {"name": "everyone", "volume": {"nfs": {"server": "n", "path": "/all"}},
               "mount_path": "/shared/all"}]
    datasets = [{"name": "imagenet", "volume": {"nfs": {"server": "n", "path": "/ds/in"}}},
                {"name": "secret", "volume": {"nfs": {"server": "n", "path": "/ds/s"}},
                 "groups": ["admins"]}]
    volumes, mounts = storage.shared_mounts(shared, datasets, ["ml", "physics"])
    assert [v["name"] for v in volumes] == ["shared-group-share", "shared-everyone",
                                            "dataset-imagenet"]
    assert {"name": "shared-group-share", "mountPath": "/shared/ml", "readOnly": False,
            "subPath": "ml"} in mounts
    assert not any(m["mountPath"] == "/shared/physics" for m in mounts)
    assert {"name": "dataset-imagenet", "mountPath": "/datasets/imagenet",
            "readOnly": True} in mounts
    pod_with(storage.StoragePlan("none"), volumes, mounts)


@pytest.mark.parametrize(("state", "expected"), [
    ({"uid": 2001, "gid": 3001}, (2001, 3001)),
    ({"uid": "2001", "gid": None}, (2001, 100)),
    ({"uid": 0, "gid": 0}, (1000, 100)),  # never root from a directory entry
    ({"uid": True, "gid": -5}, (1000, 100)),
    (None, (1000, 100)),
])
def test_uid_gid_from_auth_state(state, expected):
    assert identity.uid_gid(state, 1000, 100) == expected
