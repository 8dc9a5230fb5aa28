"""KDashSpawner's pod and PVC manifests (no cluster needed: no API request is made)."""

from __future__ import annotations

import asyncio
import inspect
import logging

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
                  image_pull_secrets_to_copy=["registry"],
                  pod_security_level="restricted")
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
             pod_security_level="privileged", storage_preset="dynamic")
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
    ({"profile": "big"}, [], 403, "is for the group ml, and you are not a member"),
    ({"profile": "nope"}, [], 400, "there is no server profile “nope”"),
    ({"profile": "big"}, ["ml"], 403, "would go over your quota"),
])
async def test_refusals_are_clear(offline_kube, options, groups, status, text):
    s = make(offline_kube, groups=groups, user_options=options)
    with pytest.raises(web.HTTPError) as e:
        await s.load_user_options()
    assert e.value.status_code == status
    assert text in e.value.log_message.lower() or text in e.value.log_message
    assert e.value.jupyterhub_message == e.value.log_message  # the sentence alone


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


NFS = {"server": "10.0.0.5", "path": "/export/homes"}
SHARED = [{"name": "group-shared", "volume": {"nfs": {"server": "nfs.example.org",
                                                     "path": "/exports/shared"}},
           "mount_path": "/shared/{group}", "sub_path": "{group}"}]
DATASETS = [{"name": "imagenet", "volume": {"nfs": {"server": "nfs.example.org",
                                                   "path": "/exports/datasets/imagenet"}}}]


@pytest.mark.parametrize("level", ["baseline", "privileged"])
async def test_nfs_homes_refuse_a_level_where_users_could_mount_the_export(offline_kube, level):
    """Below `restricted` any user can put the whole export in a pod of their own."""
    s = make(offline_kube, pod_security_level=level, flavors=[])
    with pytest.raises(web.HTTPError) as e:
        await s.load_user_options()
    assert e.value.status_code == 500
    assert "needs pod_security_level `restricted`" in e.value.log_message
    shared = make(offline_kube, pod_security_level=level, flavors=[], storage_preset="dynamic",
                  shared_volumes=SHARED)
    with pytest.raises(web.HTTPError, match="NFS shared volumes or datasets need"):
        await shared.load_user_options()


async def test_inline_nfs_homes_cannot_be_restricted(offline_kube):
    s = make(offline_kube, flavors=[], nfs_storage={**NFS, "mode": "inline"})
    with pytest.raises(web.HTTPError, match="use mode `pv`"):
        await s.load_user_options()


async def test_restricted_refuses_other_inline_volume_types_before_kubernetes_does(offline_kube):
    s = make(offline_kube, flavors=[], shared_volumes=[
        {"name": "scratch", "volume": {"hostPath": {"path": "/scratch"}}}])
    with pytest.raises(web.HTTPError, match=r"shared-scratch \(hostPath\) are refused"):
        await s.load_user_options()


