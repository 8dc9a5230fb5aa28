"""A fast yes/no schema check in front of jsonschema's full validation.

Every write the emulator takes is checked against kubernetes-validate's strict schemas.
jsonschema walks a Pod's schema in several milliseconds, and almost every write is valid, so
the walk that finds and words the errors is paid for nothing. This module compiles a schema
once into nested closures that only answer "valid?": a yes skips the full walk, a no (or a
schema using a keyword it does not know) runs it, so error messages and the unknown-field
handling stay exactly jsonschema's.

It is conservative by construction: it answers yes only when it checked every assertion
keyword at every node it visited (type, enum, required, properties, additionalProperties,
items, $ref, allOf, anyOf, oneOf, not); any other keyword makes the whole schema
"unsupported" (None). Annotations (description, format, x-kubernetes-*, ...) assert nothing
under jsonschema's default (formats are not checked there either). tests/unit/
test_schemacheck.py holds it to jsonschema's verdict on valid and mutated objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# keywords that assert nothing (jsonschema's Draft 2020-12 validator checks no format unless
# asked to; the x-kubernetes-* extensions are the API server's, not JSON Schema's)
_ANNOTATIONS = frozenset({
    "description", "format", "title", "default", "examples", "example", "readOnly",
    "writeOnly", "deprecated", "$schema", "$id", "$comment", "$defs", "definitions",
    "discriminator"})
_ASSERTIONS = frozenset({
    "type", "enum", "required", "properties", "additionalProperties", "items", "$ref",
    "allOf", "anyOf", "oneOf", "not"})


def same(a: Any, b: Any) -> bool:
    """JSON equality, for "this field did not change, skip its check": Python's == takes
    True for 1 and 0 for False, so `replicas: 1` -> `true` would pass as unchanged."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class Unsupported(Exception):
    """The schema uses a keyword this checker does not evaluate."""


def _is_type(value: Any, name: str) -> bool:
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":  # 2020-12: a float with no fraction is an integer
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    raise Unsupported(f"type {name!r}")


# JSON types that are exactly one Python type (bool is no "integer" or "number" in JSON)
_PLAIN_TYPES = {"string": str, "object": dict, "array": list, "boolean": bool,
                "null": type(None)}


def _type_check(names: tuple[str, ...]) -> Check:
    """`type`: one isinstance() when every name is a plain type, _is_type otherwise."""
    if all(n in _PLAIN_TYPES for n in names):
        plain = tuple(_PLAIN_TYPES[n] for n in names)
        return lambda value: isinstance(value, plain)
    return lambda value: any(_is_type(value, n) for n in names)


def _enum_member(value: Any, choices: list) -> bool:
    # enums of the Kubernetes schemas hold strings (and null); JSON equality of those is ==
    return any(c is None and value is None or isinstance(c, str) and value == c
               for c in choices)


class SchemaCheck:
    """Compiles schemas of one document set; `check(schema)` gives a predicate or None."""

    def __init__(self, resolve_ref: Callable[[str], dict]):
        self._resolve_ref = resolve_ref
        self._by_ref: dict[str, Check] = {}

    def check(self, schema: Any) -> Check | None:
        """A predicate telling whether an instance is valid, or None when unsupported."""
        known = dict(self._by_ref)
        try:
            return self._compile(schema)
        except Unsupported:
            # what was compiled meanwhile may hold a placeholder of a ref that failed
            self._by_ref = known
            return None

    def _ref(self, ref: str) -> Check:
        compiled = self._by_ref.get(ref)
        if compiled is not None:
            return compiled
        holder: list[Check] = []
        # recursive definitions (JSONSchemaProps) meet themselves: late binding
        self._by_ref[ref] = lambda value: holder[0](value)
        try:
            target = self._compile(self._resolve_ref(ref))
        except BaseException:
            del self._by_ref[ref]
            raise
        holder.append(target)
        self._by_ref[ref] = target
        return target

    def _compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda value: True
        if schema is False:
            return lambda value: False
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        checks: list[Check] = []
        for key in schema:
            if key in _ANNOTATIONS or key.startswith("x-"):
                continue
            if key not in _ASSERTIONS:
                raise Unsupported(key)
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            for name in names:
                _is_type(None, name)  # unknown type names are unsupported, at compile time
            checks.append(_type_check(tuple(names)))
        if "enum" in schema:
            choices = schema["enum"]
            if not all(c is None or isinstance(c, str) for c in choices):
                raise Unsupported("enum of non-strings")
            checks.append(lambda value, choices=choices: _enum_member(value, choices))
        object_check = self._object(schema)
        if object_check is not None:
            checks.append(object_check)
        if "items" in schema:
            item = self._compile(schema["items"])
            checks.append(lambda value, item=item:
                          not isinstance(value, list) or all(item(v) for v in value))
        for key, combine in (("allOf", all), ("anyOf", any)):
            if key in schema:
                parts = [self._compile(s) for s in schema[key]]
                checks.append(lambda value, parts=parts, combine=combine:
                              combine(p(value) for p in parts))
        if "oneOf" in schema:
            parts = [self._compile(s) for s in schema["oneOf"]]
            checks.append(lambda value, parts=parts: sum(1 for p in parts if p(value)) == 1)
        if "not" in schema:
            negated = self._compile(schema["not"])
            checks.append(lambda value, negated=negated: not negated(value))
        if not checks:
            return lambda value: True
        if len(checks) == 1:
            return checks[0]
        return lambda value, checks=tuple(checks): all(c(value) for c in checks)

    def _object(self, schema: dict) -> Check | None:
        """properties, additionalProperties and required, which apply to objects only."""
        if not any(k in schema for k in ("properties", "additionalProperties", "required")):
            return None
        props = {k: self._compile(v) for k, v in (schema.get("properties") or {}).items()}
        extra_schema = schema.get("additionalProperties", True)
        extra = None if extra_schema is True else self._compile(extra_schema)
        required = tuple(schema.get("required") or ())

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            for name in required:
                if name not in value:
                    return False
            for key, item in value.items():
                prop = props.get(key)
                if prop is not None:
                    if not prop(item):
                        return False
                elif extra is not None and not extra(item):
                    return False
            return True

        return check
