"""Storage presets for the user's home, plus shared and dataset volumes.

The `nfs` and `local` presets give the user's namespace a volume of the user's OWN directory
(`<export>/<home_dir>`), never of the export root holding every home: a user with `edit`
rights could otherwise mount the root and read everyone's home. The directory is created
and chowned to the user's uid/gid beforehand by a Job in an admin namespace (homedir.py),
which is the only thing that mounts the export root. `dynamic` is a StorageClass claim made
through KubeSpawner's own PVC step; ownership there comes from fsGroup.

Pod Security: below `restricted`, a user can put an inline `nfs` volume in a pod of their own
and mount any export the nodes reach, whatever uid they pick. So the `nfs` preset refuses a
weaker level (as a `hostPath` home refuses anything but `privileged`), and NFS shared
directories and datasets reach notebooks as claims in the user's namespace, each bound to
a PersistentVolume of exactly what that user may see (`shared_plan`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kdash_hub import labels as L
from kdash_hub.naming import dns_label, stable_hash

PRESETS = ("nfs", "local", "dynamic", "none")
HOME_VOLUME = "home"
INIT_MOUNT = "/kdash-storage-root"
# the volume types Pod Security `restricted` allows (the Pod Security Standards, latest)
RESTRICTED_VOLUME_TYPES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                     "persistentVolumeClaim", "projected", "secret"})
SHARED_COMPONENT = "shared-volume"


@dataclass
class StoragePlan:
    """What a preset adds to the pod, and the claim/volume KubeSpawner's PVC step needs."""

    preset: str
    volumes: list[dict] = field(default_factory=list)
    volume_mounts: list[dict] = field(default_factory=list)
    init_containers: list[dict] = field(default_factory=list)
    # the export root and the user's directory in it, for the provisioning Job only
    home_root: dict | None = None
    home_dir: str = ""
    pv: dict | None = None  # a cluster-scoped PersistentVolume to ensure first
    pvc: dict | None = None  # overrides for the PVC (storage class, size, volumeName)
    node_selector: dict[str, str] = field(default_factory=dict)


def home_dir(username: str) -> str:
    """The user's directory name on shared storage: unique per user, safe as a path."""
    return dns_label(username)


def home_setup_script(target: str, uid: int | None, gid: int | None,
                      mode: str = "0750") -> str:
    """Create `target` and give it to uid:gid (only this directory, never recursively)."""
    owner = f"{uid if uid is not None else 1000}:{gid if gid is not None else 100}"
    return f"mkdir -p '{target}' && chown {owner} '{target}' && chmod {mode} '{target}'"


def _pv(name: str, username: str, capacity: str, source: dict, claim_ns: str,
        claim_name: str, node_affinity: dict | None = None) -> dict:
    spec: dict[str, Any] = {
        "capacity": {"storage": capacity},
        "accessModes": ["ReadWriteMany" if "nfs" in source else "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        # bound to this user's claim only: no other namespace can take it
        "claimRef": {"namespace": claim_ns, "name": claim_name},
        **source,
    }
    if node_affinity:
        spec["nodeAffinity"] = node_affinity
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": L.owner_labels(username, "home"),
                     "annotations": L.owner_annotations(username)},
        "spec": spec,
    }