async def test_nfs_shared_volumes_reach_the_pod_as_claims_of_the_users_own_directories(
        offline_kube):
    from kdash_hub.localcluster.apiserver import podsecurity

    s = make(offline_kube, flavors=[], groups=["ml", "bio"], shared_volumes=SHARED,
             datasets=DATASETS, image_pull_secrets_to_copy=[])
    await s.load_user_options()
    pod = to_dict(await s.get_pod_manifest())
    validate(pod)
    ns = {"metadata": {"labels": {podsecurity.ENFORCE_LABEL: "restricted"}}}
    assert podsecurity.forbidden_reason(pod, ns) is None
    assert not any("nfs" in v for v in pod["spec"]["volumes"])
    objects = (await s.bundle_spec()).storage_objects
    pvs = {o["spec"]["nfs"]["path"]: o for o in objects if o["kind"] == "PersistentVolume"}
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    # one PV per directory the user may see: each group's own, never the export root
    assert set(pvs) == {"/exports/shared/ml", "/exports/shared/bio",
                        "/exports/datasets/imagenet"}
    assert pvs["/exports/datasets/imagenet"]["spec"]["nfs"]["readOnly"] is True
    assert pvs["/exports/datasets/imagenet"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    for pv in pvs.values():
        validate(pv)
        assert pv["spec"]["claimRef"]["namespace"] == s.namespace
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        claim = claims[pv["spec"]["claimRef"]["name"]]
        validate(claim)
        assert claim["spec"]["volumeName"] == pv["metadata"]["name"]
        assert claim["metadata"]["namespace"] == s.namespace
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/shared/ml"]["readOnly"] is False and "subPath" not in mounts["/shared/ml"]
    assert mounts["/datasets/imagenet"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/shared/bio"]["name"]]["persistentVolumeClaim"]["claimName"] in claims
    # another user's PVs have other names (PV names are cluster-wide)
    other = make(offline_kube, flavors=[], username="bob", groups=["ml"],
                 shared_volumes=SHARED, image_pull_secrets_to_copy=[])
    await other.load_user_options()
    theirs = {o["metadata"]["name"] for o in (await other.bundle_spec()).storage_objects
              if o["kind"] == "PersistentVolume"}
    assert not theirs & {pv["metadata"]["name"] for pv in pvs.values()}


async def test_network_policy_egress_default_is_the_documented_one(offline_kube):
    """`network_policy_egress` left unset means DNS, hub API, internet: not `[]` (deny all)."""
    from kdash_hub.spawner import bundle

    s = make(offline_kube, flavors=[], image_pull_secrets_to_copy=[])
    assert s.network_policy_egress is None
    spec = await s.bundle_spec()
    egress = bundle.network_policy(spec)["spec"]["egress"]
    assert len(egress) == 4 and egress[0]["ports"][0]["port"] == 53
    assert "10.0.0.0/8" in egress[-1]["to"][0]["ipBlock"]["except"]
    closed = make(offline_kube, flavors=[], image_pull_secrets_to_copy=[],
                  network_policy_egress=[])
    assert bundle.network_policy(await closed.bundle_spec())["spec"]["egress"] == []


async def test_an_empty_user_cluster_role_means_no_binding_and_no_token(offline_kube):
    s = make(offline_kube, flavors=[], image_pull_secrets_to_copy=[], user_cluster_role="")
    await s.load_user_options()
    pod = to_dict(await s.get_pod_manifest())
    assert pod["spec"]["automountServiceAccountToken"] is False
    spec = await s.bundle_spec()
    from kdash_hub.spawner import bundle

    names = [(o["kind"], o["metadata"]["name"]) for o in bundle.bundle_objects(spec)]
    assert ("RoleBinding", bundle.ROLE_BINDING_NAME) not in names
    assert not any(o.get("roleRef", {}).get("name") in ("view", "edit", "kdash-user")
                   for o in bundle.bundle_objects(spec))
    # the default: the shipped kdash-user role, and the services' bindings, hub first
    d = make(offline_kube, flavors=[], image_pull_secrets_to_copy=[])
    await d.load_user_options()
    assert to_dict(await d.get_pod_manifest())["spec"]["automountServiceAccountToken"] is True
    objects = bundle.bundle_objects(await d.bundle_spec())
    roles = [o["roleRef"]["name"] for o in objects if o["kind"] == "RoleBinding"]
    assert roles == ["kdash-hub-namespace", "kdash-culler-namespace",
                     "kdash-launcher-namespace", "kdash-user"]


async def test_the_hub_log_says_true_things_about_a_spawn(offline_kube, caplog):
    """The namespace line names the namespace really used; neither the hub's own `_xsrf` form
    field nor the options (applied at start) are reported as unhandled."""
    from traitlets.log import get_logger

    logger = get_logger()
    logger = getattr(logger, "logger", logger)
    caplog.set_level(logging.INFO)
    spawner = build_spawner(username="Alice.Smith", flavors=FLAVORS)
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if m.startswith("Using user namespace:")] == [
        f"Using user namespace: {spawner.namespace}"]
    assert spawner.namespace == user_namespace("Alice.Smith", "kdash-")
    caplog.clear()
    options = spawner.run_options_from_form(
        {"profile": ["cpu-small"], "_xsrf": ["2|token"]})
    if inspect.isawaitable(options):
        options = await options
    assert options["profile"] == "cpu-small" and "_xsrf" not in options
    await spawner._run_apply_user_options(options)
    words = " ".join(r.getMessage() for r in caplog.records)
    assert "unrecognized form data" not in words and "unhandled user_options" not in words
    # the filter that hides KubeSpawner's line is gone once the spawner is made
    logger.info("Using user namespace: from elsewhere")
    assert caplog.records[-1].getMessage() == "Using user namespace: from elsewhere"


async def test_a_round_of_progress_messages_is_one_log_line(offline_kube, caplog):
    """The spawn page gets every message as an event; the hub log gets the messages of one
    turn of the event loop (a round of concurrent creates) as one line, in order."""
    caplog.set_level(logging.INFO)
    spawner = build_spawner(username="rounds")
    caplog.clear()
    spawner.report("Creating network policy (kdash-user-pods)")
    spawner.report("Creating service account (kdash-user)")
    assert not [r for r in caplog.records if "Creating" in r.getMessage()]  # not yet
    await asyncio.sleep(0)
    spawner.report("Creating resource quota (kdash-quota)")
    await asyncio.sleep(0)
    lines = [r.getMessage() for r in caplog.records if "Creating" in r.getMessage()]
    assert lines == [
        f"{spawner._log_name}: Creating network policy (kdash-user-pods); "
        "Creating service account (kdash-user)",
        f"{spawner._log_name}: Creating resource quota (kdash-quota)"]
    assert [e["message"] for e in spawner._events] == [
        "Creating network policy (kdash-user-pods)", "Creating service account (kdash-user)",
        "Creating resource quota (kdash-quota)"]
