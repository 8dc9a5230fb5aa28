"""KDashSpawner: KubeSpawner plus a per-user namespace bundle, storage presets, GPU flavors.

Thin on purpose: the pieces live in bundle.py, provision.py, drift.py, quotas.py,
storage.py, profiles.py, gpu_availability.py and identity.py; this class wires them into
KubeSpawner's hooks (load_user_options, _ensure_namespace, get_pod_manifest,
get_pvc_manifest, progress, delete_forever). Two mixins own the start path's edges:
explained.py (every start failure as a sentence) and adopt.py (a restarted hub keeps the
servers that run); shielded.py keeps KubeSpawner's shared watches out of reach of one
caller's cancellation.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from functools import partial
from typing import Any

from jupyterhub.utils import exponential_backoff
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.client.models import (
    V1EnvFromSource,
    V1EnvVar,
    V1SecretEnvSource,
    V1SecretVolumeSource,
    V1Volume,
    V1VolumeMount,
)
from kubespawner import KubeSpawner
from sqlalchemy.orm import object_session
from tornado import web
from traitlets import Bool, Unicode, default
from traitlets.log import get_logger

from kdash_hub import labels as L
from kdash_hub import naming
from kdash_hub.kube import KubeResources, api_error_message, to_json, without_environment_lookups

from . import (
    bundle,
    chooser,
    homedir,
    identity,
    images,
    interfaces,
    lifetime,
    profiles,
    quotas,
    refusals,
    running,
    servers,
    storage,
)
from .adopt import AdoptOnRestart
from .datasets import S3DatasetSettings
from .drift import DriftWatch
from .explained import ExplainedStart
from .gpu_availability import GpuAvailability
from .lean_api import LeanCoreV1Api
from .provision import BundleError, BundleProvisioner
from .revoke import revoke_service_account
from .settings import KDashSettings
from .shielded import ShieldedReflectors

# traits a flavor may change: restored from configuration before every start, so one
# start's profile does not leak into the next (KubeSpawner keeps the spawner object)
_PER_START = (
    "tolerations", "node_selector", "extra_resource_limits", "extra_resource_guarantees",
    "cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee", "image", "pvc_name_template",
    "storage_class", "storage_capacity", "storage_access_modes", "storage_pvc_ensure",
    "uid", "gid", "fs_gid", "service_account", "automount_service_account_token",
    "image_pull_secrets", "extra_annotations",
)
# what _plan_storage changes: reset to the configuration before a home is planned
_STORAGE_KEYS = ("pvc_name_template", "storage_class", "storage_capacity",
                 "storage_access_modes", "storage_pvc_ensure", "uid", "gid", "fs_gid")
NOTEBOOK_FILES_VOLUME = "kdash-services"
_GPU_CACHES: dict[Any, GpuAvailability] = {}


def _make_restricted(pod: Any) -> None:
    """Make the notebook pod satisfy the `restricted` Pod Security Standard."""
    spec = pod.spec
    spec.security_context = {**_as_dict(spec.security_context), "runAsNonRoot": True,
                             "seccompProfile": {"type": "RuntimeDefault"}}
    for container in spec.containers:
        container.security_context = {**_as_dict(container.security_context),
                                      "allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                      "capabilities": {"drop": ["ALL"]}}


class _NotUpstreamsNamespaceLine(logging.Filter):
    """KubeSpawner logs "Using user namespace: <its own template's name>" while it is made;
    the pack replaces that name at once, so the line would be untrue."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using user namespace:")


def _applied_at_start(spawner: Any, user_options: dict) -> None:
    """user_options are applied by KubeSpawner's load_user_options when the server starts."""


def _as_dict(value: Any) -> dict:
    """A security context as the API's JSON (KubeSpawner gives dicts, models are possible)."""
    return to_json(value) if value else {}


IDLE_TIMEOUT_ANNOTATION = "kdash-hub.io/idle-timeout"
PROFILE_ANNOTATION = "kdash-hub.io/profile"