def plan_home(preset: str, settings: dict[str, Any], *, username: str, namespace: str,
              pvc_name: str, uid: int | None, gid: int | None, mount_path: str,
              init_image: str = "") -> StoragePlan:
    """The home volume of `preset` with its `settings` (see KDashSpawner's help)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown storage preset {preset!r}; choose one of {', '.join(PRESETS)}")
    plan = StoragePlan(preset)
    if preset == "none":
        return plan
    if preset == "dynamic":
        plan.pvc = {"storage_class": settings.get("storage_class"),
                    "capacity": settings.get("capacity", "10Gi"),
                    "access_modes": settings.get("access_modes", ["ReadWriteOnce"])}
        plan.volumes = [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": pvc_name}}]
        plan.volume_mounts = [{"name": HOME_VOLUME, "mountPath": mount_path}]
        return plan

    sub = home_dir(username)
    capacity = str(settings.get("capacity", "10Gi"))
    pv_name = dns_label("kdash-home", namespace)
    plan.home_dir = sub
    if preset == "nfs":
        if not settings.get("server") or not settings.get("path"):
            raise ValueError("the nfs storage preset needs `server` and `path`")
        root = {"nfs": {"server": settings["server"], "path": settings["path"]}}
        source = {"nfs": {"server": settings["server"], "path": _join(settings["path"], sub)}}
        if settings.get("mode", "pv") == "inline":
            plan.volumes = [{"name": HOME_VOLUME, **source}]
        else:
            plan.pv = _pv(pv_name, username, capacity, source, namespace, pvc_name)
    else:  # local
        path = settings.get("path", "/var/lib/kdash-hub/homes")
        node = settings.get("node")
        root = {"hostPath": {"path": path, "type": "DirectoryOrCreate"}}
        if settings.get("type", "hostPath") == "local":
            if not node:
                raise ValueError("a `local` PersistentVolume needs the `node` it lives on")
            affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
            plan.pv = _pv(pv_name, username, capacity, {"local": {"path": _join(path, sub)}},
                          namespace, pvc_name, affinity)
        else:
            # made by the provisioning Job: `Directory` never lets kubelet create it root-owned
            plan.volumes = [{"name": HOME_VOLUME,
                             "hostPath": {"path": _join(path, sub), "type": "Directory"}}]
        if node:
            plan.node_selector = {"kubernetes.io/hostname": node}
    plan.home_root = root
    if plan.pv is not None:
        plan.pvc = {"storage_class": "", "capacity": capacity, "volume_name": pv_name,
                    "access_modes": plan.pv["spec"]["accessModes"]}
        plan.volumes = [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": pvc_name}}]
    plan.volume_mounts = [{"name": HOME_VOLUME, "mountPath": mount_path}]
    return plan


def _join(root: str, sub: str) -> str:
    return f"{root.rstrip('/')}/{sub}"


def _applies(entry: dict, groups: list[str]) -> bool:
    wanted = entry.get("groups")
    return not wanted or bool(set(wanted) & set(groups))


def shared_mounts(shared_volumes: list[dict], datasets: list[dict],
                  groups: list[str]) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) of `shared_plan` with every source inline (no claims)."""
    plan = shared_plan(shared_volumes, datasets, groups)
    return plan.volumes, plan.volume_mounts

def volume_type(volume: dict) -> str:
    """The source type of a pod volume (`nfs`, `persistentVolumeClaim`, ...)."""
    return next((k for k in volume if k != "name"), "")


def uses_nfs(shared_volumes: list[dict], datasets: list[dict]) -> bool:
    """True when a shared directory or dataset is on NFS."""
    return any("nfs" in (e.get("volume") or {}) for e in [*shared_volumes, *datasets])


def pod_security_problem(plan: StoragePlan, level: str,
                         other_volumes: list[dict] | tuple = (),
                         shared_nfs: bool = False) -> str | None:
    """Why the notebook's volumes can't be used at Pod Security `level`, or None.

    NFS homes (the `nfs` preset) and NFS shared directories or datasets need `restricted`:
    below it every user may mount the whole export (every home, every group's directory)
    with an inline volume. A `hostPath` home needs `privileged`. At `restricted`, any volume
    type that level refuses is named here, before Kubernetes refuses the pod.
    """
    if (plan.preset == "nfs" or shared_nfs) and level != "restricted":
        what = ("the `nfs` preset needs" if plan.preset == "nfs"
                else "NFS shared volumes or datasets need")
        return (f"{what} pod_security_level `restricted`: at `{level}` any user "
                "can mount the whole export with an inline NFS volume in a pod of their own")
    if level != "privileged" and any("hostPath" in v for v in plan.volumes):
        return ("a hostPath home (`local` preset, type `hostPath`) is refused by Pod "
                f"Security level `{level}`; use type `local` (a local PV) or set "
                "pod_security_level = 'privileged'")
    if level == "restricted":
        if plan.preset == "nfs" and any("nfs" in v for v in plan.volumes):
            return ("nfs_storage mode `inline` puts an NFS volume in the pod, which Pod "
                    "Security `restricted` refuses; use mode `pv` (a PV + claim per user)")
        refused = [f"{v['name']} ({volume_type(v)})" for v in [*plan.volumes, *other_volumes]
                   if volume_type(v) not in RESTRICTED_VOLUME_TYPES]
        if refused:
            return (f"volumes {', '.join(refused)} are refused by Pod Security level "
                    "`restricted`, which allows only " + ", ".join(sorted(
                        RESTRICTED_VOLUME_TYPES)) + "; give shared directories and datasets "
                    "as `nfs` (made a claim per user namespace) or `persistentVolumeClaim`")
    return None


