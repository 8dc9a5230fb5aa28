"""The Helm values deploy the pack: valid for the chart, and meaningful to the pack's classes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from jupyterhub.scopes import scope_definitions

from kdash_hub import z2jh
from tests.fixtures.helm import (
    EXAMPLES,
    HELM_VALUES,
    REPO,
    VALUES,
    chart_values,
    helm_merge,
    load_yaml,
    pack_values,
    schema_errors,
)

EXPECTED_EXAMPLES = {
    "ldap-only", "oidc-only", "ldap-and-oidc", "nfs-homes", "local-scratch", "gpu-profiles",
    "group-quotas", "services-in-hub-pod",
}
RBAC_DIR = HELM_VALUES / "rbac"
SERVICES_DIR = HELM_VALUES / "services"
IN_HUB_POD = HELM_VALUES / "examples" / "services-in-hub-pod.yaml"
E2E_VALUES = HELM_VALUES / "e2e" / "kind-values.yaml"


def test_every_example_overlay_is_there():
    assert {p.stem for p in EXAMPLES} >= EXPECTED_EXAMPLES


def test_helm_merge_is_helms():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"d": 1}}
    over = {"a": {"y": [3], "z": 2}, "b": None, "c": "flat"}
    assert helm_merge(base, over) == {"a": {"x": 1, "y": [3], "z": 2}, "c": "flat"}
    assert base["a"]["y"] == [1, 2]  # not modified


def test_values_validate_against_the_chart_schema():
    assert schema_errors(chart_values()) == []


@pytest.mark.parametrize("overlay", EXAMPLES + [E2E_VALUES], ids=lambda p: p.stem)
def test_overlay_over_values_validates_against_the_chart_schema(overlay: Path):
    assert schema_errors(chart_values(overlay)) == []


def test_schema_check_catches_a_misplaced_setting():
    values = helm_merge(chart_values(), {"hub": {"confg": {"JupyterHub": {}}}})
    errors = schema_errors(values)
    assert len(errors) == 1 and "confg" in errors[0]


@pytest.mark.parametrize("overlay", [None, *EXAMPLES], ids=lambda p: p.stem if p else "values")
def test_custom_kdash_loads_into_the_pack_classes(overlay: Path | None):
    values = pack_values(*([overlay] if overlay else []))
    sections = z2jh.custom_config(values["custom"]["kdash"])
    assert set(sections) <= {s.name for s in z2jh.SECTIONS}
    for section in z2jh.SECTIONS:
        classes = {cls.__name__ for cls in z2jh.section_classes(section)}
        assert set(sections.get(section.name, {})) <= classes


def test_a_wrong_key_is_reported_with_its_path_and_the_valid_keys():
    custom = pack_values()["custom"]["kdash"]
    custom = helm_merge(custom, {"spawner": {"enable_user_namspaces": True}})
    with pytest.raises(z2jh.CustomConfigError) as info:
        z2jh.custom_config(custom)
    message = str(info.value)
    assert "custom.kdash.spawner.enable_user_namspaces: unknown setting" in message
    assert "Did you mean enable_user_namespaces" in message
    assert "Valid settings:" in message and "profile_list" in message


def test_an_unknown_section_and_a_wrong_type_are_reported():
    with pytest.raises(z2jh.CustomConfigError) as info:
        z2jh.custom_config({"spawnr": {}, "spawner": {"enable_user_namespaces": "maybe"}})
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("custom.kdash.spawnr: unknown setting")
    assert "spawner" in problems[0]
    assert problems[1].startswith("custom.kdash.spawner.enable_user_namespaces:")


def test_hub_config_sections_name_real_settings():
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from kubespawner import KubeSpawner

    classes = {"JupyterHub": JupyterHub, "Authenticator": Authenticator,
               "KubeSpawner": KubeSpawner}
    config = pack_values()["hub"]["config"]
    assert config["JupyterHub"]["spawner_class"] == "kdash"
    assert config["JupyterHub"]["authenticator_class"] == "kdash"
    for section, settings in config.items():
        valid = classes[section].class_traits(config=True)
        assert set(settings) <= set(valid), section


def test_services_roles_and_the_chart_culler():
    values = pack_values()
    hub = values["hub"]
    assert values["cull"]["enabled"] is False
    assert set(hub["services"]) == {"kdash-launcher", "kdash-culler"}
    # by default the services are Deployments of their own: the hub only knows them
    for name, service in hub["services"].items():
        assert "command" not in service, name
    in_pod = pack_values(IN_HUB_POD)["hub"]["services"]
    for name, service in in_pod.items():
        command = service["command"]
        assert command[:2] == ["python3", "-m"], name
        assert importlib.util.find_spec(command[2]) is not None, command
        assert command[2] == z2jh.SERVICE_MODULES[name]
    assert "--ip=0.0.0.0" in in_pod["kdash-launcher"]["command"]
    roles = hub["loadRoles"]
    assert roles["kdash-culler"]["services"] == ["kdash-culler"]
    for role in roles.values():
        for scope in role["scopes"]:
            assert scope.split("!")[0] in scope_definitions, scope
    culler = set(roles["kdash-culler"]["scopes"])
    assert {"list:users", "read:users:activity", "read:servers", "delete:servers"} <= culler
    for role in ("user", "server"):
        assert "access:services!service=kdash-launcher" in roles[role]["scopes"]
    # the launcher's login may read and extend its user's own servers' lifetimes, in the
    # chart as in launcher_service(), and nothing more
    from services.launcher.hubconfig import launcher_service
    from services.launcher.serverlifetime import OAUTH_SCOPES
    launcher = hub["services"]["kdash-launcher"]
    assert launcher["oauth_client_allowed_scopes"] == list(OAUTH_SCOPES)
    assert launcher_service()["oauth_client_allowed_scopes"] == list(OAUTH_SCOPES)
    assert all(scope.endswith("!user") for scope in OAUTH_SCOPES)


def test_network_policy_lets_the_hub_and_proxy_reach_user_namespaces():
    values = pack_values()
    managed = {"app.kubernetes.io/managed-by": "kdash-hub"}
    for netpol in (values["hub"]["networkPolicy"], values["proxy"]["chp"]["networkPolicy"]):
        selectors = [to.get("namespaceSelector", {}).get("matchLabels")
                     for rule in netpol["egress"] for to in rule["to"]]
        assert managed in selectors
    assert values["hub"]["networkPolicy"]["interNamespaceAccessLabels"] == "accept"
    # in the hub pod, the launcher listens on an extra port of the hub's Service
    in_pod = pack_values(IN_HUB_POD)["hub"]
    launcher_port = int(in_pod["services"]["kdash-launcher"]["url"].rsplit(":", 1)[1])
    assert launcher_port in [p["port"] for p in in_pod["service"]["extraPorts"]]
    ingress_ports = [p["port"] for rule in in_pod["networkPolicy"]["ingress"]
                     for p in rule["ports"]]
    assert launcher_port in ingress_ports


def test_extra_config_applies_custom_kdash():
    snippet = pack_values()["hub"]["extraConfig"]["kdash.py"]
    assert "apply_custom_config(c, get_config(\"custom.kdash\", {}))" in snippet


def test_hub_image_builds_on_the_chart_hub_image():
    dockerfile = (HELM_VALUES / "hub-image" / "Dockerfile").read_text()
    assert "ARG HUB_IMAGE=quay.io/jupyterhub/k8s-hub:4.4.0" in dockerfile
    assert "pip install" in dockerfile
    values = load_yaml(VALUES)
    assert values["hub"]["image"]["name"]


# --- RBAC: exactly what the code does, per identity and scope ------------------------------

HUB_SA = ("jhub", "hub")
LAUNCHER_SA = ("jhub", "kdash-launcher")
CULLER_SA = ("jhub", "kdash-culler")
CODE_DIRS = {"hub": ["spawner"], "launcher": ["services/launcher"],
             "culler": ["services/culler", "services/launcher/lifecycle.py"]}


def manifests(directory: Path) -> list[dict]:
    return [doc for path in sorted(directory.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str, directory: Path = RBAC_DIR) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests(directory) if d["kind"] == kind}


def rules_of(role: dict) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) a role grants (resourceNames-limited rules apart)."""
    return {(group, resource, verb) for rule in role["rules"] if not rule.get("resourceNames")
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def granted_to(sa: tuple[str, str]) -> dict[str, set[tuple[str, str, str]]]:
    """What `sa` holds cluster-wide (ClusterRoleBindings) and in a user namespace (the
    ClusterRoles the spawner binds there, KDashSpawner's defaults)."""
    from kdash_hub.spawner import KDashSpawner

    roles = by_kind("ClusterRole")
    subject = {"kind": "ServiceAccount", "namespace": sa[0], "name": sa[1]}
    cluster: set = set()
    for binding in by_kind("ClusterRoleBinding").values():
        if subject in binding["subjects"]:
            cluster |= rules_of(roles[binding["roleRef"]["name"]])
    bound = {KDashSpawner.hub_namespace_role.default_value: "hub",
             **KDashSpawner.class_traits()["service_cluster_roles"].default()}
    namespace: set = set()
    for role, name in bound.items():
        if name == sa[1]:
            namespace |= rules_of(roles[role])
    # Roles in the release namespace: the hub's home provisioner, optional extras
    own: set = set()
    for directory in (RBAC_DIR, SERVICES_DIR / "optional"):
        local = by_kind("Role", directory)
        for binding in by_kind("RoleBinding", directory).values():
            if subject in binding["subjects"]:
                own |= rules_of(local[binding["roleRef"]["name"]])
    return {"cluster": cluster, "namespace": namespace, "own": own}


def needs(kind: str, *verbs: str) -> set[tuple[str, str, str]]:
    from kdash_hub.kube import resource_for

    res = resource_for(kind)
    group = "" if res.api_version == "v1" else res.api_version.split("/")[0]
    return {(group, res.plural, verb) for verb in verbs}


def needed() -> dict[str, dict[str, set[tuple[str, str, str]]]]:
    """The table of what each identity needs, read from the code's own constants."""
    from kdash_hub.kube import _IMMUTABLE, RESOURCES
    from kdash_hub.services.launcher.lifecycle import SCALABLE, SUSPENDABLE
    from kdash_hub.spawner import bundle
    from kdash_hub.spawner.drift import WATCHED
    from kdash_hub.templating import DEFAULT_ALLOWED_KINDS

    spec = bundle.BundleSpec(
        username="u", namespace="kdash-u", hub_namespace="jhub", quota={}, limit_range={},
        hub_role="r", service_roles={"s": "s"},
        pull_secrets=[{"metadata": {"name": "p"}, "data": {}}],
        storage_objects=[{"kind": "PersistentVolume", "metadata": {"name": "v"}},
                         {"kind": "PersistentVolumeClaim", "metadata": {"name": "c"}}])
    ensured = {o["kind"] for o in bundle.bundle_objects(spec)}
    hub_cluster = (needs("Namespace", "get", "create", "patch", "delete")  # delete: opt-in
                   | needs("PersistentVolume", "get", "create", "patch")  # homes, shared
                   | needs("Node", "list")  # free GPUs
                   # KubeSpawner's reflectors with user namespaces: pods and events
                   | needs("Pod", "list", "watch") | needs("Event", "list", "watch")
                   | needs("RoleBinding", "create"))  # the first one in a new namespace
    for kind in WATCHED:
        hub_cluster |= needs(kind, "list", "watch")
    hub_namespace = (needs("Pod", "get", "create", "delete")  # KubeSpawner
                     | needs("PersistentVolumeClaim", "get", "create", "delete"))
    for kind in ensured - {"PersistentVolume"}:
        hub_namespace |= needs(kind, "get", "patch") | (
            set() if kind == "RoleBinding" else needs(kind, "create"))
    for kind in _IMMUTABLE:
        if RESOURCES[kind].namespaced:
            hub_namespace |= needs(kind, "delete")  # a changed roleRef: delete, make again
    hub_namespace |= needs("ServiceAccount", "delete")  # a deleted user's: spawner/revoke.py
    launcher_ns = needs("Secret", "get", "list", "create", "patch", "delete")  # records
    for kind in DEFAULT_ALLOWED_KINDS:
        launcher_ns |= needs(kind, "get", "create", "patch", "delete")
    for kind in ("Deployment", "StatefulSet", "Job", "CronJob", "Pod", "Event", "ReplicaSet"):
        launcher_ns |= needs(kind, "list")  # status page, proxy targets
    launcher_ns |= {("", "pods/log", "get")}
    # public URLs: an Ingress per published instance (list: the reconciler's orphan pass)
    launcher_ns |= needs("Ingress", "get", "list", "create", "patch", "delete")
    launcher_cluster = needs("Namespace", "get", "list")
    for kind in ("Deployment", "StatefulSet", "Job", "CronJob", "Pod", "Event"):
        launcher_cluster |= needs(kind, "list")  # an admin's list of everyone's instances
    culler_ns = needs("Secret", "get", "list", "patch", "delete")
    for kind in DEFAULT_ALLOWED_KINDS:
        if kind != "Secret":
            culler_ns |= needs(kind, "get", "delete")
    for kind in (*SCALABLE, *SUSPENDABLE):
        culler_ns |= needs(kind, "patch")  # scale to zero / suspend
    culler_ns |= needs("Ingress", "get", "delete")  # a published instance's, on expiry
    return {"hub": {"cluster": hub_cluster, "namespace": hub_namespace,
                    # the Job making a home directory, in the hub's namespace
                    "own": needs("Job", "get", "create", "delete")},
            "launcher": {"cluster": launcher_cluster, "namespace": launcher_ns,
                         # only with template_configmap_namespace (services/optional/)
                         "own": needs("ConfigMap", "list")},
            "culler": {"cluster": needs("Namespace", "list"), "namespace": culler_ns,
                       "own": set()}}


CALL = re.compile(r"(?:kube|resources)\.(get|list|create|patch|delete|ensure|replace)\(\s*"
                  r"\"([A-Z]\w+)\"")


def calls_in_code(identity: str) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) a literal-kind API call in the identity's code makes."""
    verbs = {"ensure": ("create", "get", "patch"), "replace": ("update",)}
    found: set = set()
    for entry in CODE_DIRS[identity]:
        path = REPO / entry
        for source in ([path] if path.is_file() else sorted(path.glob("*.py"))):
            for verb, kind in CALL.findall(source.read_text()):
                found |= needs(kind, *verbs.get(verb, (verb,)))
            if "/log\"" in source.read_text() or "/log'" in source.read_text():
                found |= {("", "pods/log", "get")}
    return found


