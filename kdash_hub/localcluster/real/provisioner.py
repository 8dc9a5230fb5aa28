"""A dynamic provisioner for the real control plane's default StorageClass.

A real cluster ships one (local-path, a CSI driver); ours has none, so claims would stay
Pending for ever. This one does what an external provisioner does, through the API only:
for each Pending claim that the PV controller marked for `kdash.local/hostpath`
(`volume.kubernetes.io/storage-provisioner`), create a hostPath PersistentVolume pre-bound
to it (claimRef with the claim's uid) and let kube-controller-manager bind the pair; delete
the volumes it made once Released under a Delete policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path

import aiohttp

from ..apiclient import ApiError, KubeHTTP, WatchExpired

log = logging.getLogger("kdash_hub.localcluster.real.provisioner")

PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


class HostPathProvisioner:
    NAME = "kdash.local/hostpath"

    def __init__(self, api: KubeHTTP, root: Path):
        self.api = api
        self.root = Path(root)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._tasks = [asyncio.create_task(self._loop("persistentvolumeclaims", self._claim)),
                       asyncio.create_task(self._loop("persistentvolumes", self._volume))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.api.close()

    async def _loop(self, resource: str, handle) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    listing = await self.api.request("GET", f"/api/v1/{resource}")
                    version = listing["metadata"]["resourceVersion"]
                    for item in listing.get("items") or []:
                        await self._safely(handle, item)
                async for event in self.api.watch(f"/api/v1/{resource}",
                                                  {"resourceVersion": version}):
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        await self._safely(handle, obj)
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                version = None
            except (aiohttp.ClientError, OSError, TimeoutError, ApiError, ValueError) as e:
                log.info("provisioner watch of %s dropped (%s)", resource, e)
                await asyncio.sleep(0.5)

    async def _safely(self, handle, obj: dict) -> None:
        try:
            await handle(obj)
        except ApiError as e:
            log.warning("provisioner: %s %s: %s", obj.get("kind"),
                        (obj.get("metadata") or {}).get("name"), e)

    async def _claim(self, claim: dict) -> None:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        if (claim.get("status") or {}).get("phase") != "Pending" or spec.get("volumeName"):
            return
        if (meta.get("annotations") or {}).get(PROVISIONER_ANNOTATION) != self.NAME:
            return
        name = f"pvc-{meta['uid']}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # as local-path does: the pod's uid must be able to write
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: self.NAME}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or "",
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"],
                             "uid": meta["uid"]},
            },
        }
        try:
            await self.api.request("POST", "/api/v1/persistentvolumes", body=volume)
            log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])
        except ApiError as e:
            if e.status != 409:
                raise

    async def _volume(self, volume: dict) -> None:
        meta, spec = volume["metadata"], volume.get("spec") or {}
        if (meta.get("annotations") or {}).get(PROVISIONED_BY) != self.NAME:
            return
        if (volume.get("status") or {}).get("phase") != "Released":
            return
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        with contextlib.suppress(ApiError):
            await self.api.request("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
        path = Path((spec.get("hostPath") or {}).get("path", ""))
        if path.parent == self.root:
            shutil.rmtree(path, ignore_errors=True)
