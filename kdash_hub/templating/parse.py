"""Parse a Karvdash-format template file into a `Template`, checking it fully at load.

A file is a multi-document YAML 1.1 stream: one document with `kind: Template` (and no
apiVersion) is the header, every other document is a Kubernetes manifest. Everything a
template could get wrong is found here, with its line, so a broken template never reaches
a user: unknown or forbidden kinds, bad variable declarations, bad TTLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kdash_hub.durations import parse_duration

from ..kube import RESOURCES
from .batch import batch_errors
from .errors import TemplateError
from .model import EXPIRY_ACTIONS, VARIABLE_TYPES, Connection, Manifest, Template, Variable
from .yamldocs import Document, load_documents

DEFAULT_ALLOWED_KINDS = (
    "Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim",
    "Job", "CronJob",
    # Argo Workflows: accepted at launch only where its CRDs are installed
    "Workflow", "CronWorkflow",
)
# filled in by the launcher; a template may declare them (Karvdash templates do), but only
# NAME (the instance name) can be chosen by the user
AUTOMATIC_VARIABLES = (
    "NAME", "NAMESPACE", "USERNAME", "HOSTNAME", "URL", "PRIVATE_DIR", "SHARED_DIR",
    "PRIVATE_VOLUME", "PRIVATE_SUBPATH", "SHARED_VOLUME", "REGISTRY", "PATH_PREFIX",
)
VARIABLE_NAME = re.compile(r"^[_A-Za-z][_A-Za-z0-9]*$")
TEMPLATE_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# an instance name (the launcher's rule): a DNS label of 1-40 chars starting with a letter
INSTANCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
_HEADER_FIELDS = {
    "kind", "name", "description", "singleton", "datasets", "auth", "variables",
    # extensions
    "id", "ttl", "expiry", "icon", "category", "service_port", "proxy_strip_prefix",
    "http", "connection", "web_label",
}
_CONNECTION_FIELDS = {"port", "user", "password", "database", "scheme"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,30}")
_VARIABLE_FIELDS = {"name", "default", "help", "label", "type", "choices", "length"}


def slug(text: str) -> str:
    """A template id from its display name: "File Browser" -> "file-browser"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")


def _is_header(doc: Document) -> bool:
    data = doc.data
    return isinstance(data, dict) and data.get("kind") == "Template" and "apiVersion" not in data


def _parse_variable(raw: Any, source: str, line: int) -> Variable:
    if not isinstance(raw, dict) or "name" not in raw:
        raise TemplateError("each variable needs at least a name", source, line)
    unknown = set(raw) - _VARIABLE_FIELDS
    if unknown:
        raise TemplateError(
            f"variable {raw['name']!r}: unknown field(s) {', '.join(sorted(unknown))}",
            source, line,
        )
    if not isinstance(raw["name"], str):  # `name: ON` is a boolean in YAML 1.1
        raise TemplateError(f"variable name {raw['name']!r} is not a string (quote it)",
                            source, line)
    name = raw["name"]
    if not VARIABLE_NAME.match(name):
        raise TemplateError(f"variable name {name!r} is not an identifier", source, line)
    vtype = str(raw.get("type", "string"))
    if vtype not in VARIABLE_TYPES:
        raise TemplateError(
            f"variable {name}: type {vtype!r} is not one of {', '.join(VARIABLE_TYPES)}",
            source, line,
        )
    default = raw.get("default", "")
    choices = [str(c) for c in raw.get("choices") or []]
    var = Variable(
        name=name, default=default, help=str(raw.get("help") or ""),
        label=str(raw.get("label") or ""), type=vtype, choices=choices,
        automatic=name in AUTOMATIC_VARIABLES and name != "NAME",
    )
    if vtype == "integer" and default != "" and not _is_int(default):
        raise TemplateError(f"variable {name}: default {default!r} is not an integer",
                            source, line)
    if vtype == "boolean" and default != "" and not isinstance(default, bool):
        raise TemplateError(f"variable {name}: default {default!r} is not a boolean",
                            source, line)
    if vtype == "choice":
        if not choices:
            raise TemplateError(f"variable {name}: a choice needs choices", source, line)
        if str(default) not in choices:
            raise TemplateError(f"variable {name}: default {default!r} is not a choice",
                                source, line)
    if vtype == "secret":
        length = raw.get("length", 24)
        if not _is_int(length) or not 8 <= int(length) <= 256:
            raise TemplateError(f"variable {name}: length must be 8..256", source, line)
        var.length = int(length)
    return var


