"""Bodies in and out: JSON responses, Status error responses, request body decoding."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from .status import APIError, PageNotFound, bad_request
from .validation import request_duplicates

_DUPS = "\x00duplicates"  # where a decoded object notes its duplicate keys, briefly


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


def status_response(err: APIError) -> web.Response:
    if isinstance(err, PageNotFound):
        return web.Response(text="404 page not found\n", status=404, content_type="text/plain")
    return json_response(err.to_status(), err.code)


async def read_body(request: web.Request, *, optional: bool = False, yaml_ok: bool = False
                    ) -> Any:
    """The decoded JSON (or YAML) body; 400 when malformed, 415 for protobuf/CBOR."""
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    if "protobuf" in ctype or "cbor" in ctype:
        raise APIError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media "
                       f"types include: application/json, application/yaml (got {ctype}; "
                       f"this emulator speaks JSON only)")
    yaml_ok = yaml_ok or ctype in ("application/yaml", "application/x-yaml")
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise bad_request("the body of the request was empty")
    try:
        if yaml_ok:
            return yaml.safe_load(raw)
        found: list[bool] = []
        body = json.loads(raw, object_pairs_hook=lambda pairs: _object(pairs, found))
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None
    if found:
        paths: list[str] = []
        _collect_duplicates(body, "", paths)
        duplicates = request_duplicates.get()
        if duplicates is not None:
            duplicates.extend(paths)
    return body


def _object(pairs: list[tuple[str, Any]], found: list[bool]) -> dict:
    """A JSON object; a key given twice keeps its last value (as Go's decoder does) and is
    noted, so fieldValidation can warn about it or refuse it."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj[_DUPS] = list(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
        found.append(True)
    return obj


def _collect_duplicates(value: Any, path: str, out: list[str]) -> None:
    """Paths (`spec.containers[0].name`) of the noted duplicate keys, notes removed."""
    if isinstance(value, dict):
        for key in value.pop(_DUPS, ()):
            out.append(f"{path}.{key}" if path else key)
        for key, item in value.items():
            _collect_duplicates(item, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _collect_duplicates(item, f"{path}[{i}]", out)
