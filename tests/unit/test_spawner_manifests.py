"""KDashSpawner's pod and PVC manifests (no cluster needed: no API request is made)."""

from __future__ import annotations

import pytest
from tornado import web

from kdash_hub.naming import user_namespace
from kdash_hub.spawner import homedir, storage
from tests.fixtures.spawner import build_spawner, to_dict, validate

DEFAULT_TOL = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
               "effect": "NoSchedule"}
FLAVORS = [
    {"slug": "small", "display_name": "CPU small", "cpu_limit": 1, "mem_limit": "2G",
     "default": True},
    {"slug": "scratch", "display_name": "Fast scratch", "cpu_limit": 2,
     "tolerations": [{"key": "scratch", "operator": "Exists", "effect": "NoSchedule"}],
     "storage": {"preset": "local", "path": "/scratch", "node": "node-0"}, "groups": ["ml"]},
    {"slug": "big", "display_name": "CPU big", "cpu_limit": 64, "groups": ["ml"]},
]


def make(offline_kube, **kw):
    traits = dict(flavors=FLAVORS, tolerations=[DEFAULT_TOL], cpu_guarantee=0.5,
                  storage_preset="nfs",
                  nfs_storage={"server": "10.0.0.5", "path": "/export/homes"},
                  shared_volumes=[{"name": "shared", "volume": {"emptyDir": {}},
                                   "mount_path": "/shared"}],
                  image_pull_secrets_to_copy=["registry"])
    traits.update(kw)
    return build_spawner(**traits)


@pytest.mark.parametrize("username", ["Ünïcode", "a.b", "A_B", "x" * 100])
async def test_namespace_comes_from_the_naming_module(offline_kube, username):
    s = build_spawner(username=username)
    assert s.namespace == user_namespace(username, "kdash-")
    assert build_spawner(username=username, namespace_prefix="lab-").namespace == \
        user_namespace(username, "lab-")


async def test_pod_runs_as_directory_uid_gid_with_merged_tolerations(offline_kube):
    s = make(offline_kube, groups=["ml"], auth_state={"uid": 2001, "gid": 3001},
             user_options={"profile": "scratch"}, pod_security_level="privileged")
    await s.load_user_options()
    pod = to_dict(await s.get_pod_manifest())
    validate(pod)
    spec = pod["spec"]
    assert spec["securityContext"]["fsGroup"] == 3001
    nb = spec["containers"][0]
    assert nb["securityContext"]["runAsUser"] == 2001
    assert nb["securityContext"]["runAsGroup"] == 3001
    env = {e["name"]: e.get("value") for e in nb["env"]}
    assert env["NB_UID"] == "2001" and env["NB_GID"] == "3001"
    assert spec["tolerations"] == [DEFAULT_TOL, FLAVORS[1]["tolerations"][0]]
    assert spec["serviceAccountName"] == "kdash-user"
    assert spec["automountServiceAccountToken"] is True
    assert {"name": "registry"} in spec["imagePullSecrets"]
    assert spec["nodeSelector"]["kubernetes.io/hostname"] == "node-0"
    # the profile's storage (local hostPath) really reached the pod, not the nfs default
    # ... as the user's own directory only; no root init container any more
    home = storage.home_dir("alice")
    assert any(v.get("hostPath", {}).get("path") == f"/scratch/{home}" for v in spec["volumes"])
    assert not any(v.get("hostPath", {}).get("path") == "/scratch" for v in spec["volumes"])
    assert not spec.get("initContainers")
    job = homedir.home_job(s._plan, username="alice", namespace="hub", image="busybox",
                           uid=s.uid, gid=s.gid)
    assert f"chown 2001:3001 '/kdash-storage-root/{home}'" in \
        job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert {"name": "shared-shared", "mountPath": "/shared", "readOnly": False} in [
        {k: m.get(k) for k in ("name", "mountPath", "readOnly")} for m in nb["volumeMounts"]]
    assert pod["metadata"]["annotations"]["kdash-hub.io/profile"] == "scratch"


