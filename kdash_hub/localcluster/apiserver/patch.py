"""The three patch formats: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge.

Strategic merge follows Kubernetes' own rules for the fields that have them: lists are merged
by their merge key (containers/volumes/env by name, volumeMounts by mountPath, container
ports by containerPort, service ports by port, imagePullSecrets by name, ownerReferences by
uid, conditions by type; finalizers merge as a set) and `$patch: delete|replace|merge`,
`$setElementOrder/<field>`, `$retainKeys` and `$deleteFromPrimitiveList/<field>` directives are
understood. Lists without a merge key are replaced, as on a real server (tolerations are
`listType=atomic` in Kubernetes, so a patch replaces them).
"""

from __future__ import annotations

from typing import Any

from .copying import deep_copy
from .status import APIError, bad_request, generic

# (parent field, field) or field -> merge key
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "readinessGates": "conditionType",
    "resourceClaims": "name",
    "addresses": "type",
}
_PRIMITIVE_MERGE = {"finalizers"}


def merge_key(path: tuple[str, ...]) -> str | None:
    field = path[-1]
    if field == "ports":
        # container ports merge by containerPort, a Service's by port
        return "containerPort" if len(path) >= 2 and path[-2] in (
            "containers", "initContainers", "ephemeralContainers") else "port"
    return _MERGE_KEYS.get(field)


# ---------------------------------------------------------------- JSON merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return deep_copy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- JSON patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _patch_error(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _patch_error(message: str) -> APIError:
    """A JSON patch operation that fails: a real server answers a generic 422 (its message
    doesn't carry the reason)."""
    return generic(422, message)


def _container_and_key(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _patch_error(f"doc is missing path: /{'/'.join(tokens)}")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError):
                raise _patch_error(f"doc is missing path: /{'/'.join(tokens)}") from None
        else:
            raise _patch_error(f"doc is missing path: /{'/'.join(tokens)}")
    return cur, tokens[-1]


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, key = _container_and_key(doc, tokens)
    try:
        return parent[int(key)] if isinstance(parent, list) else parent[key]
    except (KeyError, ValueError, IndexError, TypeError):
        raise _patch_error(f"doc is missing path: /{'/'.join(tokens)}") from None


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, key = _container_and_key(doc, tokens)
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            try:
                idx = int(key)
            except ValueError:
                raise _patch_error(f"invalid array index {key!r}") from None
            if idx < 0 or idx > len(parent):
                raise _patch_error(f"array index {idx} out of bounds")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise _patch_error(f"doc is missing path: /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, key = _container_and_key(doc, tokens)
    try:
        if isinstance(parent, list):
            del parent[int(key)]
        else:
            del parent[key]
    except (KeyError, ValueError, IndexError, TypeError):
        raise _patch_error(
            f"unable to remove nonexistent key: {key}: missing value") from None
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = deep_copy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, tokens, deep_copy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)
            if not tokens:
                doc = deep_copy(op.get("value"))
            else:
                parent, key = _container_and_key(doc, tokens)
                if isinstance(parent, list):
                    parent[int(key)] = deep_copy(op.get("value"))
                else:
                    parent[key] = deep_copy(op.get("value"))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = deep_copy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op.get("value"):
                raise _patch_error(f"testing value {op['path']} failed: test failed")
        else:
            raise bad_request(f"unexpected kind of JSON patch operation: {kind!r}")
    return doc


# ---------------------------------------------------------------- strategic merge patch


class _NoSchema:
    """Fallback when no schema is known: the merge-key table above."""

    root = None

    def field(self, node: Any, key: str) -> None:
        return None

    def child(self, node: Any, key: str) -> None:
        return None

    def items(self, field: Any) -> None:
        return None


def strategic_merge_patch(target: Any, patch: Any, schema: Any = None) -> Any:
    """Kubernetes strategic merge patch of `patch` onto `target` (neither is modified).

    `schema` (a validation.PatchSchema) supplies each field's patch strategy and merge key
    from the OpenAPI definitions; without it the built-in table is used.
    """
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    s = schema or _NoSchema()
    return _smp_map(deep_copy(target) if isinstance(target, dict) else {}, patch, (),
                    s, s.root)


def _list_meta(s: Any, node: Any, key: str, path: tuple[str, ...]) -> tuple[bool, str | None]:
    """(merge?, merge key) of a list field, from the schema or the fallback table."""
    field = s.field(node, key) if node is not None else None
    if field is None:
        if key in _PRIMITIVE_MERGE:
            return True, None
        mk = merge_key(path)
        return mk is not None, mk
    strategy = str(field.get("x-kubernetes-patch-strategy") or "")
    return "merge" in strategy.split(","), field.get("x-kubernetes-patch-merge-key")


def _smp_map(target: dict, patch: dict, path: tuple[str, ...], s: Any = None,
             node: Any = None) -> dict | None:
    s = s or _NoSchema()
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: deep_copy(v) for k, v in patch.items() if k != "$patch"}
    retain = patch.get("$retainKeys")
    result = target
    orders: dict[str, list] = {}
    originals = {k: v for k, v in target.items() if isinstance(v, list)}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = set(map(str, value or []))
            result[field] = [v for v in result.get(field) or [] if str(v) not in drop]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = path + (key,)
        current = result.get(key)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value, sub,
                              s, s.child(node, key))
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            merge, mk = _list_meta(s, node, key, sub)
            result[key] = _smp_list(current if isinstance(current, list) else [], value, sub,
                                    merge, mk, s, s.items(s.field(node, key)))
        else:
            result[key] = deep_copy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list) and isinstance(order, list):
            result[field] = normalize_order(result[field], order, originals.get(field) or [],
                                            _list_meta(s, node, field, path + (field,))[1])
    if isinstance(retain, list):
        keep = set(retain)
        result = {k: v for k, v in result.items() if k in keep}
    return result


def _smp_list(current: list, patch: list, path: tuple[str, ...], merge: bool,
              key: str | None, s: Any, item_node: Any) -> list:
    # `[{"$patch": "replace"}, ...items]` replaces the whole list
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [deep_copy(p) for p in patch
                if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    if not merge:
        return deep_copy(patch)
    if key is None:  # a set of primitives, e.g. finalizers
        out = list(current)
        for v in patch:
            if v not in out:
                out.append(v)
        return normalize_order(out, patch, current, None)
    if not all(isinstance(p, dict) for p in patch):
        return deep_copy(patch)
    out = [deep_copy(c) for c in current]
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, c in enumerate(out)
                    if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append({k: deep_copy(v) for k, v in item.items() if k != "$patch"})
        else:
            merged = _smp_map(out[idx], item, path, s, item_node)
            if merged is not None:
                out[idx] = merged
    order = [p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "delete")]
    return normalize_order(out, order, current, key)


def normalize_order(merged: list, order: list, original: list, key: str | None) -> list:
    """The order a real server gives a merged list (strategicpatch's normalizeElementOrder):
    the patch's items in the patch's order, the server-only items in their old order, the
    latter slotted in before a patch item they preceded on the server; new items first."""

    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    before = [ident(o) for o in original]

    def rank(ids: list, x: Any) -> int:
        i = ident(x)
        return ids.index(i) if i in ids else -1

    patch_items = sorted((x for x in merged if ident(x) in wanted),
                         key=lambda x: rank(wanted, x))
    server_only = sorted((x for x in merged if ident(x) not in wanted),
                         key=lambda x: rank(before, x))
    out: list = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        else:
            left, right = rank(before, server_only[i]), rank(before, patch_items[j])
            if left >= 0 and right >= 0 and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out
