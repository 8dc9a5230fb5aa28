"""The Helm values deploy the pack: valid for the chart, and meaningful to the pack's classes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from jupyterhub.scopes import scope_definitions

from kdash_hub import z2jh
from tests.fixtures.helm import (
    EXAMPLES,
    HELM_VALUES,
    VALUES,
    chart_values,
    helm_merge,
    load_yaml,
    pack_values,
    schema_errors,
)

EXPECTED_EXAMPLES = {
    "ldap-only", "oidc-only", "ldap-and-oidc", "nfs-homes", "local-scratch", "gpu-profiles",
    "group-quotas",
}
RBAC = HELM_VALUES / "rbac" / "hub-user-namespaces.yaml"
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
    for name, service in hub["services"].items():
        command = service["command"]
        assert command[:2] == ["python3", "-m"], name
        assert importlib.util.find_spec(command[2]) is not None, command
    roles = hub["loadRoles"]
    assert roles["kdash-culler"]["services"] == ["kdash-culler"]
    assert "--ip=0.0.0.0" in hub["services"]["kdash-launcher"]["command"]
    for role in roles.values():
        for scope in role["scopes"]:
            assert scope.split("!")[0] in scope_definitions, scope
    culler = set(roles["kdash-culler"]["scopes"])
    assert {"list:users", "read:users:activity", "read:servers", "delete:servers"} <= culler
    for role in ("user", "server"):
        assert "access:services!service=kdash-launcher" in roles[role]["scopes"]


def test_network_policy_lets_the_hub_and_proxy_reach_user_namespaces():
    values = pack_values()
    managed = {"app.kubernetes.io/managed-by": "kdash-hub"}
    for netpol in (values["hub"]["networkPolicy"], values["proxy"]["chp"]["networkPolicy"]):
        selectors = [to.get("namespaceSelector", {}).get("matchLabels")
                     for rule in netpol["egress"] for to in rule["to"]]
        assert managed in selectors
    assert values["hub"]["networkPolicy"]["interNamespaceAccessLabels"] == "accept"
    launcher_port = int(values["hub"]["services"]["kdash-launcher"]["url"].rsplit(":", 1)[1])
    assert launcher_port in [p["port"] for p in values["hub"]["service"]["extraPorts"]]
    ingress_ports = [p["port"] for rule in values["hub"]["networkPolicy"]["ingress"]
                     for p in rule["ports"]]
    assert launcher_port in ingress_ports


def test_extra_config_applies_custom_kdash():
    snippet = pack_values()["hub"]["extraConfig"]["kdash.py"]
    assert "apply_custom_config(c, get_config(\"custom.kdash\", {}))" in snippet


def test_rbac_manifest_is_valid_kubernetes():
    import kubernetes_validate

    docs = list(yaml.safe_load_all(RBAC.read_text()))
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    role, binding = docs
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


def test_hub_image_builds_on_the_chart_hub_image():
    dockerfile = (HELM_VALUES / "hub-image" / "Dockerfile").read_text()
    assert "ARG HUB_IMAGE=quay.io/jupyterhub/k8s-hub:4.4.0" in dockerfile
    assert "pip install" in dockerfile
    values = load_yaml(VALUES)
    assert values["hub"]["image"]["name"]


def granted() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the ClusterRole grants (resourceNames-limited ones apart)."""
    role = next(yaml.safe_load_all(RBAC.read_text()))
    return {
        (group, resource, verb)
        for rule in role["rules"] if not rule.get("resourceNames")
        for group in rule["apiGroups"] for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def needs(kind: str, *verbs: str) -> set[tuple[str, str, str]]:
    from kdash_hub.kube import resource_for

    res = resource_for(kind)
    group = "" if res.api_version == "v1" else res.api_version.split("/")[0]
    return {(group, res.plural, verb) for verb in verbs}


def test_rbac_covers_what_the_code_does():
    from kdash_hub.spawner import KDashSpawner
    from kdash_hub.spawner.drift import WATCHED
    from kdash_hub.templating import DEFAULT_ALLOWED_KINDS

    wanted: set[tuple[str, str, str]] = set()
    # KubeSpawner with user namespaces: pods and events reflected in all namespaces
    wanted |= needs("Pod", "get", "list", "watch", "create", "delete")
    wanted |= needs("Event", "list", "watch")
    wanted |= needs("Namespace", "get", "create", "patch", "delete")
    wanted |= needs("PersistentVolumeClaim", "get", "create", "delete")
    wanted |= needs("PersistentVolume", "get", "create", "patch")
    wanted |= needs("Node", "list")
    # the namespace bundle's drift watches, and ensure (get/create/patch; delete+create)
    for kind in WATCHED:
        wanted |= needs(kind, "get", "list", "watch", "create", "patch", "delete")
    # every kind a launcher template may contain: launch, stop/start, delete, list
    for kind in DEFAULT_ALLOWED_KINDS:
        wanted |= needs(kind, "get", "create", "patch", "delete")
    wanted |= {("", "pods/log", "get")}
    missing = wanted - granted()
    assert not missing, sorted(missing)

    role = next(yaml.safe_load_all(RBAC.read_text()))
    bind = [r for r in role["rules"] if r.get("verbs") == ["bind"]]
    assert bind and KDashSpawner.user_cluster_role.default_value in bind[0]["resourceNames"]


@pytest.mark.parametrize("overlay", [None, *EXAMPLES, E2E_VALUES],
                         ids=lambda p: p.stem if p else "values")
def test_every_role_names_real_scopes(overlay: Path | None):
    values = pack_values(*([overlay] if overlay else []))
    for name, role in values["hub"]["loadRoles"].items():
        for scope in role["scopes"]:
            assert scope.split("!")[0] in scope_definitions, (name, scope)
        for service in role.get("services", []):
            assert service in values["hub"]["services"], (name, service)
