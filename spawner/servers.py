"""Several servers per user (JupyterHub's named servers): own pods, one home.

Each of a user's servers is a pod of its own in the user's namespace, named by
`naming.user_object_name("jupyter", user, server)` (injective in the pair: no server name
can be made to land on another server's pod, of this user or another) when the admin kept
KubeSpawner's `pod_name_template`. KubeSpawner's own `{user_server}` shortens escaped
names with a 32-bit hash, which a chosen name can be ground against.

All servers of a user mount the SAME home claim, the one their default server has (one home
per user: a notebook written in the GPU server is there in the CPU one). Whether two pods
may mount one claim at once depends on its access modes:

* `ReadWriteMany` (the `nfs` preset, an RWX storage class): anywhere, any number of pods;
* `ReadWriteOnce` (the `dynamic` preset's default, `local` PVs): many pods, ONE node. Every
  notebook pod with the home carries the claim's label and a required pod affinity to the
  pods with that label on the same node (the scheduler's first-pod rule places the first
  one freely). A start whose flavor can't run on the node the user's other server holds
  the home on (a GPU flavor's node selector, a GPU node's taint) is refused at once, in
  one sentence, instead of pending until the start times out;
* `ReadWriteOncePod`: one pod at all; a second server is refused while one runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes_asyncio.client.models import (
    V1Affinity,
    V1LabelSelector,
    V1PodAffinity,
    V1PodAffinityTerm,
)
from kubespawner import KubeSpawner

from kdash_hub import naming
from kdash_hub.kube import to_json
from kdash_hub.taints import untolerated_taint

from .refusals import refusal

KUBESPAWNER_POD_NAME = "jupyter-{user_server}"  # KubeSpawner's default pod_name_template
HOME_CLAIM_LABEL = "kdash-hub.io/home-claim"
HOSTNAME = "kubernetes.io/hostname"
SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


class _AsDefaultServer:
    """A spawner seen as its user's default server (KubeSpawner expands `{user_server}`,
    `{servername}` from `self.name`, which is the ORM's and can't be set)."""

    name = ""

    def __init__(self, spawner: Any):
        self._spawner = spawner

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._spawner, attr)


def reflector_key(namespace: str, name: str) -> str:
    """How KubeSpawner's pod reflector keys a pod (`pod_reflector.pods`)."""
    return f"{namespace}/{name}"


def pod_name(spawner: Any) -> str:
    """The server's pod: injective in (user, server) under KubeSpawner's default template,
    the admin's own template as KubeSpawner expands it otherwise."""
    if spawner.pod_name_template == KUBESPAWNER_POD_NAME:
        return naming.user_object_name("jupyter", spawner.user.name, spawner.name or "")
    return spawner._expand_user_properties(spawner.pod_name_template)


def forget_pod_name(orm_spawner: Any) -> None:
    """Drop the pod's name from a stopped server's saved state (JupyterHub 6's rename: the
    hub makes the spawner anew from that state, under the new name)."""
    state = dict(orm_spawner.state or {})
    for key in ("pod_name", "dns_name"):
        state.pop(key, None)
    orm_spawner.state = state


def home_claim(spawner: Any, template: str) -> str:
    """The claim `template` names for the user's DEFAULT server: every server's home."""
    return KubeSpawner._expand_user_properties(_AsDefaultServer(spawner), template)


def one_node(access_modes: Iterable[str]) -> bool:
    """True when a claim of these access modes mounts on one node only."""
    return not (set(access_modes) & SHARED_MODES)


def colocate(pod: Any, claim: str) -> None:
    """Label the notebook pod with its home claim and require the node of the pods that
    mount it (ReadWriteOnce: one node mounts it)."""
    value = naming.label_value(claim)
    pod.metadata.labels = {**(pod.metadata.labels or {}), HOME_CLAIM_LABEL: value}
    term = V1PodAffinityTerm(label_selector=V1LabelSelector(
        match_labels={HOME_CLAIM_LABEL: value}), topology_key=HOSTNAME)
    spec = pod.spec
    if spec.affinity is None:
        spec.affinity = V1Affinity()
    affinity = spec.affinity.pod_affinity or V1PodAffinity()
    required = list(affinity.required_during_scheduling_ignored_during_execution or [])
    affinity.required_during_scheduling_ignored_during_execution = [*required, term]
    spec.affinity.pod_affinity = affinity


