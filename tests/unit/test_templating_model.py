"""The template model's small truths: Karvdash's NAME default names an instance, a
template's `connection:` (which port notebooks use, which variables hold the user and
password), and MinIO's address is its S3 API (9000), not its console (9001)."""

import textwrap

import pytest

from kdash_hub.services.launcher.instances import proxy_target
from kdash_hub.services.launcher.settings import CATALOG_DIR
from kdash_hub.templating import TemplateError, parse_template, render_objects, resolve_values

KARVDASH_NOTES = textwrap.dedent("""\
    kind: Template
    name: Notes Server
    description: A Karvdash template as Karvdash shipped it.
    variables:
    - name: NAME
      default: notes
    - name: HOSTNAME
      default: example.com
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
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: $NAME
    spec:
      rules:
      - host: $NAME.$HOSTNAME
    """)


def catalog_template(name: str):
    path = CATALOG_DIR / f"{name}.yaml"
    return parse_template(path.read_text(), str(path))


def test_karvdash_name_default_names_the_instance():
    t = parse_template(KARVDASH_NOTES)
    assert t.id == "notes-server" and t.default_name == "notes"
    assert t.summary()["default_name"] == "notes"


@pytest.mark.parametrize("variables", [
    "- name: HOSTNAME\n  default: example.com\n",  # no NAME declared
    "- name: NAME\n",  # declared without a default
    "- name: NAME\n  default: ''\n",
])
def test_without_a_name_default_the_template_id_is_used(variables):
    text = KARVDASH_NOTES.replace(
        "- name: NAME\n  default: notes\n- name: HOSTNAME\n  default: example.com\n",
        variables)
    assert parse_template(text).default_name == "notes-server"


@pytest.mark.parametrize("default", [
    "Notes", "1notes", "notes_server", "notes-", "x" * 41, "yes", "'my notes'", "12",
])
def test_a_name_default_that_is_no_instance_name_is_refused_at_load(default):
    text = KARVDASH_NOTES.replace("  default: notes\n", f"  default: {default}\n")
    with pytest.raises(TemplateError, match="variable NAME: default .* not an instance name") \
            as info:
        parse_template(text, "notes.yaml")
    assert info.value.line == 5 and "notes.yaml" in str(info.value)


def test_name_default_of_40_chars_is_fine():
    name = "n" + "-" * 38 + "n"
    text = KARVDASH_NOTES.replace("  default: notes\n", f"  default: {name}\n")
    assert parse_template(text).default_name == name


def test_catalog_connection_declarations():
    minio = catalog_template("minio")
    assert minio.connection.port == "api" and minio.web_label == "Console"
    assert (minio.connection.user, minio.connection.password) == ("ROOT_USER", "ROOT_PASSWORD")
    pg = catalog_template("postgresql")
    assert (pg.connection.user, pg.connection.password, pg.connection.database) == (
        "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    assert pg.connection.port is None  # the proxied port (5432) is the address
    redis = catalog_template("redis")
    assert redis.connection.password == "REDIS_PASSWORD" and redis.connection.user == ""
    assert parse_template(KARVDASH_NOTES).connection is None  # Karvdash has none


@pytest.mark.parametrize("connection,message", [
    ("connection: [api]", "must be a mapping"),
    ("connection: {host: x}", "unknown field"),
    ("connection: {user: NOBODY}", "'NOBODY' is not a declared variable"),
    ("connection: {user: NAME}", "'NAME' is not a declared variable"),  # launcher-set
    ("connection: {password: HOSTNAME}", "not a declared variable"),  # automatic
    ("connection: {port: 70000}", "not a port name or number"),
    ("connection: {port: yes}", "not a port name or number"),
])
def test_bad_connection_declarations_are_refused_at_load(connection, message):
    text = KARVDASH_NOTES.replace("variables:\n", connection + "\nvariables:\n")
    with pytest.raises(TemplateError, match=message):
        parse_template(text, "notes.yaml")


def render(template, name: str) -> list[dict]:
    automatic = {"NAME": name, "NAMESPACE": "kdash-alice", "USERNAME": "alice",
                 "URL": f"https://hub.example.org/proxy/alice/{name}/", "REGISTRY": "r.io",
                 "PATH_PREFIX": f"/proxy/alice/{name}"}
    values = resolve_values(template, {}, automatic)
    return render_objects(template, values.values, namespace="kdash-alice",
                          username="alice", instance=name)


def test_minio_address_is_the_s3_api_and_the_proxy_its_console():
    target = proxy_target(catalog_template("minio"), render(catalog_template("minio"), "m1"))
    assert target["service"] == "m1"
    assert target["service_port"] == 9001 and target["port"] == 9001  # the proxied console
    assert target["address_port"] == 9000  # notebooks connect to S3 here


def test_without_a_connection_port_the_address_is_the_proxied_port():
    pg = catalog_template("postgresql")
    target = proxy_target(pg, render(pg, "db"))
    assert target["service_port"] == 5432 and "address_port" not in target
