"""The launcher's settings (traitlets): where templates come from, the user's storage,
namespaces, TTLs, who may see what, the record signing key and what the proxy passes on."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from kdash_hub import naming
from kdash_hub.templating import DEFAULT_ALLOWED_KINDS

from .signing import RecordSigner, make_signer

CATALOG_DIR = Path(__file__).parent / "catalog"
SERVICE_NAME = "kdash-launcher"
# what browsers and programs send that apps need; never credentials for the hub
DEFAULT_FORWARD_HEADERS = (
    "Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Content-Type",
    "Content-Language", "Content-Disposition", "Cookie", "DNT", "If-Match",
    "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Last-Event-ID",
    "Origin", "Pragma", "Range", "Referer", "User-Agent", "X-Requested-With",
    "X-XSRFToken", "X-CSRFToken", "X-CSRF-Token",
)


class LauncherSettings(Configurable):
    """Every setting of kdash-launcher (`c.LauncherSettings.<name>` in its config file)."""

    namespace_prefix = Unicode(
        "kdash-", help="Prefix of user namespaces; the same as the spawner's (`kdash-alice`)."
    ).tag(config=True)
    template_dirs = List(
        Unicode(), default_value=[str(CATALOG_DIR)],
        help="Directories of template files (*.yaml). The shipped catalog is the default.",
    ).tag(config=True)
    template_configmap_namespace = Unicode(
        "", help="Namespace of ConfigMaps holding templates (each *.yaml key is one template);"
                 " empty: don't read templates from ConfigMaps.",
    ).tag(config=True)
    template_configmap_selector = Unicode(
        "kdash-hub.io/templates=true", help="Label selector of the template ConfigMaps.",
    ).tag(config=True)
    allowed_kinds = List(
        Unicode(), default_value=list(DEFAULT_ALLOWED_KINDS),
        help="Kinds a template may contain; a template with any other kind is rejected at load."
             " Only namespaced kinds kdash-hub knows can be allowed.",
    ).tag(config=True)
    skip_ingress = Bool(
        True, help="Leave out the Ingress documents of Karvdash templates (the launcher's"
                   " proxy gives access instead). Off, or with Ingress an allowed kind, an"
                   " Ingress is checked like any other kind.",
    ).tag(config=True)
    private_volume_claim_template = Unicode(
        "claim-{username}",
        help="PRIVATE_VOLUME: the claim of the user's home volume. `{username}` expands as in"
             " KubeSpawner (`safe_slug(name, 48)`), so the default is the claim KDashSpawner"
             " makes with its default `pvc_name_template` (`claim-{user_server}`) for the"
             " default server. Set both together.",
    ).tag(config=True)
    private_volume_sub_path_template = Unicode(
        "",
        help="PRIVATE_SUBPATH: a directory inside the home claim to mount instead of its"
             " root (`{home_dir}` = the spawner's home directory name). Keep it empty with the"
             " spawner's presets: every preset's claim is the user's own home (nfs and local"
             " claims are bound to the user's own directory on the export).",
    ).tag(config=True)
    shared_volume_claim = Unicode(
        "", help="SHARED_VOLUME: the claim of the shared/dataset volume in user namespaces"
                 " (empty when there is none).",
    ).tag(config=True)
    private_dir = Unicode(
        "/home/jovyan", help="PRIVATE_DIR: where the private volume is mounted in notebooks.",
    ).tag(config=True)
    shared_dir = Unicode(
        "/home/jovyan/shared", help="SHARED_DIR: where the shared volume is mounted.",
    ).tag(config=True)
    registry = Unicode("docker.io", help="REGISTRY: the image registry templates pull from.").tag(
        config=True)
    public_url = Unicode(
        "", help="The hub's public URL (https://hub.example.org); HOSTNAME and URL come from it.",
    ).tag(config=True)
    service_prefix = Unicode(
        help="URL prefix of the launcher (from JUPYTERHUB_SERVICE_PREFIX).",
    ).tag(config=True)

    @default("service_prefix")
    def _default_prefix(self) -> str:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
        return prefix if prefix.endswith("/") else prefix + "/"

    default_ttl = Unicode(
        "", help="TTL of instances whose template sets none (e.g. 8h); empty: no expiry.",
    ).tag(config=True)
    max_ttl = Unicode(
        "7d", help="The longest TTL a user can ask for or extend to (from now); every instance"
                   " then expires within it (template defaults are capped). Empty: no limit,"
                   " and templates without a ttl never expire.",
    ).tag(config=True)
    max_job_ttl_after_finished = Unicode(
        "1d", help="A finished Job of an instance (a template's Job, or a CronJob's run) is"
                   " deleted by Kubernetes at most this long after it finished"
                   " (ttlSecondsAfterFinished: a template's shorter value is kept, a longer"
                   " or missing one becomes this). Empty: leave the templates' values.",
    ).tag(config=True)
    max_instances_per_user = Int(20, help="Instances one user may have at once.").tag(
        config=True)
    admin_access = Bool(
        True, help="Hub admins see and manage everyone's instances (list, details, stop, delete).",
    ).tag(config=True)
    admin_proxy_access = Bool(
        False, help="Hub admins may also use the proxy to other users' instances.",
    ).tag(config=True)
    proxy_pod_networks = List(
        Unicode(),
        help="CIDRs (the cluster's pod networks, e.g. 10.244.0.0/16) a pod IP must be in for"
             " the proxy to connect to it. Empty: any address a pod can have (never"
             " link-local, multicast or unspecified ones). The proxy connects only to the"
             " pod IP of a ready pod owned by the instance's own workload, never to a"
             " Service name.",
    ).tag(config=True)
    proxy_forward_headers = List(
        Unicode(), default_value=list(DEFAULT_FORWARD_HEADERS),
        help="Request headers the proxy passes on to instances (case-insensitive); every"
             " other header is dropped. `Cookie` is passed without the hub's and the"
             " launcher's own cookies; `Authorization` is never passed, even when listed.",
    ).tag(config=True)
    record_signing_key = Unicode(
        "",
        help="The key (at least 32 characters) that signs instance records, shared by the"
             " launcher and the culler. Empty: `record_signing_key_file`, then the"
             " environment ($KDASH_RECORD_SIGNING_KEY, $KDASH_RECORD_SIGNING_KEY_FILE),"
             " else a random key per process (the demo and the tests; records then don't"
             " survive a restart). Keep it in a Kubernetes Secret.",
    ).tag(config=True)
    record_signing_key_file = Unicode(
        "", help="A file holding the record signing key (a mounted Kubernetes Secret).",
    ).tag(config=True)
    record_previous_signing_keys = List(
        Unicode(),
        help="Keys records signed before a key rotation may carry: they still verify, and"
             " are signed with `record_signing_key` when next written.",
    ).tag(config=True)

    ensure_namespace = Bool(
        False, help="Where the hub has no namespace endpoint (a hub without KDashSpawner and"
                    " its namespace_api): create a missing user namespace bare, with no quota,"
                    " limits or network policy. Off by default, and never needed with"
                    " KDashSpawner: the launcher asks the hub, which makes the whole bundle"
                    " through the spawner's code; without the endpoint a launch before the"
                    " first notebook start is refused with a message. The launcher's"
                    " ServiceAccount can't create namespaces (helm-values/rbac), so this is"
                    " for test clusters only.",
    ).tag(config=True)
    namespace_request_timeout = Float(
        120.0, help="Seconds the launcher waits for the hub to make a user's namespace bundle"
                    " (a first one waits for the API server's RBAC: up to half a minute on a"
                    " busy cluster).",
    ).tag(config=True)
    log_lines = Int(200, help="Container log lines shown in the details.").tag(config=True)
    user_service_account = Unicode(
        "kdash-user", help="The ServiceAccount the spawner's bundle makes in each user"
                           " namespace (KDashSpawner.user_service_account): the kubeconfig"
                           " download mints its tokens.",
    ).tag(config=True)
    kubeconfig_server_url = Unicode(
        "", help="The API server URL users' kubectl reaches (https://...). Empty: the"
                 " kubeconfig download is off (its endpoint answers 501).",
    ).tag(config=True)
    kubeconfig_ca_file = Unicode(
        "", help="PEM file of the CA that signed the API server's certificate, embedded in"
                 " downloaded kubeconfigs. Empty: the CA the launcher's own Kubernetes client"
                 " trusts (in a pod, the ServiceAccount's ca.crt).",
    ).tag(config=True)
    kubeconfig_token_seconds = Int(
        3600, help="Lifetime of the token in a downloaded kubeconfig (TokenRequest"
                   " expirationSeconds; at least 600, the API server's minimum).",
    ).tag(config=True)

    @validate("kubeconfig_token_seconds")
    def _check_token_seconds(self, proposal: dict) -> int:
        if proposal["value"] < 600:
            raise TraitError("kubeconfig_token_seconds must be at least 600")
        return proposal["value"]

    reconcile_interval = Float(
        60.0, help="Seconds between two reconciler passes (one runs at start-up too): a"
                   " launch cut short (a crash) is finished or undone as its record says,"
                   " objects without a record are reported. 0: only at start-up.",
    ).tag(config=True)
    reconcile_grace = Float(
        0.0, help="Seconds a record still `creating` is left alone before the reconciler"
                  " acts on it. The launcher knows its own launches in progress; raise this"
                  " only when several launcher processes share the cluster.",
    ).tag(config=True)

    # --- S3 datasets (datasets.py) ---------------------------------------------------------
    datasets_secret = Unicode(
        "kdash-datasets", help="The Secret of S3 dataset files KDashSpawner writes into user"
                               " namespaces (KDashSpawner.s3_datasets_secret; its variables in"
                               " `<name>-env`): templates with `datasets: true` get both."
                               " Empty: never.",
    ).tag(config=True)
    datasets_dir = Unicode(
        "/etc/kdash/datasets", help="Where side services find the dataset files (as"
                                    " KDashSpawner.s3_datasets_dir).",
    ).tag(config=True)

    datasets_declared = List(
        help="The admin's S3 datasets as KDashSpawner.s3_datasets declares them (the same"
             " list: only names, buckets, endpoints, regions, groups and the names of the"
             " hub's key Secrets are used, never the keys): the Datasets page lists the ones"
             " a user's hub groups give them. Checked like the spawner's at start.",
    ).tag(config=True)
    datasets_user_secret = Unicode(
        "", help="KDashSpawner.s3_datasets_user_secret: the Secret of the user's namespace"
                 " listing their own datasets, which the Datasets page and API add to and"
                 " remove from. Empty: users can't add datasets (the page says so, the API"
                 " answers 403).",
    ).tag(config=True)

    @validate("datasets_declared")
    def _check_datasets_declared(self, proposal: dict) -> list:
        from kdash_hub.spawner.datasets import DatasetError, parse

        try:
            parse(proposal["value"])
        except DatasetError as e:
            raise TraitError(f"LauncherSettings.datasets_declared: {e}") from None
        return proposal["value"]

    @validate("datasets_user_secret")
    def _check_datasets_user_secret(self, proposal: dict) -> str:
        from kdash_hub.spawner.datasets import K8S_NAME_RE, env_secret_name

        name = proposal["value"]
        if name and (not K8S_NAME_RE.fullmatch(name) or len(name) > 240 or name in (
                self.datasets_secret, env_secret_name(self.datasets_secret))):
            raise TraitError(f"LauncherSettings.datasets_user_secret: {name!r} is not a"
                             " Secret name of the user's own (nor the hub's kdash-datasets)")
        return name

    # --- public URLs (publicurl.py, forwardauth.py) ---------------------------------------
    public_domain = Unicode(
        "", help="The wildcard DNS domain of public URLs (apps.example.org: `*.apps.example.org`"
                 " points at the ingress controller). A template opts in by annotating the"
                 " Service to publish with `kdash-hub.io/public: <port name or number>`; its"
                 " instances then get an Ingress at `<instance>--<user>.<domain>` (hashed when"
                 " that doesn't fit a 63-character label) that only the owner gets through."
                 " Empty: no public URLs (the annotation is ignored).",
    ).tag(config=True)
    public_tls = Unicode(
        "cert-manager",
        help="TLS of public hosts: `cert-manager` (the Ingress asks `public_tls_issuer` for a"
             " certificate of its host), `wildcard-secret` (the Secret `public_tls_secret` of"
             " the wildcard certificate, which must exist in each user namespace) or `none`"
             " (plain HTTP: tests only).",
    ).tag(config=True)
    public_tls_issuer = Unicode(
        "", help="cert-manager ClusterIssuer of public hosts (annotation"
                 " `cert-manager.io/cluster-issuer`); with public_tls = cert-manager.",
    ).tag(config=True)
    public_tls_secret = Unicode(
        "", help="The Secret holding the wildcard certificate of public_domain; with"
                 " public_tls = wildcard-secret.",
    ).tag(config=True)
    public_ingress_class = Unicode(
        "", help="spec.ingressClassName of public Ingresses (nginx, traefik); empty: the"
                 " cluster's default class.",
    ).tag(config=True)
    public_forward_auth = Unicode(
        "nginx", help="The ingress controller's forward-auth flavour the Ingress is annotated"
                      " for, and which header names the original host: `nginx` (ingress-nginx"
                      " `auth-url`/`auth-signin`; the host from X-Original-URL, which nginx"
                      " sets itself) or `traefik` (a ForwardAuth Middleware, see"
                      " public_traefik_middleware; the host from X-Forwarded-Host, which"
                      " Traefik overwrites unless trustForwardHeader is on: keep it off).",
    ).tag(config=True)
    public_auth_url = Unicode(
        "", help="The launcher's forward-auth endpoint as the ingress controller reaches it"
                 " (http://kdash-launcher.jhub.svc:10101/services/kdash-launcher/forward-auth)."
                 " Empty: public_url + the service prefix + `forward-auth`.",
    ).tag(config=True)
    public_traefik_middleware = Unicode(
        "", help="With public_forward_auth = traefik: the ForwardAuth Middleware (made by the"
                 " admin, address = public_auth_url) as the router annotation names it,"
                 " `<namespace>-<name>@kubernetescrd`.",
    ).tag(config=True)

    @validate("public_domain")
    def _check_public_domain(self, proposal: dict) -> str:
        domain = proposal["value"].strip().rstrip(".").lower()
        labels = domain.split(".") if domain else []
        if domain and (len(domain) > 253 - 64 or not all(
                naming.is_dns1123_label(label) for label in labels)):
            raise TraitError(f"public_domain {proposal['value']!r} is not a DNS domain with room"
                             " for a 63-character label in front")
        return domain

    @validate("public_tls")
    def _check_public_tls(self, proposal: dict) -> str:
        if proposal["value"] not in ("cert-manager", "wildcard-secret", "none"):
            raise TraitError("public_tls must be cert-manager, wildcard-secret or none")
        return proposal["value"]

    @validate("public_forward_auth")
    def _check_forward_auth(self, proposal: dict) -> str:
        if proposal["value"] not in ("nginx", "traefik"):
            raise TraitError("public_forward_auth must be nginx or traefik")
        return proposal["value"]

    def signer(self) -> RecordSigner:
        return make_signer(self.record_signing_key, self.record_signing_key_file,
                           self.record_previous_signing_keys)

    def pod_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.proxy_pod_networks]

    def user_namespace(self, username: str) -> str:
        return naming.user_namespace(username, self.namespace_prefix)

    def private_sub_path(self, username: str) -> str:
        from kdash_hub.spawner.storage import home_dir

        return self.private_volume_sub_path_template.format(home_dir=home_dir(username))

    def private_volume(self, username: str) -> str:
        from kubespawner.slugs import safe_slug

        return self.private_volume_claim_template.format(
            username=safe_slug(username, max_length=48))
