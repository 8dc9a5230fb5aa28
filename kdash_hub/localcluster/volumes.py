"""A pod's volumes as the kubelet sets them up, before any container starts.

`check(pod, lookup)` finds what a real kubelet could not mount: a ConfigMap or Secret (or
one of their keys) that doesn't exist and isn't optional, in a `configMap`, `secret` or
`projected` volume. The pod then stays ContainerCreating with a `FailedMount` event in the
kubelet's words (`MountVolume.SetUp failed for volume "x" : configmap "y" not found`),
in both kubelet modes, until the object appears.

`prepare_volumes` (process mode) makes each mount of a container a path under the pod's
root directory: a PVC is a directory per claim that outlives the pod, an NFS export a
directory per server:path shared by all pods, a hostPath a directory per node, emptyDir a
directory per pod; configMap, secret, projected and downwardAPI volumes are written out as
files (with `items`, `defaultMode` and `mode`). A `subPath` mounts one entry of the volume,
a single file included. With an `identity` (a kubelet running as root), a claim's
directory belongs to the pod's uid with mode 0700, so no other pod's user can read it;
hostPath and NFS directories are left as they are, like a real node's.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from . import podsandbox
from .processes import container_path

Lookup = Callable[[str, str, str], Awaitable[dict | None]]
PLACEHOLDER_TOKEN = "kdash-local-service-account-token"  # the emulator signs no tokens


class MountError(Exception):
    """A volume that can't be set up; `volume` is its name, the message the reason."""

    def __init__(self, volume: str, message: str):
        super().__init__(message)
        self.volume = volume
        self.message = message

    def event_message(self) -> str:
        return f'MountVolume.SetUp failed for volume "{self.volume}" : {self.message}'


def _decoded(kind: str, obj: Mapping) -> dict[str, bytes]:
    """An object's keys as file contents (Secret data is base64, so is binaryData)."""
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        out[key] = base64.b64decode(value) if kind == "Secret" else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


async def _object_files(kind: str, ref: Mapping, namespace: str, lookup: Lookup,
                        default_mode: int | None) -> dict[str, tuple[bytes, int | None]]:
    """The files a configMap/secret (volume or projected source) gives: path -> (data, mode)."""
    name = str(ref.get("secretName" if kind == "Secret" and "secretName" in ref else "name")
               or "")
    optional = bool(ref.get("optional"))
    label = "secret" if kind == "Secret" else "configmap"
    obj = await lookup(kind, namespace, name)
    if obj is None:
        if optional:
            return {}
        raise ValueError(f'{label} "{name}" not found')
    data = _decoded(kind, obj)
    items = ref.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise ValueError(f"configmap references non-existent config key: {key}"
                             if kind == "ConfigMap" else
                             f"references non-existent secret key: {key}")
        out[str(item.get("path") or key)] = (data[key], item.get("mode", default_mode))
    return out


def _downward_files(items: list, pod: Mapping, default_mode: int | None
                    ) -> dict[str, tuple[bytes, int | None]]:
    meta = pod.get("metadata") or {}
    out = {}
    for item in items or []:
        path = (item.get("fieldRef") or {}).get("fieldPath", "")
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            text = "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        elif path.startswith("metadata."):
            text = str(meta.get(path.split(".", 1)[1], ""))
        else:  # resourceFieldRef and the rest: not emulated, an empty file
            text = ""
        out[str(item.get("path", ""))] = (text.encode(), item.get("mode", default_mode))
    return out


