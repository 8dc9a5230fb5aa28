"""Loading templates: Karvdash format, YAML 1.1, our extensions, errors with file and line."""

import textwrap

import pytest

from kdash_hub.templating import DEFAULT_ALLOWED_KINDS, TemplateError, parse_template

KARVDASH = textwrap.dedent("""\
    kind: Template
    name: Zeppelin
    description: A web-based notebook.
    singleton: yes
    datasets: no
    auth: off
    variables:
    - name: NAME
      default: zeppelin
    - name: HOSTNAME
      default: example.com
    - name: REPLICAS
      default: 1
      help: How many
      label: Replicas
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: $NAME
    spec:
      ports:
      - port: 80
      selector:
        app: $NAME
    """)


def test_karvdash_template_loads_unchanged():
    t = parse_template(KARVDASH, "zeppelin.template.yaml")
    assert t.id == "zeppelin" and t.name == "Zeppelin"
    assert t.singleton is True and t.datasets is False and t.auth is False  # YAML 1.1
    assert [v.name for v in t.variables] == ["NAME", "HOSTNAME", "REPLICAS"]
    assert t.variable("HOSTNAME").automatic and not t.variable("NAME").automatic
    assert [v.name for v in t.user_variables] == ["NAME", "REPLICAS"]
    assert t.variable("REPLICAS").label == "Replicas"
    assert t.expiry == "stop" and t.ttl is None
    assert [m.kind for m in t.manifests] == ["Service"]
    assert t.manifests[0].line == 17


def test_yaml11_booleans_in_manifests():
    t = parse_template(KARVDASH.replace("  ports:", "  publishNotReadyAddresses: yes\n  ports:"))
    assert t.manifests[0].obj["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize("kind,api", [
    ("Namespace", "v1"), ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "rbac.authorization.k8s.io/v1"), ("Pod", "v1"),
])
def test_forbidden_kinds_rejected_at_load_with_line(kind, api):
    text = KARVDASH + f"---\napiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\n"
    with pytest.raises(TemplateError) as e:
        parse_template(text, "bad.yaml")
    assert e.value.source == "bad.yaml"
    assert e.value.line == KARVDASH.count("\n") + 3  # the line of `kind:`
    assert f"kind {kind} is not allowed" in str(e.value)
    assert str(e.value).startswith(f"bad.yaml:{e.value.line}:")


def test_admin_can_allow_more_kinds_but_only_namespaced_known_ones():
    text = KARVDASH + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n"
    assert parse_template(text, allowed_kinds=[*DEFAULT_ALLOWED_KINDS, "Pod"])
    text = KARVDASH + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"
    with pytest.raises(TemplateError, match="not a namespaced kind"):
        parse_template(text, allowed_kinds=["Service", "Namespace"])


def test_wrong_api_version_rejected():
    text = KARVDASH + (
        "---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: x\n")
    with pytest.raises(TemplateError, match="apiVersion apps/v1"):
        parse_template(text)


def test_yaml_syntax_error_has_line():
    text = KARVDASH + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n"
    with pytest.raises(TemplateError) as e:
        parse_template(text, "broken.yaml")
    assert e.value.line and e.value.line > KARVDASH.count("\n")
    assert "invalid YAML" in str(e.value)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.replace("kind: Template\n", "kind: Templat\n"), "no `kind: Template`"),
    (lambda t: t.replace("name: Zeppelin\n", ""), "no name"),
    (lambda t: t.replace("  default: 1\n", "  default: 1\n  type: float\n"), "type 'float'"),
    (lambda t: t.replace("  default: 1\n", "  default: one\n  type: integer\n"),
     "not an integer"),
    (lambda t: t.replace("  default: 1\n", "  default: c\n  type: choice\n  choices: [a, b]\n"),
     "not a choice"),
    (lambda t: t.replace("- name: REPLICAS", "- name: 1BAD"), "not an identifier"),
    (lambda t: t.replace("- name: REPLICAS", "- name: NAME"), "declared twice"),
    (lambda t: t.replace("singleton: yes\n", "singleton: yes\nttl: forever\n"), "ttl"),
    (lambda t: t.replace("singleton: yes\n", "singleton: yes\nexpiry: explode\n"), "expiry"),
    (lambda t: t.replace("singleton: yes\n", "singleton: yes\nfoo: 1\n"), "unknown header"),
    (lambda t: t.split("---")[0], "no objects"),
])
def test_bad_headers_are_reported(change, message):
    with pytest.raises(TemplateError, match=message):
        parse_template(change(KARVDASH), "t.yaml")


def test_extensions_parse():
    text = KARVDASH.replace("singleton: yes\n", (
        "singleton: yes\nttl: 8h\nexpiry: delete\nicon: db\ncategory: Databases\n"
        "id: zep\nservice_port: 80\n"))
    text = text.replace("  default: 1\n", "  default: 1\n  type: integer\n") + (
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n")
    t = parse_template(text.replace("variables:\n", (
        "variables:\n- name: PASSWORD\n  type: secret\n  length: 12\n"
        "- name: MODE\n  type: choice\n  choices: [a, b]\n  default: b\n"
        "- name: FLAG\n  type: boolean\n  default: no\n")))
    assert (t.id, t.ttl, t.expiry, t.icon, t.category, t.service_port) == (
        "zep", 8 * 3600, "delete", "db", "Databases", 80)
    assert t.variable("PASSWORD").type == "secret" and t.variable("PASSWORD").length == 12
    assert t.variable("MODE").choices == ["a", "b"]
    assert t.variable("FLAG").default is False
    summary = t.summary()
    assert {v["name"] for v in summary["variables"]} == {
        "NAME", "REPLICAS", "PASSWORD", "MODE", "FLAG"}
    assert next(v for v in summary["variables"] if v["name"] == "PASSWORD")["default"] is None


KARVDASH_STYLE = textwrap.dedent("""\
    # a template written the way Karvdash's own are: Ingress first, header last
    apiVersion: networking.k8s.io/v1beta1
    kind: Ingress
    metadata:
      name: $NAME
    spec:
      rules:
      - host: $HOSTNAME
        http:
          paths:
          - backend: {serviceName: $NAME, servicePort: 80}
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: $NAME
    spec:
      ports:
      - port: 80
      selector:
        app: $NAME
    ---
    kind: Template
    name: Greeter
    description: Says hello
    variables:
    - name: NAME
      default: greeter
    - name: HOSTNAME
      default: greeter.example.com
    """)


def test_karvdash_ingress_is_left_out_and_header_may_come_last():
    t = parse_template(KARVDASH_STYLE, "greeter.template.yaml")
    assert t.id == "greeter" and [m.kind for m in t.manifests] == ["Service"]
    assert t.skipped == ["Ingress (line 2): the launcher's proxy gives access instead"]
    with pytest.raises(TemplateError, match="kind Ingress is not allowed"):
        parse_template(KARVDASH_STYLE, skip_ingress=False)
    with pytest.raises(TemplateError, match="Ingress must have apiVersion networking.k8s.io/v1"):
        parse_template(KARVDASH_STYLE, allowed_kinds=[*DEFAULT_ALLOWED_KINDS, "Ingress"])