def test_rbac_manifests_are_valid_kubernetes_and_never_use_wildcards():
    import kubernetes_validate

    docs = manifests(RBAC_DIR) + manifests(SERVICES_DIR) + manifests(
        SERVICES_DIR / "in-hub-pod") + manifests(SERVICES_DIR / "optional")
    assert {d["kind"] for d in docs} >= {
        "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
    roles = {**by_kind("ClusterRole"), **by_kind("Role")}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in by_kind(kind).values():
            assert binding["roleRef"]["name"] in roles, binding
    # "jhub" only ever names the release namespace (the docs' sed replaces every one)
    for path in [*RBAC_DIR.glob("*.yaml"), *SERVICES_DIR.rglob("*.yaml")]:
        for doc in yaml.safe_load_all(path.read_text()):
            text = json.dumps(doc)
            assert text.count("jhub") == (
                text.count('"namespace": "jhub"') + text.count("serviceaccount:jhub:")
                + text.count("== 'jhub'")), path


@pytest.mark.parametrize("identity", ["hub", "launcher", "culler"])
def test_each_identity_is_granted_exactly_what_the_code_does(identity):
    """Both ways: every right the code needs is granted, and nothing else is."""
    sa = {"hub": HUB_SA, "launcher": LAUNCHER_SA, "culler": CULLER_SA}[identity]
    got, want = granted_to(sa), needed()[identity]
    for scope in ("cluster", "namespace", "own"):
        assert got[scope] - want[scope] == set(), f"{identity} {scope}: more than needed"
        assert want[scope] - got[scope] == set(), f"{identity} {scope}: missing"
    # and the table covers every call the code makes with a literal kind
    made = calls_in_code(identity)
    assert made, identity
    assert made - (want["cluster"] | want["namespace"] | want["own"]) == set()


def test_no_service_holds_secrets_outside_the_packs_namespaces():
    for sa in (HUB_SA, LAUNCHER_SA, CULLER_SA):
        cluster = granted_to(sa)["cluster"]
        assert not {r for r in cluster if r[1] == "secrets"}, sa
        writes = {r for r in cluster if r[2] in ("create", "patch", "update", "delete")}
        assert writes <= (needs("Namespace", "create", "patch", "delete")
                          | needs("PersistentVolume", "create", "patch")
                          | needs("RoleBinding", "create")), sa
    # the hub's own namespace: only the home provisioner's Jobs beyond the chart's Role
    home = by_kind("Role")["kdash-hub-home-provisioner"]
    assert rules_of(home) == needs("Job", "get", "create", "delete")


def test_the_hub_may_bind_only_the_packs_roles():
    from kdash_hub.spawner import KDashSpawner

    hub = by_kind("ClusterRole")["kdash-hub"]
    bind = [r for r in hub["rules"] if r.get("verbs") == ["bind"]]
    assert len(bind) == 1 and bind[0]["resources"] == ["clusterroles"]
    shipped = {KDashSpawner.hub_namespace_role.default_value,
               KDashSpawner.user_cluster_role.default_value,
               *KDashSpawner.class_traits()["service_cluster_roles"].default()}
    assert set(bind[0]["resourceNames"]) == shipped
    assert shipped <= set(by_kind("ClusterRole"))
    # and the admission policy checks RoleBindings against the same list
    policy = by_kind("ValidatingAdmissionPolicy")["kdash-role-bindings"]
    text = json.dumps(policy["spec"]["validations"])
    for role in shipped:
        assert f"'{role}'" in text


def test_users_run_their_work_but_not_the_guardrails():
    user = rules_of(by_kind("ClusterRole")["kdash-user"])
    for kind in ("Pod", "Deployment", "StatefulSet", "Job", "Service", "ConfigMap", "Secret",
                 "PersistentVolumeClaim"):
        assert needs(kind, "get", "list", "create", "patch", "delete") <= user, kind
    assert ("batch", "cronjobs", "create") in user
    assert {("", "pods/log", "get"), ("", "pods/exec", "create"),
            ("", "pods/portforward", "create")} <= user
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    for kind in ("NetworkPolicy", "Role", "RoleBinding", "ResourceQuota", "LimitRange",
                 "ServiceAccount", "Namespace", "Ingress"):
        assert not needs(kind, *writes) & user, kind
    assert not {r for r in user if r[1] in ("endpoints", "endpointslices") and r[2] in writes}
    assert not {r for r in user if r[1] == "serviceaccounts/token"}


def test_admission_policies_are_keyed_on_the_packs_labels_and_identities():
    from kdash_hub import labels as L
    from kdash_hub.services.launcher.records import RECORD_COMPONENT, RECORD_PREFIX
    from kdash_hub.spawner import bundle

    policies = by_kind("ValidatingAdmissionPolicy")
    bindings = by_kind("ValidatingAdmissionPolicyBinding")
    assert set(policies) == set(bindings) == {
        "kdash-namespaces", "kdash-persistent-volumes", "kdash-role-bindings",
        "kdash-service-writes", "kdash-instance-records", "kdash-services"}
    ours = L.owner_labels("x", bundle.COMPONENT)
    for name, binding in bindings.items():
        assert binding["spec"]["policyName"] == name
        assert binding["spec"]["validationActions"] == ["Deny"]
        selector = binding["spec"].get("matchResources", {}).get("namespaceSelector")
        if selector:  # the pack's namespaces, as the bundle labels them
            assert selector["matchLabels"].items() <= ours.items()
        assert policies[name]["spec"]["failurePolicy"] == "Fail"
        for v in policies[name]["spec"]["validations"]:
            assert v["reason"] == "Forbidden" and v["messageExpression"]
    services = [f"system:serviceaccount:{ns}:{n}" for ns, n in (HUB_SA, LAUNCHER_SA, CULLER_SA)]
    for name in ("kdash-namespaces", "kdash-persistent-volumes", "kdash-role-bindings",
                 "kdash-service-writes"):
        condition = policies[name]["spec"]["matchConditions"][0]["expression"]
        assert all(f"'{s}'" in condition for s in services), name
    text = json.dumps(policies)
    for value in (L.MANAGED_BY, L.MANAGED_BY_VALUE, L.COMPONENT, bundle.COMPONENT,
                  RECORD_COMPONENT, RECORD_PREFIX):
        assert value in text, value
    records = json.dumps(policies["kdash-instance-records"]["spec"]["validations"])
    assert all(f"'{s}'" in records for s in services)
    # the ServiceAccounts named there exist
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"])
                for d in manifests(RBAC_DIR) if d["kind"] == "ServiceAccount"}
    assert {LAUNCHER_SA, CULLER_SA} <= accounts


