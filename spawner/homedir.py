"""Create a user's home directory on shared storage with a Job in an admin namespace.

Only this Job mounts the export root (holding every user's home); it runs in a namespace
users cannot reach, makes exactly the user's directory and gives it to the user's uid/gid.
The result is recorded (an annotation on the user's PV, or on the user's Namespace for
inline volumes), so later starts cost no request for it.

The Job runs where the notebook will: it carries the notebook pod's node selector, node
affinity and tolerations (a node-local home lives on one node, often a tainted GPU node).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client import (
    V1NodeSelectorTerm,
    V1PreferredSchedulingTerm,
    V1Toleration,
)
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner.utils import get_k8s_model

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources, api_error_message, to_json
from kdash_hub.naming import user_object_name

from .storage import INIT_MOUNT, StoragePlan, home_setup_script

PROVISIONED_ANNOTATION = "kdash-hub.io/home-provisioned"
COMPONENT = "home-provisioner"
Report = Callable[[str], None]


class HomeDirError(Exception):
    """The home directory could not be made; the message is for the user."""


def owner(uid: int | None, gid: int | None) -> str:
    return f"{uid if uid is not None else 1000}:{gid if gid is not None else 100}"


def job_name(username: str) -> str:
    return user_object_name("kdash-home", username)


def _values(src: Any) -> list:
    """A list trait's entries; KubeSpawner also takes a dict of them (sorted by key)."""
    if isinstance(src, Mapping):
        return [src[k] for k in sorted(src)]
    return list(src or [])


def _as_json(model: type, entries: Any) -> list[dict]:
    """Entries given as camelCase or snake_case dicts (or models) as the API's JSON."""
    return [to_json(get_k8s_model(model, e)) for e in _values(entries) if e]


def pod_placement(*, node_selector: Mapping[str, str] | None = None, tolerations: Any = None,
                  node_affinity_required: Any = None,
                  node_affinity_preferred: Any = None) -> dict[str, Any]:
    """The pod spec fields that decide where a pod may run, from KubeSpawner's traits
    (`node_selector`, `tolerations`, `node_affinity_required`/`_preferred`) after the
    profile is applied: what the notebook pod gets, for the home Job to get too. Pod
    (anti-)affinity is left out: it places the notebook relative to other pods, and the
    Job is not one of them."""
    spec: dict[str, Any] = {}
    if node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in node_selector.items()}
    if tolerations := _as_json(V1Toleration, tolerations):
        spec["tolerations"] = tolerations
    affinity: dict[str, Any] = {}
    if required := _as_json(V1NodeSelectorTerm, node_affinity_required):
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": required}
    if preferred := _as_json(V1PreferredSchedulingTerm, node_affinity_preferred):
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    if affinity:
        spec["affinity"] = {"nodeAffinity": affinity}
    return spec


def spawner_placement(spawner: Any) -> dict[str, Any]:
    """`pod_placement` of a KubeSpawner whose user options are loaded (profile applied)."""
    return pod_placement(node_selector=spawner.node_selector, tolerations=spawner.tolerations,
                         node_affinity_required=spawner.node_affinity_required,
                         node_affinity_preferred=spawner.node_affinity_preferred)


def home_job(plan: StoragePlan, *, username: str, namespace: str, image: str,
             uid: int | None, gid: int | None,
             placement: Mapping[str, Any] | None = None) -> dict:
    """The Job making `plan.home_dir` in the export root, owned by uid:gid, mode 0750.

    `placement` (see `pod_placement`) puts its pod where the notebook pod may run; the
    plan's node selector (the node holding a node-local home) is added to it."""
    assert plan.home_root is not None
    labels = L.owner_labels(username, COMPONENT)
    pod_spec: dict = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [{
            "name": "home-setup", "image": image,
            "command": ["sh", "-c", home_setup_script(f"{INIT_MOUNT}/{plan.home_dir}",
                                                      uid, gid)],
            "securityContext": {
                "runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
            },
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "100m", "memory": "64Mi"}},
            "volumeMounts": [{"name": "root", "mountPath": INIT_MOUNT}],
        }],
        "volumes": [{"name": "root", **plan.home_root}],
    }
    pod_spec.update(copy.deepcopy(dict(placement or {})))
    if plan.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **plan.node_selector}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(username), "namespace": namespace, "labels": labels,
                     "annotations": {**L.owner_annotations(username),
                                     PROVISIONED_ANNOTATION: owner(uid, gid)}},
        "spec": {"backoffLimit": 2, "ttlSecondsAfterFinished": 300,
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


def _condition(job: dict) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


async def run_home_job(kube: KubeResources, job: dict, wait_seconds: float, log,
                       poll: float = 0.5) -> None:
    """Ensure the Job, wait until it completes, then delete it. Raises HomeDirError."""
    meta = job["metadata"]
    name, ns = meta["name"], meta["namespace"]
    try:
        try:
            current = await kube.create(job)
        except ApiException as e:
            if e.status != 409:
                raise
            current = await kube.get("Job", name, ns) or await kube.create(job)
            want = meta["annotations"][PROVISIONED_ANNOTATION]
            stale = (current["metadata"].get("annotations") or {}).get(PROVISIONED_ANNOTATION)
            if _condition(current) == "Failed" or stale != want:
                # a failed or differently-owned earlier attempt: start over
                await kube.delete("Job", name, ns, propagation="Foreground")
                current = await _recreate(kube, job, wait_seconds)
        deadline = time.monotonic() + wait_seconds
        while (state := _condition(current)) is None:
            if time.monotonic() > deadline:
                raise HomeDirError(
                    f"Your home directory was not ready within {wait_seconds:.0f} s (Job {ns}/"
                    f"{name}). Try again; if it keeps failing, an admin can check that Job.")
            await asyncio.sleep(poll)
            current = await kube.get("Job", name, ns)
            if current is None:
                raise HomeDirError(f"The Job {ns}/{name} making your home directory vanished; "
                                   "try starting again.")
        if state == "Failed":
            log.error("Home directory Job %s/%s failed: %s", ns, name, current.get("status"))
            raise HomeDirError(
                f"Your home directory could not be created (Job {ns}/{name} failed). An admin "
                "can find the reason in that Job's pod log; starting again retries it.")
        await kube.delete("Job", name, ns)
    except ApiException as e:
        raise HomeDirError(f"Could not create your home directory: {api_error_message(e)}") from e


async def _recreate(kube: KubeResources, job: dict, wait_seconds: float) -> dict:
    deadline = time.monotonic() + min(wait_seconds, 30)
    while True:
        try:
            return await kube.create(job)
        except ApiException as e:
            if e.status != 409 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
