"""Validation of every write: strict OpenAPI schema (kubernetes-validate), names, labels,
and the per-kind rules clients trip over (immutable fields, selectors, requests <= limits).

Schemas come from the kubernetes-validate package's strict variant, so unknown fields are
found; `fieldValidation` says what happens to them, as on a real server: Strict fails the
request, Warn (the default) drops them with a `Warning` header each, Ignore drops them.
Validators are built once per kind and cached: a validation costs a schema walk, not a file
load (see benchmarks/bench_localcluster.py for its measured cost).
"""

from __future__ import annotations

import base64
import contextvars
import json
import re
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

from .resources import ResourceType
from .schemacheck import Check, SchemaCheck, Unsupported, same

DEFAULT_KUBE_VERSION = "1.36"

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
    "[a-z0-9])?)*')")
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")

_LABEL_NAMED = {"Namespace"}
_DNS1035_NAMED = {"Service"}
_PATH_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "APIService"}


# warnings of the request being served (fieldValidation=Warn), sent as `Warning` headers
request_warnings: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "request_warnings", default=None)


# duplicate fields of the request's JSON body (paths like `metadata.name`), found when the
# body is decoded; fieldValidation decides whether they warn or fail, as unknown fields do
request_duplicates: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "request_duplicates", default=None)

# the cause reason the validator gives an unknown field under fieldValidation=Strict; the
# operations turn it into a strict decoding error, never send it as it is
UNKNOWN_FIELD = "FieldValueUnknown"


def warn(message: str) -> None:
    warnings = request_warnings.get()
    if warnings is not None:
        warnings.append(message)


def cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def _field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _q(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def check_name(kind: str, name: str, field: str = "metadata.name") -> list[dict]:
    if kind in _PATH_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            return [cause("FieldValueInvalid", field,
                          f"Invalid value: {_q(name)}: may not contain '/' or '%'")]
        return []
    if kind in _LABEL_NAMED or kind in _DNS1035_NAMED:
        limit, regex, msg = 63, _LABEL, LABEL_MSG
        if kind in _DNS1035_NAMED:
            regex, msg = _DNS1035, DNS1035_MSG
    else:
        limit, regex, msg = 253, _SUBDOMAIN, SUBDOMAIN_MSG
    out = []
    if len(name) > limit:
        out.append(cause("FieldValueInvalid", field,
                         f"Invalid value: {_q(name)}: must be no more than {limit} characters"))
    if not regex.match(name):
        out.append(cause("FieldValueInvalid", field, f"Invalid value: {_q(name)}: {msg}"))
    return out


def check_labels(labels: Any, field: str = "metadata.labels") -> list[dict]:
    out: list[dict] = []
    if not isinstance(labels, dict):
        return out
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix))) or (
                not name or len(name) > 63 or not _QUALIFIED.match(name)):
            out.append(cause("FieldValueInvalid", field,
                             f"Invalid value: {_q(key)}: name part must consist of "
                             f"alphanumeric characters, '-', '_' or '.', and must start and "
                             f"end with an alphanumeric character"))
        if not isinstance(value, str):
            continue
        if len(value) > 63 or (value and not _QUALIFIED.match(value)):
            out.append(cause("FieldValueInvalid", field,
                             f"Invalid value: {_q(value)}: a valid label must be an empty "
                             f"string or consist of alphanumeric characters, '-', '_' or '.', "
                             f"and must start and end with an alphanumeric character"))
    return out


@cache
def _schema_dir(version: str) -> Any:
    base = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return base / f"v{version}.0-local-strict"


@cache
def _definitions_doc(version: str) -> dict:
    return json.loads((_schema_dir(version) / "_definitions.json").read_text())


@cache
def _kind_definition(version: str, group: str, kind: str) -> str | None:
    for name, d in _definitions_doc(version)["$defs"].items():
        for gvk in d.get("x-kubernetes-group-version-kind") or []:
            if gvk.get("kind") == kind and gvk.get("group", "") == group:
                return name
    return None


def _resolve(defs: dict, node: Any) -> dict | None:
    for _ in range(10):
        if not isinstance(node, dict):
            return None
        ref = node.get("$ref")
        if ref is None and isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
            ref = node["allOf"][0].get("$ref")
        if ref is None:
            return node
        node = defs.get(ref.rsplit("/", 1)[-1])
    return None


