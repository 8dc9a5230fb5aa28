"""Rendering: substitution inside parsed values, never text; typed fields; labels; namespace."""

import textwrap

import pytest
import yaml

from kdash_hub import labels as L
from kdash_hub.templating import RenderError, parse_template, render_objects, resolve_values
from kdash_hub.templating.substitute import substitute_text

TEMPLATE = textwrap.dedent("""\
    kind: Template
    name: Demo
    variables:
    - name: NAME
      default: demo
    - name: MESSAGE
      default: hello
    - name: REPLICAS
      default: 1
    - name: PORT
      type: integer
      default: 8080
    - name: READONLY
      type: boolean
      default: no
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: $NAME-config
      namespace: kube-system
      labels:
        app: ${NAME}
    data:
      message: $MESSAGE
      script: |
        echo "${HOME} $$NAME ${NAME}"
      price: $$5
      $NAME-key: value
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: $NAME
    spec:
      replicas: $REPLICAS
      selector:
        matchLabels: {app: $NAME}
      template:
        metadata:
          labels: {app: $NAME}
        spec:
          containers:
          - name: c
            image: busybox
            env:
            - {name: MESSAGE, value: $MESSAGE}
            - {name: PORT, value: $PORT}
            ports:
            - containerPort: $PORT
            volumeMounts:
            - {name: v, mountPath: /v, readOnly: $READONLY}
          volumes:
          - name: v
            emptyDir: {}
    """)
AUTO = {"NAMESPACE": "kdash-alice", "USERNAME": "alice"}


def render(values=None, username="alice", instance="demo"):
    t = parse_template(TEMPLATE, "demo.yaml")
    auto = {**AUTO, "NAME": instance}
    resolved = resolve_values(t, values or {}, auto)
    return render_objects(t, resolved.values, namespace="kdash-alice", username=username,
                          instance=instance)


def test_substitution_rules():
    values = {"NAME": "x", "A": "1"}
    assert substitute_text("$NAME ${NAME} $$NAME $$ ${HOME} $HOME $1 ${A}b $Ab", values)[0] == (
        "x x $NAME $ ${HOME} $HOME $1 1b $Ab")


def test_render_forces_namespace_and_labels():
    cm, deploy = render()
    assert cm["metadata"]["namespace"] == "kdash-alice"  # template said kube-system
    assert cm["metadata"]["name"] == "demo-config"
    for obj in (cm, deploy, deploy["spec"]["template"]):
        labels = obj["metadata"]["labels"]
        assert labels[L.MANAGED_BY] == "kdash-hub" and labels[L.OWNER] == "alice"
        assert labels[L.INSTANCE] == "demo" and labels[L.TEMPLATE] == "demo"
        assert obj["metadata"]["annotations"][L.OWNER_ANNOTATION] == "alice"
    assert cm["metadata"]["labels"]["app"] == "demo"


def test_dollar_dollar_and_shell_variables():
    cm, _ = render()
    assert cm["data"]["script"] == 'echo "${HOME} $NAME demo"\n'
    assert cm["data"]["price"] == "$5"
    assert cm["data"]["demo-key"] == "value"  # keys are substituted too


@pytest.mark.parametrize("evil", [
    "x\n  injected: true",
    "a: b",
    '"quoted" \'single\'',
    "{key: value}",
    "[1, 2]",
    "yes",
    "123",
    "null",
    "x\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil",
    "${NAME} $$ $NAME",
    "&anchor *alias !!python/object:os.system",
])
def test_values_are_never_parsed_as_yaml(evil):
    cm, deploy = render({"MESSAGE": evil})
    assert cm["data"]["message"] == evil  # one literal string, whatever it contains
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "MESSAGE", "value": evil}
    assert set(cm["data"]) == {"message", "script", "price", "demo-key"}
    assert len(yaml.safe_dump_all([cm, deploy]).split("\n---\n")) == 2


def test_integer_fields_convert_and_env_stays_string():
    _, deploy = render({"REPLICAS": "3", "PORT": 9090})
    assert deploy["spec"]["replicas"] == 3
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9090
    assert container["env"][1] == {"name": "PORT", "value": "9090"}


def test_integer_field_rejects_non_integer_naming_the_variable():
    with pytest.raises(RenderError) as e:
        render({"REPLICAS": "three"})
    assert "variable REPLICAS" in str(e.value) and "spec.replicas" in str(e.value)
    assert "not an integer" in str(e.value)


def test_typed_variable_checked_before_render():
    with pytest.raises(RenderError, match="variable PORT: 'http' is not an integer"):
        render({"PORT": "http"})


def test_boolean_field_yaml11():
    _, deploy = render({"READONLY": "yes"})
    mount = deploy["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["readOnly"] is True
    with pytest.raises(RenderError, match="READONLY"):
        render({"READONLY": "perhaps"})


def test_unknown_and_automatic_variables_refused():
    with pytest.raises(RenderError, match="unknown variable 'NMAE'"):
        render({"NMAE": "x"})
    with pytest.raises(RenderError, match="NAMESPACE is set by the launcher"):
        render({"NAMESPACE": "kube-system"})
    with pytest.raises(RenderError, match="USERNAME is set by the launcher"):
        render({"USERNAME": "bob"})


def test_non_scalar_value_refused():
    with pytest.raises(RenderError, match="single value"):
        render({"MESSAGE": {"a": 1}})


def test_user_cannot_change_kind_through_a_key():
    text = TEMPLATE.replace("data:\n  message: $MESSAGE", "data:\n  message: $MESSAGE")
    t = parse_template(text.replace("kind: ConfigMap\n", "kind: ConfigMap\n$MESSAGE: x\n"))
    resolved = resolve_values(t, {"MESSAGE": "kind"}, {**AUTO, "NAME": "d"})
    with pytest.raises(RenderError, match="kind of an object can't be changed"):
        render_objects(t, resolved.values, namespace="n", username="alice", instance="d")


def test_long_or_strange_username_gets_valid_labels():
    cm, _ = render(username="Alice.Smith@example.org")
    assert cm["metadata"]["annotations"][L.OWNER_ANNOTATION] == "Alice.Smith@example.org"
    assert L.is_owned_by(cm, "Alice.Smith@example.org")
    assert not L.is_owned_by(cm, "alice")
