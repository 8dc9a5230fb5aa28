"""Loading template catalogs: directories and ConfigMaps; broken ones reported, others load."""

import textwrap

import kubernetes_validate
import pytest

from kdash_hub.templating import load_configmaps, load_directories, render_objects, resolve_values
from services.launcher.settings import CATALOG_DIR

GOOD = textwrap.dedent("""\
    kind: Template
    name: Good One
    variables:
    - {name: NAME, default: good}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: $NAME}
    """)
FORBIDDEN = GOOD.replace("Good One", "Bad") + textwrap.dedent("""\
    ---
    apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata: {name: evil}
    """)


def test_directory_with_broken_template_still_loads_the_others(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(FORBIDDEN)
    (tmp_path / "syntax.yml").write_text("kind: Template\nname: [oops\n")
    (tmp_path / "dup.yaml").write_text(GOOD)
    (tmp_path / "README.md").write_text("not a template")
    catalog = load_directories([tmp_path, tmp_path / "missing"])
    assert list(catalog.templates) == ["good-one"]
    messages = sorted(str(e) for e in catalog.errors)
    assert any(m.startswith(f"{tmp_path / 'bad.yaml'}:11: kind ClusterRole") for m in messages)
    assert any(m.startswith(f"{tmp_path / 'syntax.yml'}:") and "invalid YAML" in m
               for m in messages)
    assert any("dup.yaml" in m and "already used" in m for m in messages)
    assert any("missing" in m and "not a directory" in m for m in messages)


def test_configmaps():
    cm = {"metadata": {"name": "templates", "namespace": "hub"},
          "data": {"good.yaml": GOOD, "bad.yaml": FORBIDDEN, "notes.txt": "x"}}
    catalog = load_configmaps([cm])
    assert list(catalog.templates) == ["good-one"]
    assert [str(e).split(":")[0] for e in catalog.errors] == ["configmap/hub/templates/bad.yaml"]


@pytest.mark.parametrize("template_id", ["postgresql", "minio", "tensorboard", "redis",
                                         "filebrowser"])
def test_shipped_templates_render_to_strictly_valid_objects(template_id):
    catalog = load_directories([CATALOG_DIR])
    assert not catalog.errors
    t = catalog.get(template_id)
    auto = {"NAME": f"my-{template_id}", "NAMESPACE": "kdash-alice", "USERNAME": "alice",
            "HOSTNAME": "hub.example.org", "URL": "https://hub.example.org/x/",
            "PRIVATE_DIR": "/home/jovyan", "SHARED_DIR": "/home/jovyan/shared",
            "PRIVATE_VOLUME": "claim-alice", "PRIVATE_SUBPATH": "alice", "SHARED_VOLUME": "",
            "REGISTRY": "docker.io",
            "PATH_PREFIX": "/services/kdash-launcher/proxy/alice/x"}
    resolved = resolve_values(t, {}, auto)
    objects = render_objects(t, resolved.values, namespace="kdash-alice", username="alice",
                             instance=auto["NAME"])
    assert objects and any(o["kind"] == "Service" for o in objects)
    for obj in objects:  # a home claim is always mounted at the user's own sub path
        pod = (obj.get("spec") or {}).get("template", {}).get("spec", {})
        claims = {v["name"] for v in pod.get("volumes", [])
                  if v.get("persistentVolumeClaim", {}).get("claimName") == "claim-alice"}
        for c in pod.get("containers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] in claims:
                    assert m["subPath"] == "alice"
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    # a secret value only lives in Secrets
    for name in resolved.secret_names:
        holders = [o["kind"] for o in objects if resolved.values[name] in str(o)]
        assert holders and set(holders) == {"Secret"}


def test_strict_validation_catches_a_typo():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