def others_holding(pods: Mapping[str, dict], namespace: str, claim: str,
                   own_pod: str, servers_pods: Iterable[str] | None = None) -> list[dict]:
    """The user's other notebook pods that mount `claim` (from the hub's pod watch); with
    `servers_pods`, only pods of those names (the hub's own record of the user's other
    servers: a pod the user made with the same labels does not count)."""
    value = naming.label_value(claim)
    wanted = None if servers_pods is None else set(servers_pods)
    out = []
    for key, pod in pods.items():
        meta = pod.get("metadata") or {}
        if key == reflector_key(namespace, own_pod) or meta.get("namespace") != namespace:
            continue
        if wanted is not None and meta.get("name") not in wanted:
            continue
        if (meta.get("labels") or {}).get(HOME_CLAIM_LABEL) != value:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        out.append(pod)
    return out


def misfit(node: Mapping[str, Any], node_selector: Mapping[str, str],
           tolerations: Iterable[Mapping[str, Any]]) -> str | None:
    """Why a pod with this node selector and these tolerations can't go on `node`, or None."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != str(v) for k, v in node_selector.items()):
        return "its node selector does not match that node"
    taint = untolerated_taint(tolerations, node)
    if taint is not None:
        return f"that node is tainted {taint.get('key')} and the profile does not tolerate it"
    return None


def server_label(pod: Mapping[str, Any]) -> str:
    """A server as a person names it: “gpu”, or “default” for the default server."""
    name = ((pod.get("metadata") or {}).get("labels") or {}).get("hub.jupyter.org/servername")
    return f"“{name}”" if name else "default"


def refuse_second_pod(claim: str, holder: Mapping[str, Any]) -> Exception:
    return refusal(409, f"Your home ({claim}) can be mounted by one server at a time "
                        f"(ReadWriteOncePod) and your {server_label(holder)} server has it: "
                        "stop that server first, or ask an admin for home storage that "
                        "allows ReadWriteMany.")


def refuse_other_node(claim: str, holder: Mapping[str, Any], profile: str,
                      why: str) -> Exception:
    node = (holder.get("spec") or {}).get("nodeName") or "?"
    return refusal(409, f"Your home ({claim}) can be mounted on one node at a time "
                        f"(ReadWriteOnce) and your {server_label(holder)} server has it on "
                        f"node {node}, where {profile} can't run ({why}): stop that server "
                        "first, or ask an admin for home storage that allows ReadWriteMany.")


def _other_pods(spawner: Any) -> list[str]:
    """The pods of the user's other servers that are started or starting (the hub's view)."""
    others = getattr(spawner.user, "spawners", None) or {}
    return [s.pod_name for s in others.values()
            if s is not spawner and getattr(s, "active", False)]


async def check_home(spawner: Any, flavor: Mapping[str, Any] | None) -> None:
    """Refuse a start whose pod could never mount the user's home next to the user's other
    servers (see the module's doc); nothing to check when no other server runs."""
    plan = spawner._plan
    other_pods = _other_pods(spawner)
    if plan is None or not plan.pvc or not other_pods:
        return
    modes = list(plan.pvc.get("access_modes") or [])
    if not one_node(modes):
        return
    await spawner._start_watching_pods()
    holders = others_holding(spawner.pod_reflector.pods, spawner.namespace, spawner.pvc_name,
                             spawner.pod_name, other_pods)
    if not holders:
        return
    if "ReadWriteOncePod" in modes:
        raise refuse_second_pod(spawner.pvc_name, holders[0])
    placed = [p for p in holders if (p.get("spec") or {}).get("nodeName")]
    if not placed:
        return  # not scheduled yet: the pod affinity places both on one node
    # the hub may list nodes (helm-values/rbac/hub.yaml), not get one
    nodes = await spawner.kube.list(
        "Node", field_selector=f"metadata.name={placed[0]['spec']['nodeName']}")
    if not nodes:
        return
    node = nodes[0]
    selector = {**(spawner.node_selector or {}), **(plan.node_selector or {})}
    tolerations = [to_json(t) for t in spawner._sorted_dict_values(spawner.tolerations) or []]
    why = misfit(node, selector, tolerations)
    if why:
        profile = (flavor or {}).get("display_name") or "this server"
        raise refuse_other_node(spawner.pvc_name, placed[0], str(profile), why)