def _parse_connection(raw: Any, variables: list[Variable], source: str,
                      line: int | None) -> Connection | None:
    """The `connection:` header: a port (name or number) and names of declared variables."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TemplateError("connection must be a mapping (port, user, password, database,"
                            " scheme)",
                            source, line)
    unknown = set(raw) - _CONNECTION_FIELDS
    if unknown:
        raise TemplateError(f"connection: unknown field(s) {', '.join(sorted(unknown))}",
                            source, line)
    declared = {v.name for v in variables if not v.automatic and v.name != "NAME"}
    names: dict[str, str] = {}
    for key in ("user", "password", "database"):
        value = raw.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or value not in declared:
            raise TemplateError(f"connection.{key}: {value!r} is not a declared variable",
                                source, line)
        names[key] = value
    port = raw.get("port")
    if port is not None and not (
            (isinstance(port, str) and port) or (
                type(port) is int and 0 < port < 65536)):
        raise TemplateError(f"connection.port: {port!r} is not a port name or number",
                            source, line)
    scheme = raw.get("scheme")
    if scheme not in (None, "") and not (isinstance(scheme, str)
                                         and _SCHEME.fullmatch(scheme)):
        raise TemplateError(f"connection.scheme: {scheme!r} is not a URL scheme (such as"
                            " postgresql, redis, http)", source, line)
    return Connection(port=port, scheme=scheme or "", **names)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return bool(re.fullmatch(r"-?\d+", str(value).strip()))


def _variable_lines(text: str) -> dict[str, int]:
    """Line of each `- name: X` in the text (best effort, for messages)."""
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*-?\s*name:\s*['\"]?([_A-Za-z][_A-Za-z0-9]*)", line)
        if match:
            lines.setdefault(match.group(1), number)
    return lines


def _check_manifest(doc: Document, source: str, allowed_kinds: Iterable[str]) -> Manifest:
    data = doc.data
    if not isinstance(data, dict):
        raise TemplateError("a manifest must be a mapping", source, doc.line)
    kind = data.get("kind")
    kind_line = doc.key_lines.get("kind", doc.line)
    if not kind:
        raise TemplateError("a manifest without kind", source, doc.line)
    allowed = set(allowed_kinds)
    if kind not in allowed:
        raise TemplateError(
            f"kind {kind} is not allowed in templates (allowed: {', '.join(sorted(allowed))})",
            source, kind_line,
        )
    resource = RESOURCES.get(kind)
    if resource is None or not resource.namespaced:
        raise TemplateError(f"kind {kind} is not a namespaced kind kdash-hub knows",
                            source, kind_line)
    api_version = data.get("apiVersion")
    if api_version != resource.api_version:
        raise TemplateError(
            f"{kind} must have apiVersion {resource.api_version}, not {api_version!r}",
            source, doc.key_lines.get("apiVersion", doc.line),
        )
    meta = data.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise TemplateError(f"{kind} without metadata.name", source, doc.line)
    problems = batch_errors(data, rendered=False)
    if problems:
        raise TemplateError(f"{kind}: {'; '.join(problems)}", source,
                            doc.key_lines.get("spec", doc.line))
    return Manifest(obj=data, line=doc.line)


def _is_karvdash_ingress(doc: Document, allowed_kinds: Iterable[str]) -> bool:
    data = doc.data
    return (isinstance(data, dict) and data.get("kind") == "Ingress"
            and "Ingress" not in set(allowed_kinds))


def parse_template(
    text: str, source: str = "<template>",
    allowed_kinds: Iterable[str] = DEFAULT_ALLOWED_KINDS, *, skip_ingress: bool = True,
) -> Template:
    """Parse and check one template file; raises TemplateError naming file and line.

    Karvdash templates expose their Service with an Ingress for $HOSTNAME; here the
    launcher's authenticating proxy does that, so with `skip_ingress` (and Ingress not an
    allowed kind) those documents are left out (listed in `Template.skipped`).
    """
    docs = load_documents(text, source)
    headers = [d for d in docs if _is_header(d)]
    if not headers:
        raise TemplateError("no `kind: Template` document (the template header)", source, 1)
    if len(headers) > 1:
        raise TemplateError("more than one `kind: Template` document", source,
                            headers[1].line)
    header_doc = headers[0]
    header = header_doc.data
    unknown = set(header) - _HEADER_FIELDS
    if unknown:
        raise TemplateError(f"unknown header field(s): {', '.join(sorted(unknown))}",
                            source, header_doc.key_lines.get(sorted(unknown)[0]))
    name = str(header.get("name") or "").strip()
    if not name:
        raise TemplateError("the template has no name", source, header_doc.line)
    template_id = str(header.get("id") or slug(name))
    if not TEMPLATE_ID.match(template_id):
        raise TemplateError(f"template id {template_id!r} is not a DNS label of <= 40 chars",
                            source, header_doc.key_lines.get("id", header_doc.line))

    raw_vars = header.get("variables") or []
    if not isinstance(raw_vars, list):
        raise TemplateError("variables must be a list", source,
                            header_doc.key_lines.get("variables"))
    var_lines = _variable_lines(text)
    variables: list[Variable] = []
    for raw in raw_vars:
        line = var_lines.get(str(raw.get("name")) if isinstance(raw, dict) else "",
                             header_doc.key_lines.get("variables"))
        var = _parse_variable(raw, source, line)
        if any(v.name == var.name for v in variables):
            raise TemplateError(f"variable {var.name} declared twice", source, line)
        variables.append(var)
    name_var = next((v for v in variables if v.name == "NAME"), None)
    if name_var is not None and name_var.default not in (None, "") and not (
            isinstance(name_var.default, str) and INSTANCE_NAME.match(name_var.default)):
        # Karvdash's NAME default names the instance when the user gives none
        raise TemplateError(
            f"variable NAME: default {name_var.default!r} is not an instance name (1-40"
            " lowercase letters, digits and '-', starting with a letter)", source,
            var_lines.get("NAME"))

    try:
        ttl = parse_duration(header.get("ttl"))
    except ValueError as e:
        raise TemplateError(f"ttl: {e}", source, header_doc.key_lines.get("ttl")) from None
    expiry = str(header.get("expiry") or "stop")
    if expiry not in EXPIRY_ACTIONS:
        raise TemplateError(f"expiry must be one of {', '.join(EXPIRY_ACTIONS)}", source,
                            header_doc.key_lines.get("expiry"))

    connection = _parse_connection(header.get("connection"), variables, source,
                                   header_doc.key_lines.get("connection"))

    allowed_kinds = tuple(allowed_kinds)
    skipped = [d for d in docs if d is not header_doc and skip_ingress
               and _is_karvdash_ingress(d, allowed_kinds)]
    left_out = {id(d) for d in skipped}
    manifests = [_check_manifest(d, source, allowed_kinds) for d in docs
                 if d is not header_doc and id(d) not in left_out]
    if not manifests:
        raise TemplateError("the template has no objects", source, header_doc.line)
    return Template(
        id=template_id, name=name, description=str(header.get("description") or ""),
        source=source, variables=variables, manifests=manifests,
        singleton=bool(header.get("singleton", False)),
        datasets=bool(header.get("datasets", False)), auth=bool(header.get("auth", False)),
        ttl=ttl, expiry=expiry, icon=str(header.get("icon") or ""),
        category=str(header.get("category") or ""),
        service_port=header.get("service_port"),
        proxy_strip_prefix=bool(header.get("proxy_strip_prefix", True)),
        http=bool(header.get("http", True)), connection=connection,
        web_label=str(header.get("web_label") or ""),
        skipped=[f"Ingress (line {d.line}): the launcher's proxy gives access instead"
                 for d in skipped],
    )