async def volume_files(volume: Mapping, pod: Mapping, lookup: Lookup
                       ) -> dict[str, tuple[bytes, int | None]] | None:
    """The files of a configMap/secret/projected/downwardAPI volume (None for other kinds);
    raises MountError as the kubelet's volume plugins fail."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    name = str(volume.get("name", ""))
    try:
        if "configMap" in volume:
            source = volume["configMap"] or {}
            return await _object_files("ConfigMap", source, namespace, lookup,
                                       source.get("defaultMode", 0o644))
        if "secret" in volume:
            source = volume["secret"] or {}
            return await _object_files("Secret", source, namespace, lookup,
                                       source.get("defaultMode", 0o644))
        if "downwardAPI" in volume:
            source = volume["downwardAPI"] or {}
            return _downward_files(source.get("items") or [], pod,
                                   source.get("defaultMode", 0o644))
        if "projected" in volume:
            source = volume["projected"] or {}
            mode = source.get("defaultMode", 0o644)
            files: dict[str, tuple[bytes, int | None]] = {}
            errors = []
            for part in source.get("sources") or []:
                try:
                    if "configMap" in part:
                        files |= await _object_files("ConfigMap", part["configMap"] or {},
                                                     namespace, lookup, mode)
                    elif "secret" in part:
                        files |= await _object_files("Secret", part["secret"] or {},
                                                     namespace, lookup, mode)
                    elif "downwardAPI" in part:
                        files |= _downward_files((part["downwardAPI"] or {}).get("items"),
                                                 pod, mode)
                    elif "serviceAccountToken" in part:
                        token = part["serviceAccountToken"] or {}
                        files[str(token.get("path") or "token")] = (
                            PLACEHOLDER_TOKEN.encode(), mode)
                except ValueError as e:
                    errors.append(str(e))
            if errors:
                raise ValueError(errors[0] if len(errors) == 1 else
                                 "[" + ", ".join(errors) + "]")
            return files
    except ValueError as e:
        raise MountError(name, str(e)) from None
    return None


async def check(pod: Mapping, lookup: Lookup) -> list[MountError]:
    """Every volume a real kubelet would fail to mount (none: the pod may start)."""
    problems = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        try:
            await volume_files(volume, pod, lookup)
        except MountError as e:
            problems.append(e)
    return problems


def _write_files(directory: Path, files: Mapping[str, tuple[bytes, int | None]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for rel, (data, mode) in files.items():
        target = directory / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue  # the API server refuses such paths; never write outside the volume
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mode is not None:
            os.chmod(target, int(mode) & 0o777 | 0o200)  # keep it writable for cleanup


async def prepare_volumes(
    pod: Mapping,
    container: Mapping,
    *,
    pod_root: Path,
    cluster_root: Path,
    lookup: Lookup,
    identity: podsandbox.Identity | None = None,
) -> None:
    """Make each volume mount of the container a path (symlink) under `pod_root`."""
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace", "")
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    private = pod_root.parent / f".{pod_root.name}-volumes"
    # parents first, so a mount inside another mount lands inside it, as in a container
    for mount in sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"]):
        volume = volumes.get(mount["name"], {"name": mount["name"]})
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", mount["name"])
            source = cluster_root / "volumes" / namespace / claim
            if identity is not None:  # others may pass through, never list
                podsandbox.traversable_dirs(cluster_root / "volumes", source.parent)
                source.mkdir(exist_ok=True)
                podsandbox.own_volume(source, identity)
        elif "nfs" in volume:  # one export, shared by every pod that mounts it
            nfs = volume["nfs"]
            source = container_path(cluster_root / "nfs" / nfs.get("server", "server"),
                                    nfs.get("path", "/"))
        elif "hostPath" in volume:  # the node's directory
            node = (pod.get("spec") or {}).get("nodeName") or "node"
            source = container_path(cluster_root / "hostpath" / node,
                                    volume["hostPath"].get("path", "/"))
        else:
            source = private / mount["name"]
            files = await volume_files(volume, pod, lookup)
            if files is not None:
                _write_files(source, files)
        source.mkdir(parents=True, exist_ok=True)
        sub = str(mount.get("subPath") or "")
        if sub:
            if ".." in Path(sub).parts or Path(sub).is_absolute():
                raise MountError(mount["name"], f"subPath {sub!r} must be a relative path "
                                                f"inside the volume")
            source = source / sub
            if not source.exists():  # a real kubelet creates a missing subPath directory
                source.mkdir(parents=True, exist_ok=True)
        target = container_path(pod_root, mount["mountPath"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            # a mount point inside a lasting volume (a PVC home, say) may be left over from
            # an earlier pod: point it at this pod's volume
            target.unlink()
        elif target.exists():
            continue  # real content (a parent volume's files) is never replaced
        target.symlink_to(source, target_is_directory=source.is_dir())
