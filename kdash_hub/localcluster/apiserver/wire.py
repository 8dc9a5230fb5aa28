"""Bodies in and out: JSON responses, Status error responses, request body decoding."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from .status import APIError, bad_request


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data, separators=(",", ":")).encode(), status=status,
                        content_type="application/json")


def status_response(err: APIError) -> web.Response:
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
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None