class PatchSchema:
    """Strategic-merge metadata (patch strategy, merge key) read from the OpenAPI schema."""

    def __init__(self, defs: dict, root: dict):
        self.defs = defs
        self.root = root

    def field(self, node: dict | None, key: str) -> dict | None:
        """The (unresolved) schema of `key` inside `node`: a property or a map value."""
        node = _resolve(self.defs, node)
        if node is None:
            return None
        props = node.get("properties") or {}
        if key in props:
            return props[key]
        extra = node.get("additionalProperties")
        return extra if isinstance(extra, dict) else None

    def child(self, node: dict | None, key: str) -> dict | None:
        return _resolve(self.defs, self.field(node, key))

    def items(self, field: dict | None) -> dict | None:
        field = _resolve(self.defs, field)
        return _resolve(self.defs, field.get("items")) if field else None


def patch_schema(kube_version: str, rtype: ResourceType) -> PatchSchema | None:
    name = _kind_definition(kube_version, rtype.group, rtype.kind)
    if name is None:
        return None
    defs = _definitions_doc(kube_version)["$defs"]
    return PatchSchema(defs, defs[name])


@cache
def _validator(version: str, kind: str, api_version: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    directory = _schema_dir(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = directory / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    definitions = _definitions_doc(version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@cache
def _sub_validator(version: str, kind: str, api_version: str, key: str) -> Any:
    """A validator of one top-level field (e.g. `status`) of a kind, or None."""
    v = _validator(version, kind, api_version)
    if v is None:
        return None
    prop = (v.schema.get("properties") or {}).get(key)
    if not isinstance(prop, dict):
        return None
    return v.evolve(schema={"$id": v.schema.get("$id", ""), **prop})


def _changed_fields(obj: dict, previous: dict | None) -> list[str] | None:
    """The top-level fields of an update that differ from the stored, valid `previous`
    (compared as JSON), or None when the whole object must be validated."""
    if previous is None or set(obj) != set(previous):
        return None
    return [key for key in obj if not same(obj[key], previous[key])]


@cache
def _schema_check(version: str) -> SchemaCheck:
    defs = _definitions_doc(version)["$defs"]

    def resolve(ref: str) -> dict:
        base, _, fragment = ref.partition("#")
        name = fragment.removeprefix("/$defs/")
        if base not in ("", "/api/_definitions.json") or name == fragment or name not in defs:
            raise Unsupported(f"$ref {ref!r}")
        return defs[name]

    return SchemaCheck(resolve)


@cache
def _fast_check(version: str, kind: str, api_version: str, key: str | None = None
                ) -> Check | None:
    """The yes/no check of a kind (or of one top-level field), None when not available."""
    v = _sub_validator(version, kind, api_version, key) if key else _validator(
        version, kind, api_version)
    return None if v is None else _schema_check(version).check(v.schema)


class Validator:
    """Schema + semantic validation; returns Status causes (an empty list when valid)."""

    def __init__(self, kube_version: str = DEFAULT_KUBE_VERSION, schema: bool = True):
        self.have_schemas = True
        try:
            import jsonschema  # noqa: F401
            import kubernetes_validate  # noqa: F401
            import referencing  # noqa: F401
        except ImportError as e:
            self.have_schemas = False
            if schema:
                raise RuntimeError(
                    f"schema validation needs kubernetes-validate ({e}); install "
                    f"'kdash-hub[test]' or start the emulator with validate=False") from None
        if schema and not _schema_dir(kube_version).is_dir():
            raise ValueError(f"kubernetes-validate has no schema for Kubernetes {kube_version}")
        self.kube_version = kube_version
        self.schema = schema
        self.calls = 0

    def patch_schema(self, rtype: ResourceType) -> PatchSchema | None:
        """Strategic-merge metadata of a kind (None: use the built-in merge-key table)."""
        return patch_schema(self.kube_version, rtype) if self.have_schemas else None

    def warm(self, kinds: list[ResourceType]) -> None:
        """Build the validators up front so the first write of each kind isn't slow."""
        for t in kinds:
            _validator(self.kube_version, t.kind, t.api_version)

    # ---------------------------------------------------------------- schema

    def validate(self, rtype: ResourceType, obj: dict, field_validation: str = "Strict",
                 previous: dict | None = None) -> list[dict]:
        """Causes of `obj` being invalid.

        With fieldValidation Ignore or Warn, unknown fields are removed from `obj` (a private
        copy) instead of reported. With `previous` (the stored version, already valid) only
        the top-level fields that changed are checked against their sub-schemas: a kubelet's
        status update doesn't re-validate the pod spec. The same keys must be present in
        both, else it's a full validation.
        """
        causes: list[dict] = []
        meta = obj.get("metadata") or {}
        if isinstance(meta.get("name"), str) and meta["name"]:
            causes += check_name(rtype.kind, meta["name"])
        causes += check_labels(meta.get("labels"))
        if not self.schema:
            return causes
        v = _validator(self.kube_version, rtype.kind, rtype.api_version)
        if v is None:
            return causes
        self.calls += 1
        strict = field_validation == "Strict"
        warn_unknown = field_validation == "Warn"
        errors: list[Any] = []
        changed = _changed_fields(obj, previous)
        if self._valid_fast(rtype, obj, changed):
            return causes
        if changed is not None:
            for key in changed:
                sub = _sub_validator(self.kube_version, rtype.kind, rtype.api_version, key)
                if sub is None:
                    errors = list(v.iter_errors(obj))
                    break
                for err in sub.iter_errors(obj[key]):
                    err.path.appendleft(key)
                    errors.append(err)
        else:
            errors = list(v.iter_errors(obj))
        unknown: list[tuple[tuple[int, ...], str]] = []
        for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
            if err.validator != "additionalProperties":
                causes += self._causes(err)
                continue
            path = list(err.absolute_path)
            known = set((err.schema or {}).get("properties") or {})
            for k in [k for k in (err.instance or {}) if k not in known]:
                unknown.append((_document_position(obj, [*path, k]), _field_path([*path, k])))
            if not strict:
                _drop_unknown(err)
        # in the order of the document, as a decoder meets them
        for _, field in sorted(unknown):
            if strict:
                causes.append(cause(UNKNOWN_FIELD, field, f'unknown field "{field}"'))
            elif warn_unknown:
                warn(f'unknown field "{field}"')
        return causes

    def _valid_fast(self, rtype: ResourceType, obj: dict, changed: list[str] | None) -> bool:
        """True when the compiled checks (schemacheck.py) find `obj` (or its `changed`
        top-level fields) valid; False means "don't know", and jsonschema's walk finds and
        words the errors."""
        version, kind, api_version = self.kube_version, rtype.kind, rtype.api_version
        if changed is not None:
            for key in changed:
                check = _fast_check(version, kind, api_version, key)
                if check is None or not check(obj[key]):
                    return False
            return True
        check = _fast_check(version, kind, api_version)
        return check is not None and check(obj)

    def _causes(self, err: Any) -> list[dict]:
        path = list(err.absolute_path)
        field = _field_path(path)
        kind = err.validator
        if kind == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            name = missing[0] if missing else "?"
            return [cause("FieldValueRequired", _field_path([*path, name]), "Required value")]
        if kind == "type":
            want = err.validator_value
            want = [t for t in want if t != "null"] if isinstance(want, list) else [want]
            return [cause("FieldValueTypeInvalid", field,
                          f"Invalid value: {_q(err.instance)}: must be of type "
                          f"{' or '.join(want)}")]
        if kind == "enum":
            supported = ", ".join(_q(v) for v in err.validator_value if v is not None)
            return [cause("FieldValueNotSupported", field,
                          f"Unsupported value: {_q(err.instance)}: supported values: "
                          f"{supported}")]
        if kind in ("oneOf", "anyOf"):
            return [cause("FieldValueTypeInvalid", field,
                          f"Invalid value: {_q(err.instance)}: must be a quantity, string or "
                          f"number")]
        return [cause("FieldValueInvalid", field, f"Invalid value: {err.message}")]

    # ---------------------------------------------------------------- semantics

    def check_object(self, rtype: ResourceType, obj: dict) -> list[dict]:
        kind = rtype.kind
        if kind in ("Secret", "ConfigMap"):
            return _check_data_keys(obj)
        if kind == "APIService":
            return _check_api_service(obj)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return []
        if kind == "Pod":
            return _check_pod_spec(spec, "spec")
        if kind in ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job",
                    "ReplicationController"):
            return _check_workload(kind, spec)
        return []

    def check_update(self, rtype: ResourceType, old: dict, new: dict,
                     subresource: str | None) -> list[dict]:
        if subresource == "status":
            return []
        kind = rtype.kind
        o, n = old.get("spec") or {}, new.get("spec") or {}
        if kind == "Pod":
            return _check_pod_update(o, n)
        if kind in ("RoleBinding", "ClusterRoleBinding") and old.get("roleRef") != new.get(
                "roleRef"):
            return [cause("FieldValueInvalid", "roleRef",
                          f"Invalid value: {new.get('roleRef')!r}: cannot change roleRef")]
        if kind in ("Deployment", "ReplicaSet", "DaemonSet", "Job", "StatefulSet") and (
                o.get("selector") != n.get("selector")):
            return [cause("FieldValueInvalid", "spec.selector",
                          f"Invalid value: {n.get('selector')!r}: field is immutable")]
        if kind == "StatefulSet":
            allowed = ("replicas", "ordinals", "template", "updateStrategy",
                       "persistentVolumeClaimRetentionPolicy", "minReadySeconds")
            if _without(o, allowed) != _without(n, allowed):
                return [cause("FieldValueForbidden", "spec",
                              "Forbidden: updates to statefulset spec for fields other than "
                              "'replicas', 'ordinals', 'template', 'updateStrategy', "
                              "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                              "are forbidden")]
        if kind == "Job" and not o.get("suspend") and o.get("template") != n.get("template"):
            return [cause("FieldValueInvalid", "spec.template",
                          "Invalid value: ...: field is immutable")]
        if kind == "PersistentVolumeClaim":
            allowed = ("resources", "volumeAttributesClassName", "volumeName")
            if _without(o, allowed) != _without(n, allowed):
                return [cause("FieldValueForbidden", "spec",
                              "Forbidden: spec is immutable after creation except "
                              "resources.requests and volumeAttributesClassName for bound "
                              "claims")]
        if kind == "Service" and o.get("clusterIP") and n.get("clusterIP") not in (
                None, "", o.get("clusterIP")):
            return [cause("FieldValueInvalid", "spec.clusterIPs[0]",
                          f"Invalid value: {_q(n.get('clusterIP'))}: may not change once set")]
        if kind in ("Secret", "ConfigMap") and old.get("immutable"):
            for f in ("data", "binaryData", "stringData"):
                if old.get(f) != new.get(f):
                    return [cause("FieldValueForbidden", f,
                                  "Forbidden: field is immutable when `immutable` is set")]
        return []


def _check_api_service(obj: dict) -> list[dict]:
    """An APIService is named `<version>.<group>`; its priorities have ranges."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    out = []
    name = (obj.get("metadata") or {}).get("name", "")
    required = f"{spec.get('version', '')}.{spec.get('group', '')}"
    if name != required:
        out.append(cause("FieldValueInvalid", "metadata.name",
                         f"Invalid value: {_q(name)}: must be `spec.version+\".\"+spec.group`: "
                         f"{_q(required)}"))
    for key, top in (("groupPriorityMinimum", 20000), ("versionPriority", 1000)):
        value = spec.get(key, 0)
        if not isinstance(value, int) or not 0 < value <= top:
            out.append(cause("FieldValueInvalid", f"spec.{key}",
                             f"Invalid value: {value}: must be positive and less than {top}"))
    return out


_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _check_data_keys(obj: dict) -> list[dict]:
    """Keys of data/binaryData must be valid file names; Secret data must be base64."""
    out = []
    for section in ("data", "binaryData", "stringData"):
        values = obj.get(section)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if not _CONFIG_KEY.match(key) or len(key) > 253:
                out.append(cause("FieldValueInvalid", f"{section}[{key}]",
                                 f"Invalid value: {_q(key)}: a valid config key must consist "
                                 f"of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',"
                                 f"  or 'KEY_NAME',  or 'key-name', regex used for validation "
                                 f"is '[-._a-zA-Z0-9]+')"))
            if (section == "binaryData" or (section == "data" and obj.get("kind") == "Secret")
                    ) and isinstance(value, str):
                try:
                    base64.b64decode(value, validate=True)
                except ValueError:
                    out.append(cause("FieldValueInvalid", f"{section}[{key}]",
                                     "Invalid value: illegal base64 data"))
    return out


def _document_position(obj: Any, path: list[Any]) -> tuple[int, ...]:
    """Where `path` comes in a pre-order walk of the decoded document (keys in the order
    they were written), to report unknown fields in that order."""
    out = []
    for part in path:
        if isinstance(obj, dict):
            keys = list(obj)
            out.append(keys.index(part) if part in obj else len(keys))
            obj = obj.get(part)
        elif isinstance(obj, list) and isinstance(part, int):
            out.append(part)
            obj = obj[part] if part < len(obj) else None
        else:
            out.append(0)
    return tuple(out)


def _drop_unknown(err: Any) -> None:
    """fieldValidation=Ignore|Warn: unknown fields are dropped, as a real server does."""
    known = set((err.schema or {}).get("properties") or {})
    if isinstance(err.instance, dict):
        for key in [k for k in err.instance if k not in known]:
            del err.instance[key]


def _without(d: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _check_pod_spec(spec: dict, at: str) -> list[dict]:
    from .quota import parse_quantity

    out: list[dict] = []
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            if not isinstance(c, dict):
                continue
            where = f"{at}.{group}[{i}]"
            name = c.get("name")
            if isinstance(name, str):
                if name in seen:
                    out.append(cause("FieldValueDuplicate", f"{where}.name",
                                     f"Duplicate value: {_q(name)}"))
                seen.add(name)
                if not _LABEL.match(name) or len(name) > 63:
                    out.append(cause("FieldValueInvalid", f"{where}.name",
                                     f"Invalid value: {_q(name)}: {LABEL_MSG}"))
            if not c.get("image"):
                out.append(cause("FieldValueRequired", f"{where}.image", "Required value"))
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            for r, v in req.items():
                if r in lim:
                    try:
                        if parse_quantity(v) > parse_quantity(lim[r]):
                            out.append(cause(
                                "FieldValueInvalid", f"{where}.resources.requests",
                                f"Invalid value: {_q(str(v))}: must be less than or equal to "
                                f"{r} limit of {lim[r]}"))
                    except ValueError:
                        pass
            for r, v in req.items():
                if _overcommit_forbidden(r) and r not in lim:
                    out.append(cause("FieldValueRequired", f"{where}.resources.limits",
                                     "Required value: Limit must be set for non "
                                     "overcommitable resources"))
                elif _overcommit_forbidden(r) and str(v) != str(lim[r]):
                    out.append(cause("FieldValueInvalid", f"{where}.resources.requests",
                                     f"Invalid value: {_q(str(v))}: must be equal to {r} "
                                     f"limit of {lim[r]}"))
            for section, values in (("requests", req), ("limits", lim)):
                for r, v in values.items():
                    try:
                        parse_quantity(v)
                    except ValueError:
                        out.append(cause("FieldValueInvalid",
                                         f"{where}.resources.{section}[{r}]",
                                         f"Invalid value: {_q(v)}: quantities must match the "
                                         f"regular expression "
                                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
    if not spec.get("containers"):
        out.append(cause("FieldValueRequired", f"{at}.containers", "Required value"))
    names = [v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)]
    out += _check_volume_paths(spec, at, set(names))
    for v in set(n for n in names if names.count(n) > 1):
        out.append(cause("FieldValueDuplicate", f"{at}.volumes", f"Duplicate value: {_q(v)}"))
    rp = spec.get("restartPolicy")
    if rp is not None and rp not in ("Always", "OnFailure", "Never"):
        out.append(cause("FieldValueNotSupported", f"{at}.restartPolicy",
                         f'Unsupported value: {_q(rp)}: supported values: "Always", '
                         f'"OnFailure", "Never"'))
    return out


def _local_path(value: Any, field: str) -> list[dict]:
    """A path inside a volume (subPath, items[].path): relative, without '..'."""
    if not isinstance(value, str) or not value:
        return []
    if value.startswith("/"):
        return [cause("FieldValueInvalid", field,
                      f"Invalid value: {_q(value)}: must be a relative path")]
    if ".." in value.split("/"):
        return [cause("FieldValueInvalid", field,
                      f"Invalid value: {_q(value)}: must not contain '..'")]
    return []


def _check_volume_paths(spec: dict, at: str, volumes: set[str]) -> list[dict]:
    """Mounts name a volume of the pod; no path leaves its volume."""
    out: list[dict] = []
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            if not isinstance(c, dict):
                continue
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if not isinstance(mount, dict):
                    continue
                where = f"{at}.{group}[{i}].volumeMounts[{j}]"
                if mount.get("name") not in volumes:
                    out.append(cause("FieldValueNotFound", f"{where}.name",
                                     f"Not found: {_q(mount.get('name'))}"))
                out += _local_path(mount.get("subPath"), f"{where}.subPath")
    for i, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, dict):
            continue
        for kind in ("configMap", "secret"):
            for k, item in enumerate((volume.get(kind) or {}).get("items") or []):
                if isinstance(item, dict):
                    out += _local_path(item.get("path"),
                                       f"{at}.volumes[{i}].{kind}.items[{k}].path")
    return out


def _overcommit_forbidden(resource: str) -> bool:
    """Extended resources (e.g. nvidia.com/gpu) can't be overcommitted: requests == limits."""
    return "/" in resource and not resource.startswith(("kubernetes.io/", "requests."))


def _check_workload(kind: str, spec: dict) -> list[dict]:
    out: list[dict] = []
    tmpl = spec.get("template") or {}
    tspec = tmpl.get("spec") if isinstance(tmpl, dict) else None
    if isinstance(tspec, dict):
        out += _check_pod_spec(tspec, "spec.template.spec")
        if kind == "Job" and tspec.get("restartPolicy") not in ("OnFailure", "Never"):
            out.append(cause("FieldValueRequired", "spec.template.spec.restartPolicy",
                             'Required value: valid values: "OnFailure", "Never"'))
        if kind != "Job" and tspec.get("restartPolicy", "Always") != "Always":
            out.append(cause("FieldValueNotSupported", "spec.template.spec.restartPolicy",
                             f'Unsupported value: {_q(tspec.get("restartPolicy"))}: supported '
                             f'values: "Always"'))
    if kind == "Job":
        return out
    selector = spec.get("selector")
    if not selector:
        out.append(cause("FieldValueRequired", "spec.selector", "Required value"))
        return out
    labels = ((tmpl.get("metadata") or {}).get("labels") or {}) if isinstance(
        tmpl, dict) else {}
    # a ReplicationController's selector is a plain map of labels
    wanted = selector if kind == "ReplicationController" else (
        selector.get("matchLabels") or {})
    if any(labels.get(k) != v for k, v in wanted.items()):
        out.append(cause("FieldValueInvalid", "spec.template.metadata.labels",
                         f"Invalid value: {labels!r}: `selector` does not match template "
                         f"`labels`"))
    return out


_POD_MUTABLE_MSG = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)")


def _check_pod_update(old: dict, new: dict) -> list[dict]:
    def neutral(spec: dict) -> dict:
        s = {k: v for k, v in spec.items()
             if k not in ("activeDeadlineSeconds", "tolerations", "schedulingGates")}
        for group in ("containers", "initContainers"):
            s[group] = [{k: v for k, v in c.items() if k != "image"}
                        for c in spec.get(group) or [] if isinstance(c, dict)]
        return s

    out = []
    if neutral(old) != neutral(new):
        out.append(cause("FieldValueForbidden", "spec", _POD_MUTABLE_MSG))
    old_tol = old.get("tolerations") or []
    if any(t not in (new.get("tolerations") or []) for t in old_tol):
        out.append(cause("FieldValueForbidden", "spec.tolerations",
                         "Forbidden: existing toleration can not be modified except its "
                         "tolerationSeconds"))
    return out