@dataclass
class SharedPlan:
    """Shared directories and datasets: pod volumes and mounts, and the PersistentVolumes
    and claims to ensure in the user's namespace for NFS sources."""

    volumes: list[dict] = field(default_factory=list)
    volume_mounts: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)


def _shared_claim(kind: str, entry: dict, group: str | None, namespace: str, username: str,
                  read_only: bool) -> tuple[dict, dict, str]:
    """A PV of exactly the directory this user sees (the group's one) and its claim."""
    source = copy.deepcopy(entry["volume"]["nfs"])
    sub = entry.get("sub_path")
    if sub:
        source["path"] = _join(source["path"], sub.format(group=group))
    if read_only:
        source["readOnly"] = True
    key = stable_hash(json.dumps([namespace, kind, entry["name"], group]), length=16)
    pv_name = f"kdash-{kind}-{key}"
    claim = dns_label(kind, entry["name"], *([group] if group else []))
    labels = L.owner_labels(username, SHARED_COMPONENT)
    mode = "ReadOnlyMany" if read_only else "ReadWriteMany"
    pv = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": labels,
                     "annotations": L.owner_annotations(username)},
        "spec": {"capacity": {"storage": "1Mi"}, "accessModes": [mode],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": namespace, "name": claim}, "nfs": source},
    }
    pvc = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace, "labels": labels,
                     "annotations": L.owner_annotations(username)},
        "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Mi"}}},
    }
    return pv, pvc, claim


def shared_plan(shared_volumes: list[dict], datasets: list[dict], groups: list[str], *,
                namespace: str | None = None, username: str = "") -> SharedPlan:
    """Volumes and mounts for the shared directories and read-only datasets a user gets.

    A shared volume whose `mount_path`/`sub_path` contains `{group}` is mounted once per
    group of the user (filtered by its `groups`), e.g. `/shared/{group}`. With `namespace`,
    an `nfs` source becomes a claim in that namespace per directory, bound to a PV of that
    directory only (read-only for datasets): no inline NFS volume in the pod, and nothing
    in the user's namespace reaches beyond what the user may see.
    """
    plan = SharedPlan()
    for kind, entries in (("shared", shared_volumes), ("dataset", datasets)):
        for entry in entries:
            if not _applies(entry, groups):
                continue
            vol_name = dns_label(kind, entry["name"])
            read_only = True if kind == "dataset" else bool(entry.get("read_only", False))
            default_path = f"/datasets/{entry['name']}" if kind == "dataset" else "/shared"
            path = entry.get("mount_path", default_path)
            sub = entry.get("sub_path")
            per_group = "{group}" in path or (sub and "{group}" in sub)
            targets = [g for g in groups if _applies({"groups": entry.get("groups")}, [g])]
            as_claims = namespace is not None and "nfs" in entry["volume"]
            if not as_claims:
                plan.volumes.append({"name": vol_name, **copy.deepcopy(entry["volume"])})
            for group in (targets if per_group else [None]):
                mount = {"name": vol_name, "mountPath": path.format(group=group),
                         "readOnly": read_only}
                if as_claims:
                    pv, pvc, claim = _shared_claim(kind, entry, group, namespace or "",
                                                   username, read_only)
                    plan.objects += [pv, pvc]
                    mount["name"] = claim
                    plan.volumes.append({"name": claim, "persistentVolumeClaim": {
                        "claimName": claim, "readOnly": read_only}})
                elif sub:
                    mount["subPath"] = sub.format(group=group)
                plan.volume_mounts.append(mount)
    return plan