def _being_cancelled() -> bool:
    """Whether the running task was asked to stop (not only something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class KDashSpawner(KDashSettings, S3DatasetSettings, AdoptOnRestart, ExplainedStart,
                   ShieldedReflectors, KubeSpawner):
    """KubeSpawner with guardrails for multi-user data-science platforms."""

    enable_user_namespaces = Bool(
        True, config=True,
        help="One namespace per user, with its quota, limits, network policy and RBAC.",
    )
    delete_pvc = Bool(
        False, config=True,
        help="Delete the home PVC when the user is deleted (off: user data is kept).",
    )
    notebook_env_secret = Unicode(
        "kdash-notebook-env", config=True,
        help="A Secret in the user's namespace whose keys become the notebook's environment"
             " variables (envFrom, optional): the launcher writes there the connection"
             " details of the side services the user chose 'Use in my notebook' for."
             " Empty: none.",
    )
    notebook_files_secret = Unicode(
        "kdash-notebook-files", config=True,
        help="A Secret in the user's namespace mounted read-only (optional) at"
             " `notebook_files_dir` in every notebook: the launcher writes there a file per"
             " side service the user chose 'Use in my notebook as a file' for"
             " (<instance>.json and <instance>.env). Empty: none.",
    )
    notebook_files_dir = Unicode(
        "/etc/kdash/services", config=True,
        help="Where the notebook finds those files (also in its $KDASH_SERVICES_DIR); the"
             " launcher shows this path on its details page (notebookenv.FILES_DIR).",
    )

    def __init__(self, *args: Any, **kwargs: Any):
        log = kwargs.get("log") or get_logger()  # what KubeSpawner's self.log will be
        log = getattr(log, "logger", log)  # a LoggerAdapter's logger holds the filters
        untrue = _NotUpstreamsNamespaceLine()
        log.addFilter(untrue)
        try:
            super().__init__(*args, **kwargs)
        finally:
            log.removeFilter(untrue)
        # KubeSpawner's shared client (its pod and event watches too): no thread hop per request
        without_environment_lookups(self.api.api_client)
        # its pod and claim creates and pod deletes answered as dicts, not models (lean_api)
        self.api = LeanCoreV1Api(self.api)
        self.pod_name = servers.pod_name(self)  # injective in (user, server): servers.py
        self.dns_name = self.dns_name_template.format(namespace=self.namespace,
                                                      name=self.pod_name)
        if self.enable_user_namespaces:
            self.namespace = naming.user_namespace(self.user.name, self.namespace_prefix)
            self.dns_name = self.dns_name_template.format(
                namespace=self.namespace, name=self.pod_name)
            self.log.info("Using user namespace: %s", self.namespace)
        if self.flavors and isinstance(self.profile_list, list | dict) and not self.profile_list:
            # an empty profile_list (z2jh sets one) must not hide the flavors
            self.profile_list = self._flavor_profiles
        self._configured = {k: copy.deepcopy(getattr(self, k)) for k in _PER_START}
        # one home per user: every server mounts the default server's claim (servers.py)
        self.pvc_name = self._home_pvc_name = servers.home_claim(self, self.pvc_name_template)
        self.kdash_auth_state: dict[str, Any] = {}
        self._flavor: dict | None = None
        self._plan: storage.StoragePlan | None = None
        self._events: list[dict] = []
        self._events_changed = asyncio.Event()
        self._unlogged: list[str] = []  # reported, for the log's next line
        self._bundle_finished = True
        self._home_done: str | None = None  # "<volume>|<uid:gid>" of a made home directory
        # the options of the last start that passed the checks (a refusal puts them back)
        self._accepted_options: dict = copy.deepcopy(dict(self.user_options or {}))
        self._last_refusal: str | None = None
        self.kdash_lifetime: lifetime.Lifetime | None = None  # of the running server

    # --- profiles -------------------------------------------------------------------------

    @default("profile_list")
    def _profile_list_default(self):
        return self._flavor_profiles if self.flavors else []

    def groups(self) -> list[str]:
        return identity.group_names(self.user, self.kdash_auth_state)

    def _allowed_flavors(self) -> list[dict]:
        return profiles.allowed_flavors(self.flavors, self.groups(),
                                        bool(getattr(self.user, "admin", False)))

    def _gpu_cache(self) -> GpuAvailability:
        loop = asyncio.get_running_loop()
        cache = _GPU_CACHES.get(loop)
        if cache is None:
            cache = _GPU_CACHES[loop] = GpuAvailability(self.kube, self.gpu_cache_seconds)
        return cache

    async def _free_gpus(self, flavor: dict) -> Any:
        resource = flavor["gpu"].get("resource", "nvidia.com/gpu")
        node_selector = {**self._configured["node_selector"], **flavor.get("node_selector", {})}
        return await self._gpu_cache().free(resource, node_selector)

    async def _flavor_profiles(self, spawner: Any = None) -> list[dict]:
        """profile_list as a callable: the user's allowed flavors, GPU flavors with free counts."""
        out = []
        groups = self.groups()
        for flavor in self._allowed_flavors():
            free = await self._free_gpus(flavor) if flavor.get("gpu") else None
            idle = profiles.idle_text(*profiles.idle_timeout(flavor, self.culler_rules, groups))
            hint = None
            if images.allowed_in(flavor):
                hint = images.hint(*images.rules_of(flavor, self.custom_image_registries,
                                                    self.custom_image_patterns))
            profile = profiles.to_profile(flavor, free, self.gpu_display_names, idle, hint)
            entry = lifetime.chooser_entry(flavor)
            if entry:
                profile["kdash_lifetime"] = entry
            out.append(profile)
        return out

    @default("apply_user_options")
    def _apply_user_options_default(self):
        """Tell the hub the options are handled (at start), so it doesn't warn "unhandled
        user_options" on every spawn."""
        return _applied_at_start

    def run_options_from_form(self, form_data):
        """The hub's spawn form carries its `_xsrf` field, which KubeSpawner would report as
        "unrecognized form data" on every spawn: it is the hub's, not an option."""
        form_data = {k: v for k, v in (form_data or {}).items() if k != "_xsrf"}
        return super().run_options_from_form(form_data)

    @default("options_form")
    def _options_form_default(self):
        """The pack's chooser (chooser.py), unless the admin gave KubeSpawner a form."""
        if (self.flavors and self.profile_list == self._flavor_profiles
                and not self.profile_form_template
                and not self.additional_profile_form_template_paths):
            return self._chooser_form
        return super()._options_form_default()

    async def _chooser_form(self, spawner: Any = None) -> str:
        notes = []
        if self.explain_hidden_flavors:
            notes = profiles.hidden_notes(self.flavors, self.groups(),
                                          bool(getattr(self.user, "admin", False)))
        return chooser.render(await self._flavor_profiles(), notes, self.user_options)

    async def run_auth_state_hook(self, auth_state: Any) -> None:
        self.kdash_auth_state = dict(auth_state or {})
        await super().run_auth_state_hook(auth_state)

    # --- start: options, checks ----------------------------------------------------------

    def start(self):
        self._events = []
        self._bundle_finished = False
        if self.enable_user_namespaces:  # today's name, not one load_state brought back
            self.namespace = naming.user_namespace(self.user.name, self.namespace_prefix)
            self.dns_name = self.dns_name_template.format(
                namespace=self.namespace, name=self.pod_name)
        return super().start()

    def _choose_flavor(self) -> dict | None:
        """The flavor asked for, or refuse with 400 (unknown) / 403 (not allowed)."""
        if not self.flavors or self.profile_list != self._flavor_profiles:
            return None
        return refusals.choose_flavor(self.flavors, self._allowed_flavors(),
                                      (self.user_options or {}).get("profile"))

    async def load_user_options(self):
        try:
            await self._load_options()
        except web.HTTPError as e:
            if e.status_code < 500:  # what was asked for is refused, not our fault
                self._keep_accepted_options(e)
            raise
        self._accepted_options = copy.deepcopy(dict(self.user_options or {}))
        self._last_refusal = None

    def _keep_accepted_options(self, refusal: web.HTTPError) -> None:
        """A refused spawn leaves the last accepted options where JupyterHub keeps them (the
        next form preselects them, an admin's "Start server" uses them), and its reason in
        the server's state (the admin panel's server details show it)."""
        self._last_refusal = getattr(refusal, "jupyterhub_message", None) or refusal.log_message
        self.user_options = copy.deepcopy(self._accepted_options)
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None:
            orm_spawner.user_options = copy.deepcopy(self._accepted_options)
            session = object_session(orm_spawner)
            if session is not None:
                session.commit()

    async def _load_options(self):
        for key, value in self._configured.items():
            setattr(self, key, copy.deepcopy(value))
        flavor = self._choose_flavor()
        options = self.user_options or {}
        if flavor:
            refusals.check_choices(flavor, profiles.to_profile(flavor), options)
            images.check(flavor, options, self.custom_image_registries,
                         self.custom_image_patterns)
            interfaces.check(flavor, options)  # one sent for a flavor that offers none
        life = lifetime.chosen(flavor, options) if flavor else None
        gpus = refusals.check_gpu_count(flavor, options, self.gpu_display_names) if flavor else 0
        try:
            await super().load_user_options()
        except (ValueError, KeyError, StopIteration) as e:
            self.log.warning("%s: server options %r refused: %r", self._log_name, options, e)
            raise refusals.refusal(400, "These server options can't be used: choose your "
                                        "server again on the spawn page.") from e
        self._flavor = flavor
        if flavor:
            self.tolerations = profiles.merge_tolerations(
                self._sorted_dict_values(self._configured["tolerations"]) or [],
                flavor.get("tolerations") or [])
            self.extra_annotations = {
                **self.extra_annotations, PROFILE_ANNOTATION: profiles.flavor_slug(flavor),
                **({IDLE_TIMEOUT_ANNOTATION: str(flavor["idle_timeout"])}
                   if flavor.get("idle_timeout") else {})}
        uid, gid = identity.uid_gid(self.kdash_auth_state, self.default_uid, self.default_gid)
        self.uid, self.gid, self.fs_gid = uid, gid, gid
        if self.enable_user_namespaces:
            self.service_account = self.user_service_account
            self.automount_service_account_token = bool(self.user_cluster_role)
            copies = [ref.rsplit("/", 1)[-1] for ref in self.image_pull_secrets_to_copy]
            self.image_pull_secrets = list(self.image_pull_secrets or []) + copies
        self._plan_storage(flavor, uid, gid)
        if flavor and gpus:
            await self._check_gpus_free(flavor, gpus)
        self._check_quota(flavor, gpus)
        await servers.check_home(self, flavor)
        # every check passed: the lifetime counts from here (the hub saves it with the state)
        self.kdash_lifetime = None
        if flavor and life:
            self.kdash_lifetime = lifetime.Lifetime(profiles.flavor_slug(flavor), time.time(),
                                                    life)
            self.extra_annotations = {**self.extra_annotations, lifetime.DEADLINE_ANNOTATION:
                                      lifetime.iso(self.kdash_lifetime.deadline)}

    def lifetime_flavor(self, current: lifetime.Lifetime) -> dict | None:
        """The flavor of a running server's lifetime, as configured now."""
        return profiles.find_flavor(self.flavors, current.flavor)

    def kdash_lifetime_view(self) -> dict | None:
        """The running server's lifetime for the hub's home page (None: it has none)."""
        if self.kdash_lifetime is None or not self.active:
            return None
        return lifetime.view(self.kdash_lifetime, self.lifetime_flavor(self.kdash_lifetime))

    async def _check_gpus_free(self, flavor: dict, gpus: int) -> None:
        refusals.check_gpus_free(flavor, gpus, await self._free_gpus(flavor),
                                 self.gpu_display_names)

    def effective_quota(self) -> dict[str, Any]:
        return quotas.merge_grants(self.quota, self.group_quotas, self.groups())

    def _check_quota(self, flavor: dict | None, gpus: int) -> None:
        if not self.enable_user_namespaces:
            return
        used = {}
        watch = DriftWatch._by_loop.get(asyncio.get_running_loop())
        if watch is not None and watch.ready:  # status.used, kept current by the watch
            current = watch.cached("ResourceQuota", self.namespace, bundle.QUOTA_NAME) or {}
            used = (current.get("status") or {}).get("used") or {}
        resource = flavor["gpu"].get("resource", "nvidia.com/gpu") if flavor and gpus else None
        asked = refusals.requested(self.cpu_guarantee, self.cpu_limit, self.mem_guarantee,
                                   self.mem_limit, resource, gpus)
        refusals.check_quota(asked, self.effective_quota(), used, self.gpu_display_names)

    # --- storage ---------------------------------------------------------------------------

    def _plan_storage(self, flavor: dict | None, uid: int | None, gid: int | None) -> None:
        override = dict((flavor or {}).get("storage") or {})
        preset = override.pop("preset", self.storage_preset)
        template = override.pop("pvc_name_template", self.pvc_name_template)
        settings = {**{"nfs": self.nfs_storage, "local": self.local_storage,
                       "dynamic": self.dynamic_storage}.get(preset, {}), **override}
        if template != self._configured["pvc_name_template"]:
            pvc_name = servers.home_claim(self, template)  # kubespawner#761
        elif preset != self.storage_preset:
            pvc_name = naming.variant_name(self._home_pvc_name, preset,
                                           not self.enable_user_namespaces)
        else:
            pvc_name = self._home_pvc_name
        if pvc_name != self.pvc_name:
            self.pvc_name, self._pvc_exists = pvc_name, False
        try:
            plan = storage.plan_home(
                preset, settings, username=self.user.name, namespace=self.namespace,
                pvc_name=self.pvc_name, uid=uid, gid=gid, mount_path=self.home_mount_path)
        except ValueError as e:
            raise web.HTTPError(500, f"Storage is misconfigured: {e}") from e
        problem = storage.pod_security_problem(
            plan, self.pod_security_level, self._shared_plan().volumes,
            storage.uses_nfs(self.shared_volumes, self.datasets))
        if problem:
            raise web.HTTPError(500, f"Storage is misconfigured: {problem}.")
        self.storage_pvc_ensure = plan.pvc is not None
        if plan.pvc:
            self.storage_class = plan.pvc.get("storage_class")
            self.storage_capacity = str(plan.pvc["capacity"])
            self.storage_access_modes = list(plan.pvc["access_modes"])
        self._plan = plan

    def _shared_plan(self) -> storage.SharedPlan:
        """Shared directories and datasets; NFS ones as claims in the user's namespace."""
        return storage.shared_plan(
            self.shared_volumes, self.datasets, self.groups(), username=self.user.name,
            namespace=self.namespace if self.enable_user_namespaces else None)

    def get_pvc_manifest(self):
        pvc = super().get_pvc_manifest()
        pvc.metadata.labels.update(L.owner_labels(self.user.name, "home"))
        pvc.metadata.annotations.update(L.owner_annotations(self.user.name))
        if self._plan and self._plan.pvc and self._plan.pvc.get("volume_name"):
            pvc.spec.volume_name = self._plan.pvc["volume_name"]
            pvc.spec.storage_class_name = ""
        return pvc

    def get_state(self):
        state = super().get_state()
        state["kdash_home_pvc"] = self._home_pvc_name
        if self._last_refusal:
            state["kdash_last_refusal"] = self._last_refusal
        if self.kdash_lifetime is not None:
            state["kdash_lifetime"] = self.kdash_lifetime.to_state()
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("kdash_home_pvc"):
            self._home_pvc_name = state["kdash_home_pvc"]
        self._last_refusal = state.get("kdash_last_refusal")
        self.kdash_lifetime = lifetime.Lifetime.from_state(state.get("kdash_lifetime"))

    async def rename(self, old_name: str, new_name: str) -> None:
        """A renamed (stopped) server's next pod is named after its new name, not the old
        one in its saved state, which a new server of the old name would take too."""
        await super().rename(old_name, new_name)
        servers.forget_pod_name(self.orm_spawner)

    def clear_state(self):
        super().clear_state()
        self.kdash_lifetime = None  # a stopped server has no deadline
        self.pod_name = servers.pod_name(self)  # KubeSpawner's template again, not ours
        self.dns_name = self.dns_name_template.format(namespace=self.namespace,
                                                      name=self.pod_name)

    # --- provisioning ---------------------------------------------------------------------

    @property
    def kube(self) -> KubeResources:
        return KubeResources(self.api.api_client)

    def report(self, message: str) -> None:
        """A progress event for the hub's spawn page, and for the log: the messages of one
        turn of the event loop (a round of concurrent creates) as one line. JupyterHub's
        logger hands every record to its handlers whatever the log level (traitlets sets
        the logger to DEBUG), so each line costs its stack lookup even when dropped."""
        self._events.append({"progress": min(5 + 3 * len(self._events), 28), "message": message})
        self._events_changed.set()
        self._unlogged.append(message)
        if len(self._unlogged) == 1:  # the first of this turn: the line goes after it
            try:
                asyncio.get_running_loop().call_soon(self._log_reported)
            except RuntimeError:  # no loop: at once
                self._log_reported()

    def _log_reported(self) -> None:
        messages, self._unlogged = self._unlogged, []
        if messages:
            self.log.info("%s: %s", self._log_name, "; ".join(messages))

    async def bundle_spec(self) -> bundle.BundleSpec:
        groups = self.groups()
        sources = await asyncio.gather(*(self._read_pull_secret(r)
                                         for r in self.image_pull_secrets_to_copy))
        return bundle.BundleSpec(
            username=self.user.name, namespace=self.namespace,
            hub_namespace=self.hub_namespace,
            quota=quotas.merge_grants(self.quota, self.group_quotas, groups),
            limit_range=quotas.merge_grants(self.limit_range, self.group_limit_ranges, groups),
            service_account=self.user_service_account,
            cluster_role=self.user_cluster_role,
            hub_role=self.hub_namespace_role,
            hub_service_account=self.hub_service_account,
            service_roles=dict(self.service_cluster_roles),
            egress_denied_cidrs=tuple(self.network_policy_egress_denied_cidrs),
            hub_api_port=self.network_policy_hub_api_port,
            dns_peers=list(self.network_policy_dns_peers) or list(bundle.KUBE_DNS_PEERS),
            storage_objects=self._shared_plan().objects + await self.s3_dataset_objects(),
            ingress_from=list(self.network_policy_ingress_from),
            egress=self.network_policy_egress,
            allow_same_namespace=self.network_policy_allow_same_namespace,
            namespace_labels=self._expand_all(self.user_namespace_labels),
            namespace_annotations=self._expand_all(self.user_namespace_annotations),
            pull_secrets=[s for s in sources if s],
            pod_security_level=self.pod_security_level,
        )

    async def _read_pull_secret(self, ref: str) -> dict | None:
        ns, _, name = ref.rpartition("/")
        secret = await self.kube.get("Secret", name, ns or self.hub_namespace)
        if secret is None:
            self.log.warning("Image pull secret %s not found; not copied", ref)
        return secret

    async def _ensure_namespace(self):
        """Replaces KubeSpawner's namespace create with the whole bundle (and home PV)."""
        try:
            spec = await self.bundle_spec()
            provisioner = self._provisioner()
            # the home claim goes with the bundle's objects, the rest (RoleBindings the pod
            # does not need, the completion mark) once the pod is made; awaited at the end of
            # _start: a first start takes as many rounds before its pod as KubeSpawner's
            self._bundle_finish = provisioner
            self._build_pod_manifest_early()
            outcome = await provisioner.ensure(spec, self.report,
                                               alongside=self._home_claim_beside_bundle(),
                                               finish_later=True,
                                               pod_containers=self._pod_containers())
            if outcome == "unchanged":
                self.report(f"Namespace {self.namespace} is ready")
            await self._ensure_home_volume(provisioner.namespace_object)
        except BundleError as e:
            raise web.HTTPError(e.status, e.message) from e
        except homedir.HomeDirError as e:
            raise web.HTTPError(500, str(e)) from e
        finally:
            self._bundle_finished = True
            self._events_changed.set()

    _bundle_finish = None  # the provisioner whose bundle completion _start awaits

    def _pod_containers(self) -> list[dict] | None:
        """The resources of every container of the pod this start makes, as the bundle's
        LimitRange would see them; None when a `modify_pod_hook` may still change them."""
        if self.modify_pod_hook:
            return None
        notebook = {"resources": {
            "limits": {"cpu": self.cpu_limit, "memory": self.mem_limit,
                       **self.extra_resource_limits},
            "requests": {"cpu": self.cpu_guarantee, "memory": self.mem_guarantee,
                         **self.extra_resource_guarantees}}}
        plan = self._plan or storage.StoragePlan("none")
        others = [*plan.init_containers, *self.init_containers, *self.extra_containers]
        return [notebook, *(to_json(c) for c in others)]

    def _provisioner(self) -> BundleProvisioner:
        drift = None
        if self.bundle_drift_check == "watch":
            drift = DriftWatch.for_loop(self, self.drift_watch_timeout_seconds)
        return BundleProvisioner(self.kube, self.log, self.bundle_drift_check, drift)

    async def ensure_namespace_bundle(self) -> str:
        """The user's namespace bundle as a start makes it, and (no server running) their
        home, without a pod (namespace_api.py: a side service launched before the first
        notebook); returns the bundle's "created", "repaired" or "unchanged"."""
        if not self.enable_user_namespaces:
            raise web.HTTPError(409, "This hub runs servers without namespaces of their own "
                                     "(enable_user_namespaces is off).")
        if not self.active:  # today's name, as start() takes it (a running server keeps its)
            self.namespace = naming.user_namespace(self.user.name, self.namespace_prefix)
        try:
            outcome = await self._provisioner().ensure(
                await self.bundle_spec(),
                lambda message: self.log.info("%s: %s", self._log_name, message))
            if not self.active:  # a running server has its home already
                await self._ensure_home_before_start()
        except BundleError as e:
            raise web.HTTPError(e.status, e.message) from e
        except homedir.HomeDirError as e:
            raise web.HTTPError(500, str(e)) from e
        return outcome

    async def _ensure_home_before_start(self) -> None:
        """The home a first start makes (its PV, directory and claim), planned from the
        user's last accepted options as a start plans it, so a side service that mounts
        the home doesn't wait for the first notebook. KubeSpawner's own claim create: a
        claim already there is kept as it is, and nothing is ever deleted. Skipped for
        state from before KubeSpawner 7, whose claim name only a start can tell."""
        if getattr(self, "_state_kubespawner_version", None) == "unknown":
            return
        for key in _STORAGE_KEYS:
            setattr(self, key, copy.deepcopy(self._configured[key]))
        try:
            flavor = self._choose_flavor()
        except web.HTTPError:  # the last profile is no longer allowed: the default one's
            flavor = refusals.choose_flavor(self.flavors, self._allowed_flavors(), None)
        uid, gid = identity.uid_gid(self.kdash_auth_state, self.default_uid, self.default_gid)
        self.uid, self.gid, self.fs_gid = uid, gid, gid
        self._plan_storage(flavor, uid, gid)
        namespace = await self.kube.get("Namespace", self.namespace) or {}
        await self._ensure_home_volume(namespace)
        if self.storage_pvc_ensure:
            self.log.info("%s: home claim %s before the first start", self._log_name,
                          self.pvc_name)
            await exponential_backoff(
                partial(self._make_create_pvc_request, self.get_pvc_manifest(),
                        self.k8s_api_request_timeout),
                f"Could not create PVC {self.pvc_name}",
                timeout=self.k8s_api_request_retry_timeout)

    async def _start(self):
        # KubeSpawner's start as a task of its own, so a bundle that fails while the pod
        # starts can end it at once (_end_start_on_bundle_failure): the user reads why
        # within seconds, not once a pod that will be deleted anyway is ready
        # It also ends that task's wait for the pod once the pod is seen running
        # (_end_wait_when_running), and returns what KubeSpawner's start would have
        pod_start = self._pod_start = asyncio.ensure_future(super()._start())
        self._bundle_failure = None
        self._seen_running = None
        try:
            result = await pod_start
        except BaseException:
            failure = self._bundle_failure
            if failure is not None:  # ended by the bundle: its sentence, not a cancellation
                self._bundle_finish = None
                await self._delete_pod_of_failed_start()
                raise self._as_http_error(failure) from failure
            pod = self._seen_running
            if pod is None or not pod_start.cancelled() or _being_cancelled():
                await self._finish_bundle(wait=False)  # failed already: let it finish alone
                raise
            result = self._started(pod)
        finally:
            self._pod_start = None
            self._stop_running_wait()
            self._drop_early_pod_manifest()
        await self._finish_bundle(wait=True)
        return result

    _seen_running: dict | None = None  # the running pod that ended KubeSpawner's wait
    _running_wait: asyncio.Future | None = None

    def _ends_wait_when_running(self) -> bool:
        """Whether the start may end KubeSpawner's wait for its pod: nothing of KubeSpawner's
        runs between the pod's create and that wait (no pod hook, Service or certificate)."""
        return (self.pod_running_check_seconds > 0 and not self.after_pod_created_hook
                and not self.services_enabled and not self.internal_ssl)

    def _wait_until_running(self) -> None:
        """Called once the pod is made: ends KubeSpawner's wait when the pod runs."""
        self._stop_running_wait()
        wait = running.RunningWatch.of(self.pod_reflector).wait(
            servers.reflector_key(self.namespace, self.pod_name), self.is_pod_running,
            self.pod_running_check_seconds)
        wait.add_done_callback(self._end_wait_when_running)
        self._running_wait = wait

    def _end_wait_when_running(self, wait: asyncio.Future) -> None:
        pod_start = self._pod_start
        if (wait.cancelled() or pod_start is None or pod_start.done()
                or self._bundle_failure is not None):
            return
        self._seen_running = wait.result()
        pod_start.cancel()

    def _stop_running_wait(self) -> None:
        wait, self._running_wait = self._running_wait, None
        if wait is not None and not wait.done():
            wait.cancel()

    def _started(self, pod: dict) -> str:
        """What KubeSpawner's start returns once its wait saw `pod` running."""
        self.pod_id = pod["metadata"]["uid"]
        return self._get_pod_url(pod)

    async def _delete_pod_of_failed_start(self) -> None:
        """The pod of a start the bundle ended, deleted (it never served: no grace) before
        the start fails. JupyterHub's own cleanup stop then finds nothing to wait for: while
        it runs (after the start failed) and outlasts the spawn request's
        `slow_spawn_timeout`, JupyterHub 5 and 6 answer that request with a bare 500
        (`InvalidStateError` in their handler) or "not starting"; while the start runs, the
        request says "slow to start" and the progress stream gets the sentence. A delete that
        fails is logged; that stop tries again."""
        try:
            await asyncio.wait_for(self.stop(now=True), self.k8s_api_request_retry_timeout)
        except Exception as e:  # noqa: BLE001 - JupyterHub's stop deletes it too
            self.log.warning("%s: deleting the pod of a failed start: %s", self._log_name, e)

    _pod_start: asyncio.Future | None = None  # KubeSpawner's _start while it runs
    _bundle_failure: BaseException | None = None  # why _start ended it

    @staticmethod
    def _as_http_error(e: BaseException) -> BaseException:
        """A bundle's failure as a start raises it: its sentence, with its status."""
        return web.HTTPError(e.status, e.message) if isinstance(e, BundleError) else e

    def _end_start_on_bundle_failure(self, completion: asyncio.Future) -> None:
        """Done callback of the bundle's completion: a failure ends the start waiting for
        the pod (`_start` then deletes the pod, ready or not)."""
        if completion.cancelled() or completion.exception() is None:
            return
        pod_start = self._pod_start
        if pod_start is not None and not pod_start.done():
            self._bundle_failure = completion.exception()
            pod_start.cancel()

    async def _finish_bundle(self, wait: bool) -> None:
        provisioner, self._bundle_finish = self._bundle_finish, None
        if provisioner is None:
            return
        try:
            await provisioner.finish(wait)
        except BundleError as e:
            raise self._as_http_error(e) from e

    async def _make_create_pod_request(self, pod, request_timeout):
        created = await super()._make_create_pod_request(pod, request_timeout)
        if created and self._pod_start is not None and self._ends_wait_when_running():
            self._wait_until_running()
        if created and self._bundle_finish is not None:
            self._bundle_finish.finish_soon()  # the bundle's rest runs while the pod starts
            if self._bundle_finish.completion is not None:
                self._bundle_finish.completion.add_done_callback(
                    self._end_start_on_bundle_failure)
        return created

    def _home_claim_beside_bundle(self):
        """KubeSpawner's home claim create, to run with the bundle's objects (a round earlier
        than KubeSpawner makes it); None when KubeSpawner's own step must make it: no claim
        to make, a PersistentVolume to make first, or a claim of 6.x naming to look for."""
        plan = self._plan
        if (not self.storage_pvc_ensure or self._pvc_exists or plan is None
                or plan.pv is not None
                or getattr(self, "_state_kubespawner_version", None) == "unknown"):
            return None

        async def create() -> None:
            await exponential_backoff(
                partial(self._make_create_pvc_request, self.get_pvc_manifest(),
                        self.k8s_api_request_timeout),
                f"Could not create PVC {self.pvc_name}",
                timeout=self.k8s_api_request_retry_timeout)
            self._pvc_exists = True  # KubeSpawner's PVC step is skipped

        return create

    async def _ensure_home_volume(self, namespace_object: dict) -> None:
        """The user's PV (if any) and their home directory, made once and recorded."""
        plan = self._plan
        if plan is None or plan.home_root is None:
            return
        want = homedir.owner(self.uid, self.gid)
        key = f"{plan.pv or plan.volumes}|{want}"
        if self._home_done == key and (plan.pv is None or self._pvc_exists):
            return
        if plan.pv is not None:
            self.report(f"Preparing home volume {plan.pv['metadata']['name']}")
            try:
                _, current = await self.kube.ensure(plan.pv)
            except ApiException as e:
                raise BundleError("Could not prepare your home volume: "
                                  f"{api_error_message(e)}") from e
        else:
            current = namespace_object
        recorded = ((current.get("metadata") or {}).get("annotations") or {}).get(
            homedir.PROVISIONED_ANNOTATION)
        if recorded != want:
            self.report(f"Creating your home directory {plan.home_dir} (owner {want})")
            job = homedir.home_job(plan, username=self.user.name,
                                   namespace=self.home_provisioner_namespace,
                                   image=self.home_init_image, uid=self.uid, gid=self.gid,
                                   placement=homedir.spawner_placement(self))
            await homedir.run_home_job(self.kube, job, self.home_provisioner_timeout_seconds,
                                       self.log)
            kind = "PersistentVolume" if plan.pv is not None else "Namespace"
            name = plan.pv["metadata"]["name"] if plan.pv is not None else self.namespace
            try:
                await self.kube.patch(kind, name, None, {"metadata": {"annotations": {
                    homedir.PROVISIONED_ANNOTATION: want}}})
            except ApiException as e:
                raise BundleError("Could not record your home directory: "
                                  f"{api_error_message(e)}") from e
        self._home_done = key

    async def get_pod_manifest(self):
        early, self._early_pod_manifest = self._early_pod_manifest, None
        if early is not None:  # built while the bundle's requests were on their way
            return await early
        return await self._pod_manifest()

    # the pod's manifest, built while _ensure_namespace waits for the API server: KubeSpawner
    # asks for it once the namespace and claim are made, and building it then adds its CPU
    # time (a few ms) to the time until the pod is made
    _early_pod_manifest: asyncio.Future | None = None

    def _build_pod_manifest_early(self) -> None:
        """Start building the pod's manifest now, unless KubeSpawner may still change what it
        depends on before asking for it (its claim name, for state older than KubeSpawner 7)."""
        if getattr(self, "_state_kubespawner_version", None) == "unknown":
            return
        self._drop_early_pod_manifest()
        self._early_pod_manifest = asyncio.ensure_future(self._pod_manifest())

    def _drop_early_pod_manifest(self) -> None:
        """A start that ended before asking for its manifest: nothing left running or unread."""
        early, self._early_pod_manifest = self._early_pod_manifest, None
        if early is None:
            return
        if early.done():
            if not early.cancelled():
                early.exception()  # read, so it is not reported as never retrieved
        else:
            early.cancel()

    async def _pod_manifest(self):
        pod = await super().get_pod_manifest()
        plan = self._plan or storage.StoragePlan("none")
        shared = self._shared_plan()
        volumes, mounts = shared.volumes, shared.volume_mounts
        spec = pod.spec
        spec.volumes = list(spec.volumes or []) + plan.volumes + volumes
        container = spec.containers[0]
        container.volume_mounts = list(container.volume_mounts or []) + plan.volume_mounts + mounts
        spec.init_containers = plan.init_containers + list(spec.init_containers or [])
        if plan.node_selector:
            spec.node_selector = {**(spec.node_selector or {}), **plan.node_selector}
        if self.notebook_env_secret:  # read when the pod starts: a change needs a restart
            container.env_from = list(container.env_from or []) + [V1EnvFromSource(
                secret_ref=V1SecretEnvSource(name=self.notebook_env_secret, optional=True))]
        if self.notebook_files_secret and self.notebook_files_dir:  # kept fresh by the kubelet
            spec.volumes.append(V1Volume(name=NOTEBOOK_FILES_VOLUME, secret=V1SecretVolumeSource(
                secret_name=self.notebook_files_secret, optional=True)))
            container.volume_mounts.append(V1VolumeMount(
                name=NOTEBOOK_FILES_VOLUME, mount_path=self.notebook_files_dir, read_only=True))
            container.env = list(container.env or []) + [
                V1EnvVar(name="KDASH_SERVICES_DIR", value=self.notebook_files_dir)]
        if plan.pvc and servers.one_node(plan.pvc["access_modes"]):
            servers.colocate(pod, self.pvc_name)  # the user's servers share one home
        self.add_s3_datasets(pod)
        if self.pod_security_level == "restricted":
            _make_restricted(pod)
        return pod

    def get_env(self):
        env = super().get_env()
        if self.uid is not None and not callable(self.uid):
            env["NB_UID"] = str(self.uid)
        if self.gid is not None and not callable(self.gid):
            env["NB_GID"] = str(self.gid)
        return env

    async def progress(self):
        """The bundle steps first, then KubeSpawner's pod events."""
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            done = self._start_future is not None and self._start_future.done()
            if self._bundle_finished or done:
                break
            self._events_changed.clear()
            try:
                async with asyncio.timeout(0.5):  # wait_for (3.11) can lose a cancel
                    await self._events_changed.wait()
            except TimeoutError:
                pass
        for event in self._events[sent:]:
            yield event
        async for event in super().progress():
            yield event

    # --- stopping -------------------------------------------------------------------------

    async def _make_delete_pod_request(self, pod_name, delete_options, grace_seconds,
                                       request_timeout):
        """A stop after a start that failed before the namespace was ours (a pull secret
        out of reach, say) is refused (403: the hub's rights there come with the bundle),
        not 404: the pod the hub can't have made is gone if its cluster-wide watch agrees."""
        try:
            return await super()._make_delete_pod_request(pod_name, delete_options,
                                                          grace_seconds, request_timeout)
        except ApiException as e:
            key = servers.reflector_key(self.namespace, pod_name)
            if e.status != 403 or key in self.pod_reflector.pods:
                raise
            self.log.info("No pod %s to delete (the hub holds no rights in %s yet)", key,
                          self.namespace)
            return True

    # --- user deletion --------------------------------------------------------------------

    async def revoke_cluster_access(self) -> bool:
        """Delete the user's ServiceAccount (their tokens die with it); see revoke.py."""
        if not self.enable_user_namespaces:
            return False
        return await revoke_service_account(self.kube, self.namespace,
                                            self.user_service_account, self.user.name,
                                            self.log)

    async def delete_forever(self):
        """Keep user data unless the admin allows deletion; delete only what is ours."""
        if self.name:  # its claim is the user's home (servers.py): KubeSpawner would delete it
            self.log.info("Keeping %s's home %s: named server %s shares it", self.user.name,
                          self.pvc_name, self.name)
            return
        await super().delete_forever()
        if self.name or not self.enable_user_namespaces:
            return
        await self.revoke_cluster_access()
        if not self.delete_namespace_on_user_delete:
            self.log.info("Keeping namespace %s of deleted user %s "
                          "(delete_namespace_on_user_delete is off)", self.namespace,
                          self.user.name)
            return
        ns = await self.kube.get("Namespace", self.namespace)
        if ns is None:
            return
        labels = (ns.get("metadata") or {}).get("labels") or {}
        if not L.is_owned_by(ns, self.user.name) or labels.get(L.COMPONENT) != bundle.COMPONENT:
            self.log.warning("Not deleting namespace %s: it is not kdash-hub's namespace of %s",
                             self.namespace, self.user.name)
            return
        self.log.info("Deleting namespace %s of deleted user %s", self.namespace, self.user.name)
        await self.kube.delete("Namespace", self.namespace)