# --- the launcher and the culler as Deployments ---------------------------------------------


def test_service_deployments_match_the_values_and_their_identities():
    values = pack_values()
    docs = manifests(SERVICES_DIR)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == set(values["hub"]["services"]) == set(z2jh.SERVICE_MODULES)
    image = f"{values['hub']['image']['name']}:{values['hub']['image']['tag']}"
    accounts = {d["metadata"]["name"] for d in manifests(RBAC_DIR)
                if d["kind"] == "ServiceAccount"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name and name in accounts
        container = pod["containers"][0]
        assert container["image"] == image
        assert container["command"][:5] == ["python3", "-m", "kdash_hub.z2jh", "serve", name]
        env = {e["name"]: e for e in container["env"]}
        token = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token == {"name": "hub", "key": f"hub.services.{name}.apiToken"}
        assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == f"/services/{name}/"
        assert "secretKeyRef" in env["KDASH_RECORD_SIGNING_KEY"]["valueFrom"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["hub.jupyter.org/network-access-hub"] == "true"
    service = next(d for d in docs if d["kind"] == "Service")
    url = values["hub"]["services"]["kdash-launcher"]["url"]
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert "--port=10101" in deployments["kdash-launcher"]["spec"]["template"]["spec"][
        "containers"][0]["command"]


# --- secrets by reference -----------------------------------------------------------------


@pytest.mark.parametrize("overlay", [None, *EXAMPLES], ids=lambda p: p.stem if p else "values")
def test_examples_hold_no_secret_inline_and_every_reference_is_provided(overlay):
    from kdash_hub.secrets import ENV, FILE, inline_secrets, is_secret_name

    values = pack_values(*([overlay] if overlay else []))
    custom = values["custom"]["kdash"]
    assert inline_secrets(custom) == []
    hub = values["hub"]
    env = set(hub.get("extraEnv") or {})
    mounts = [m["mountPath"] for m in hub.get("extraVolumeMounts") or []]

    def references(tree):
        if isinstance(tree, dict):
            for key, value in tree.items():
                if is_secret_name(str(key)) and isinstance(value, str):
                    yield value
                else:
                    yield from references(value)
        elif isinstance(tree, list):
            for item in tree:
                yield from references(item)

    for ref in references(custom):
        if ref.startswith(ENV):
            assert ref[len(ENV):] in env, ref
            source = hub["extraEnv"][ref[len(ENV):]]
            assert "secretKeyRef" in source["valueFrom"], ref
        elif ref.startswith(FILE):
            assert any(ref[len(FILE):].startswith(m.rstrip("/") + "/") for m in mounts), ref


@pytest.mark.parametrize("overlay", [None, *EXAMPLES, E2E_VALUES],
                         ids=lambda p: p.stem if p else "values")
def test_every_role_names_real_scopes(overlay: Path | None):
    values = pack_values(*([overlay] if overlay else []))
    for name, role in values["hub"]["loadRoles"].items():
        for scope in role["scopes"]:
            assert scope.split("!")[0] in scope_definitions, (name, scope)
        for service in role.get("services", []):
            assert service in values["hub"]["services"], (name, service)
