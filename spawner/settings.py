"""KDashSpawner's settings (traitlets with help), kept apart from its behaviour."""

from __future__ import annotations

from traitlets import Bool, Dict, Enum, Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from .storage import PRESETS


class KDashSettings(Configurable):
    """Mixed into KDashSpawner; configure as `c.KDashSpawner.<name>`."""

    namespace_prefix = Unicode(
        "kdash-", config=True,
        help="Prefix of user namespaces: the namespace is `{prefix}{username}`, made a valid "
             "DNS-1123 label (hash suffix when it had to be changed or shortened).",
    )
    hub_namespace = Unicode(
        config=True,
        help="Namespace of the hub and proxy pods (allowed into user namespaces by the "
             "NetworkPolicy). Default: the namespace the hub runs in.",
    )

    @default("hub_namespace")
    def _hub_namespace_default(self) -> str:
        return self._namespace_default()  # KubeSpawner's: in-cluster namespace or "default"

    @validate("user_namespace_template")
    def _refuse_user_namespace_template(self, proposal: dict) -> str:
        # KubeSpawner's template would be silently ignored: naming.user_namespace names them
        raise TraitError(
            "KDashSpawner names user namespaces itself (namespace_prefix + the username, made "
            "a valid and unique Kubernetes name), so KubeSpawner.user_namespace_template = "
            f"{proposal['value']!r} would be ignored: remove it, and set "
            "KDashSpawner.namespace_prefix instead.")

    quota = Dict(
        {"requests.cpu": "8", "limits.cpu": "16", "requests.memory": "32Gi",
         "limits.memory": "64Gi", "requests.nvidia.com/gpu": "0", "pods": "20",
         "persistentvolumeclaims": "10", "requests.storage": "200Gi"},
        config=True,
        help="ResourceQuota `hard` of every user namespace (cpu, memory, GPUs, pods, PVC "
             "count and storage). Per-group overrides in `group_quotas`.",
    )
    group_quotas = Dict(
        {}, config=True,
        help="Per-group quota overrides, {group: {key: quantity}}. For each key set by any of "
             "the user's groups, the largest of those values replaces `quota`'s.",
    )
    limit_range = Dict(
        {"default": {"cpu": "1", "memory": "2Gi"},
         "defaultRequest": {"cpu": "100m", "memory": "256Mi"}},
        config=True,
        help="The container LimitRange item of every user namespace (`default`, "
             "`defaultRequest`, `max`, `min`), so containers without limits (init or "
             "sidecar containers) still fit the quota.",
    )
    group_limit_ranges = Dict(
        {}, config=True,
        help="Per-group LimitRange overrides, same shape as `limit_range`; largest wins.",
    )
    network_policy_ingress_from = List(
        [], config=True,
        help="NetworkPolicy peers allowed to reach user pods. Empty: the pods labelled "
             "`hub.jupyter.org/network-access-singleuser=true` (hub, proxy) in `hub_namespace`.",
    )
    network_policy_allow_same_namespace = Bool(
        True, config=True,
        help="Let pods of the same user namespace reach each other (side services).",
    )
    network_policy_egress = List(
        default_value=None, allow_none=True, config=True,
        help="Egress rules of user pods (NetworkPolicy `egress` items). None (default): DNS "
             "(port 53 of `network_policy_dns_peers` only), the hub API, the user's own "
             "namespace and the internet except `network_policy_egress_denied_cidrs` "
             "(cluster-internal addresses and cloud metadata). [] blocks all egress.",
    )
    network_policy_egress_denied_cidrs = List(
        Unicode(),
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
         "169.254.169.254/32"],
        config=True,
        help="IPv4 ranges the default egress rules keep user pods away from: the cluster's "
             "pod and service CIDRs (private ranges by default: set your own if the cluster "
             "uses public addresses inside) and the cloud metadata address. DNS and the hub "
             "API stay reachable through their own rules.",
    )
    network_policy_dns_peers = List(
        [], config=True,
        help="NetworkPolicy peers the default egress lets user pods send DNS (port 53) to. "
             "Empty: the cluster's resolver, pods labelled `k8s-app: kube-dns` in "
             "`kube-system` (CoreDNS keeps that label). Add an ipBlock for NodeLocal DNSCache "
             "(e.g. 169.254.20.10/32). Port 53 elsewhere in the cluster stays closed.",
    )
    network_policy_hub_api_port = Integer(
        8081, config=True,
        help="Port of the hub API on the hub pod (z2jh: 8081), allowed by the default egress.",
    )
    user_service_account = Unicode(
        "kdash-user", config=True,
        help="ServiceAccount created in each user namespace and used by the notebook pod.",
    )
    user_cluster_role = Unicode(
        "kdash-user", config=True,
        help="ClusterRole bound (by a RoleBinding, so only inside the user's namespace) to "
             "the user's ServiceAccount. `kdash-user` (helm-values/rbac/users.yaml): the "
             "user's workloads, not the namespace's guardrails. Empty: no RoleBinding, and "
             "no ServiceAccount token is mounted in the notebook.",
    )
    hub_namespace_role = Unicode(
        "kdash-hub-namespace", config=True,
        help="ClusterRole the hub binds to its own ServiceAccount in every user namespace as "
             "it makes the namespace (before anything else there): the hub's rights inside "
             "user namespaces come from these RoleBindings, not from a cluster-wide grant "
             "(helm-values/rbac/hub.yaml). Empty: make no such binding (the hub then needs "
             "those rights cluster-wide).",
    )
    hub_service_account = Unicode(
        "hub", config=True,
        help="The hub's ServiceAccount (in `hub_namespace`; z2jh names it `hub` unless "
             "fullnameOverride/nameOverride are set).",
    )
    service_cluster_roles = Dict(
        Unicode(),
        default_value={"kdash-launcher-namespace": "kdash-launcher",
                       "kdash-culler-namespace": "kdash-culler"},
        config=True,
        help="Rights of the pack's services inside every user namespace, as {ClusterRole: "
             "ServiceAccount}: a RoleBinding per entry, made with the namespace. The "
             "ServiceAccount is a name in `hub_namespace` or `namespace/name`. The defaults "
             "match helm-values/services/ (the launcher and the culler as Deployments of "
             "their own); with the services in the hub pod, give both roles to the hub's "
             "ServiceAccount. The hub may bind only the roles helm-values/rbac/ lets it bind.",
    )
    image_pull_secrets_to_copy = List(
        Unicode(), [], config=True,
        help="Image pull secrets to copy into every user namespace: `name` (in "
             "`hub_namespace`) or `namespace/name`. The copies are used by the notebook pod.",
    )
    bundle_drift_check = Enum(
        ["watch", "always", "hash"], "watch", config=True,
        help="How a later start finds out that bundle objects were deleted or changed. "
             "`watch`: label-selected watches on the bundle kinds (no extra request per "
             "start, one watch per kind per hub). `always`: ensure every object on every "
             "start (about 12 more requests). `hash`: trust the bundle hash on the "
             "Namespace (drift repaired only when settings change).",
    )
    drift_watch_timeout_seconds = Integer(
        240, config=True,
        help="Server-side timeout of the drift watches before they are renewed.",
    )
    storage_preset = Enum(
        list(PRESETS), "dynamic", config=True,
        help="Home storage: `nfs` (an NFS export, per-user PV+PVC or inline, directory made "
             "and chowned to the user), `local` (node-local hostPath or local PV), `dynamic` "
             "(a StorageClass claim), `none`. A flavor's `storage` overrides it.",
    )
    nfs_storage = Dict(
        {}, config=True,
        help="Settings of the `nfs` preset: server, path (the export holding the homes), "
             "mode (`pv`: a PV+PVC per user, or `inline`: an inline NFS volume), capacity.",
    )
    local_storage = Dict(
        {}, config=True,
        help="Settings of the `local` preset: path (base directory on the node), node "
             "(node name; pods are pinned there), type (`hostPath` or `local` PV), capacity.",
    )
    dynamic_storage = Dict(
        {}, config=True,
        help="Settings of the `dynamic` preset: storage_class, capacity, access_modes.",
    )
    home_mount_path = Unicode(
        "/home/jovyan", config=True, help="Where the home volume is mounted.",
    )
    home_init_image = Unicode(
        "busybox:1.36", config=True,
        help="Image of the provisioning Job that creates and chowns a user's home directory "
             "(`nfs` and `local` presets).",
    )
    home_provisioner_namespace = Unicode(
        config=True,
        help="Admin namespace where the Job creating users' home directories runs (it mounts "
             "the export root holding every home, so users must have no access there). "
             "Default: `hub_namespace`.",
    )

    @default("home_provisioner_namespace")
    def _home_provisioner_namespace_default(self) -> str:
        return self.hub_namespace

    home_provisioner_timeout_seconds = Float(
        120.0, config=True,
        help="How long a start waits for the Job creating the user's home directory.",
    )
    pod_running_check_seconds = Float(
        0.1, min=0.0, config=True,
        help="How often a start looks at the hub's pod watch for its new pod running, "
             "once the pod is made; the start ends at the first look that sees it running. "
             "KubeSpawner's own looks come at random moments up to 5 s apart, so a pod "
             "running just after one is seen seconds later. 0: only KubeSpawner's looks. "
             "Not used with `after_pod_created_hook`, `services_enabled` or "
             "`internal_ssl` (KubeSpawner has more to do after the pod is made).",
    )
    pod_security_level = Enum(
        ["privileged", "baseline", "restricted"], "baseline", config=True,
        help="Pod Security Standard enforced on user namespaces (label "
             "`pod-security.kubernetes.io/enforce`). `restricted` also refuses pods with "
             "inline NFS/hostPath volumes (no user pod can mount another user's home or an "
             "arbitrary NFS server); the notebook pod is then made to satisfy it.",
    )
    shared_volumes = List(
        [], config=True,
        help="Shared directories for every notebook: [{name, volume: <k8s volume source>, "
             "mount_path, sub_path, read_only, groups}]. `{group}` in mount_path/sub_path "
             "mounts it once per group of the user (e.g. /shared/{group}).",
    )
    datasets = List(
        [], config=True,
        help="Read-only dataset collections: [{name, volume, mount_path (default "
             "/datasets/<name>), groups}].",
    )
    flavors = List(
        [], config=True,
        help="Server flavors shown in the profile chooser (see kdash_hub.spawner.profiles): "
             "cpu/mem, gpu {resource, counts}, node_selector, tolerations (merged with the "
             "defaults), images, custom_image (a typed image, see custom_image_registries), "
             "lifetime bounds {min, default, max, choices} (kdash_hub.spawner.lifetime), "
             "interfaces [lab, vscode, rstudio] (the first is the default; "
             "kdash_hub.spawner.interfaces), "
             "idle_timeout, groups allowed (`hidden_note`: the chooser's line for those "
             "outside them), storage override.",
    )
    custom_image_registries = List(
        Unicode(), [], config=True,
        help="Registry prefixes a user may type a custom image from, in flavors with "
             "`custom_image: true`, e.g. [\"quay.io/jupyter/\", \"registry.example.org/ml/\"]. "
             "A prefix always ends at a `/` (`quay.io` allows `quay.io/...`, never "
             "`quay.io.evil.com/...`). Images are matched as typed, in canonical form "
             "(lowercase registry and path, `docker.io/library/python:3.12`, not `python:3.12`).",
    )
    custom_image_patterns = List(
        Unicode(), [], config=True,
        help="Regular expressions a typed custom image may fully match instead (Python "
             "`re.fullmatch`, so they are anchored at both ends), e.g. "
             "[\"quay\\\\.io/jupyter/[a-z-]+-notebook:[0-9-]+\"]. Escape the dots. Images that are "
             "not a canonical image reference (whitespace, uppercase in the path, `..`, more "
             "than 255 characters) are refused before these run. Empty, with "
             "`custom_image_registries` empty too: no custom image is accepted.",
    )
    @validate("flavors")
    def _check_flavor_lifetimes(self, proposal: dict) -> list:
        from .interfaces import InterfaceError, of  # and so do unknown interfaces
        from .lifetime import LifetimeError, bounds  # a flavor's bounds fail at startup

        for flavor in proposal["value"]:
            try:
                bounds(flavor)
                of(flavor)
            except (LifetimeError, InterfaceError) as e:
                raise TraitError(f"KDashSpawner.flavors: {e}") from None
        return proposal["value"]

    gpu_display_names = Dict(
        Unicode(),
        default_value={"nvidia.com/gpu": "NVIDIA GPU", "amd.com/gpu": "AMD GPU",
                       "gpu.intel.com/i915": "Intel GPU"},
        config=True,
        help="Human names of GPU kinds, {extended resource: name}, e.g. {\"nvidia.com/gpu\": "
             "\"NVIDIA A100\"}: the chooser and the refusals say \"2 NVIDIA A100s\" instead of "
             "the resource name. A kind with no name here is shown as its resource name.",
    )
    culler_rules = Dict(
        {}, config=True,
        help="The culler's rules, shared with kdash-culler so the chooser shows each "
             "flavor's idle timeout: {\"default_rule\": {\"idle\": \"8h\"}, \"profile_rules\": "
             "{slug: {\"idle\": ...}}, \"group_rules\": {group: {\"idle\": ...}}}, as "
             "CullerApp's settings of those names (with the chart, kdash_hub.z2jh copies "
             "custom.kdash.culler here). Empty: the chooser shows a flavor's `idle_timeout` "
             "alone, and nothing for flavors without one.",
    )
    explain_hidden_flavors = Bool(
        True, config=True,
        help="Say in the chooser, one line per group rule, which flavors are hidden from the "
             "user and for which groups they are (\"GPU A100 is for the group ml.\"). A "
             "flavor's `hidden_note` replaces its line; `hidden_note: false` hides it silently.",
    )
    gpu_cache_seconds = Float(
        30.0, config=True, help="How long free-GPU counts are cached (at most).",
    )
    default_uid = Integer(
        1000, allow_none=True, config=True,
        help="uid of notebook pods when auth_state carries none.",
    )
    default_gid = Integer(
        100, allow_none=True, config=True,
        help="gid of notebook pods when auth_state carries none.",
    )
    delete_namespace_on_user_delete = Bool(
        False, config=True,
        help="Delete the user's namespace (and so its PVCs) when the hub user is deleted — "
             "only if it carries kdash-hub's managed label and this user's owner label.",
    )
