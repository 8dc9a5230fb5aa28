"""URL paths of the Kubernetes API, parsed into (type, namespace, name, subresource, watch).

Handles the core group (/api/v1/...), named groups (/apis/GROUP/VERSION/...), the legacy
/watch/ prefix, and the namespace resource's own subresources (/namespaces/NAME/status).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import resources
from .resources import ResourceType
from .status import APIError, PageNotFound, generic


@dataclass
class Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_prefix: bool = False


def _unknown(group: str, version: str) -> APIError:
    """Inside a served group-version the route table answers with a generic 404 Status;
    elsewhere Go's plain `404 page not found`, as a real server does."""
    if version in resources.groups().get(group, []):
        return generic(404)
    return PageNotFound()


def parse(path: str) -> Target | None:
    """A resource target, None for non-resource paths; raises 404 for unknown resources."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    watch = False
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
        if not rest:
            raise _unknown(group, version)
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    rtype = resources.by_path(group, version, rest[0])
    if rtype is None or (namespace is not None and not rtype.namespaced):
        raise _unknown(group, version)
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) >= 3 else None
    if len(rest) > 3 or (sub is not None and sub not in rtype.subresources):
        raise _unknown(group, version)
    return Target(rtype, namespace, name, sub, watch)