async def test_profile_does_not_leak_into_the_next_start(offline_kube):
    s = make(offline_kube, groups=["ml"], user_options={"profile": "scratch"},
             pod_security_level="privileged")
    await s.load_user_options()
    s.user_options = {"profile": "small"}
    await s.load_user_options()
    pod = to_dict(await s.get_pod_manifest())
    assert pod["spec"]["tolerations"] == [DEFAULT_TOL]
    assert "nodeSelector" not in pod["spec"] or \
        "kubernetes.io/hostname" not in pod["spec"]["nodeSelector"]
    assert s.uid == 1000 and s.gid == 100  # admin defaults without auth_state


async def test_profile_storage_reaches_the_pvc(offline_kube):
    """kubespawner#761: a profile's storage must change the claim, not be ignored."""
    flavors = FLAVORS + [{"slug": "own-claim", "display_name": "Own claim",
                          "storage": {"preset": "dynamic", "storage_class": "fast",
                                      "capacity": "7Gi",
                                      "pvc_name_template": "big-{username}"}}]
    s = make(offline_kube, flavors=flavors, username="bob", user_options={"profile": "small"})
    await s.load_user_options()
    assert s.pvc_name == "claim-bob"
    nfs_pvc = to_dict(s.get_pvc_manifest())
    validate(nfs_pvc)
    assert nfs_pvc["spec"]["volumeName"] == s._plan.pv["metadata"]["name"]
    assert nfs_pvc["spec"]["storageClassName"] == ""
    assert nfs_pvc["metadata"]["labels"]["kdash-hub.io/owner"] == "bob"
    s.user_options = {"profile": "own-claim"}
    await s.load_user_options()
    pvc = to_dict(s.get_pvc_manifest())
    validate(pvc)
    assert pvc["metadata"]["name"] == "big-bob"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "7Gi"
    assert "volumeName" not in pvc["spec"]


@pytest.mark.parametrize(("options", "groups", "status", "text"), [
    ({"profile": "big"}, [], 403, "not available to you"),
    ({"profile": "nope"}, [], 400, "no server profile 'nope'"),
    ({"profile": "big"}, ["ml"], 403, "exceed your quota"),
])
async def test_refusals_are_clear(offline_kube, options, groups, status, text):
    s = make(offline_kube, groups=groups, user_options=options)
    with pytest.raises(web.HTTPError) as e:
        await s.load_user_options()
    assert e.value.status_code == status
    assert text in e.value.log_message.lower() or text in e.value.log_message


async def test_group_quota_lifts_the_limit(offline_kube):
    s = make(offline_kube, groups=["ml", "hpc"], user_options={"profile": "big"},
             group_quotas={"hpc": {"limits.cpu": "128"}})
    await s.load_user_options()
    assert s.effective_quota()["limits.cpu"] == "128"


async def test_an_empty_profile_list_does_not_hide_the_flavors(offline_kube):
    s = make(offline_kube, profile_list=[], user_options={"profile": "big"})
    with pytest.raises(web.HTTPError) as e:
        await s.load_user_options()
    assert e.value.status_code == 403


async def test_restricted_level_makes_the_notebook_pod_restricted(offline_kube):
    from kdash_hub.localcluster.apiserver import podsecurity

    s = make(offline_kube, pod_security_level="restricted", auth_state={"uid": 2001, "gid": 1})
    await s.load_user_options()
    pod = to_dict(await s.get_pod_manifest())
    validate(pod)
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    nb = pod["spec"]["containers"][0]["securityContext"]
    assert nb["capabilities"] == {"drop": ["ALL"]} and nb["allowPrivilegeEscalation"] is False
    assert nb["runAsNonRoot"] is True and nb["runAsUser"] == 2001
    ns = {"metadata": {"labels": {podsecurity.ENFORCE_LABEL: "restricted"}}}
    assert podsecurity.forbidden_reason(pod, ns) is None


def test_pod_security_level_is_validated(offline_kube):
    from traitlets import TraitError

    with pytest.raises(TraitError):
        make(offline_kube, pod_security_level="lenient")


async def test_a_hostpath_home_needs_the_privileged_level(offline_kube):
    s = make(offline_kube, groups=["ml"], user_options={"profile": "scratch"})
    with pytest.raises(web.HTTPError, match="type `local`"):
        await s.load_user_options()
