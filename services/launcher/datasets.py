"""S3 datasets in side services: a template with `datasets: true` (Karvdash's flag) gets, in
every container of its pods, the files and variables KDashSpawner writes into the user's
namespace (kdash_hub.spawner.datasets): the `kdash-datasets` Secret mounted read-only at the
same directory as in notebooks, and `kdash-datasets-env` as envFrom. Both optional, so an
instance of a user without datasets starts all the same.

Here the launcher only names the Secrets (its own settings); it never reads them, so nothing
a user writes there reaches another user. (The Datasets page, userdatasets.py, reads the
names in the user's own `-env` copy to show them to that user, nothing else.)
"""

from __future__ import annotations

import copy
from typing import Any


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a rendered object (a Pod's own, a workload's or a CronJob's)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    kind = obj.get("kind")
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") if isinstance(spec, dict) else None
    inner = template.get("spec") if isinstance(template, dict) else None
    return [inner] if isinstance(inner, dict) else []


def attach(objects: list[dict[str, Any]], secret_name: str,
           mount_dir: str) -> list[dict[str, Any]]:
    """Copies of `objects` whose pods get the datasets' volume, mount and envFrom."""
    # the spawner's names; imported here, so the launcher loads the spawner only if used
    from kdash_hub.spawner.datasets import FILES, VOLUME, env_secret_name

    out = copy.deepcopy(objects)
    volume = {"name": VOLUME, "secret": {"secretName": secret_name, "optional": True,
                                         "items": [{"key": f, "path": f} for f in FILES]}}
    mount = {"name": VOLUME, "mountPath": mount_dir, "readOnly": True}
    env_from = {"secretRef": {"name": env_secret_name(secret_name), "optional": True}}
    for obj in out:
        for spec in pod_specs(obj):
            volumes = [v for v in spec.get("volumes") or [] if v.get("name") != VOLUME]
            spec["volumes"] = [*volumes, volume]
            for container in spec.get("containers") or []:
                mounts = [m for m in container.get("volumeMounts") or []
                          if m.get("name") != VOLUME and m.get("mountPath") != mount_dir]
                container["volumeMounts"] = [*mounts, dict(mount)]
                container["envFrom"] = [*(container.get("envFrom") or []), dict(env_from)]
    return out
