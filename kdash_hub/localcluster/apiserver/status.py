"""Kubernetes `Status` error objects: the same codes, reasons and messages a real API server uses.

Every failure inside the emulator is an `APIError`; the HTTP layer turns it into a Status
body, so clients (kubernetes_asyncio, kubectl) see what they would see from a real cluster.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A failed API call, carried to the HTTP layer as a Status object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        causes: list[dict[str, str]] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
        if causes:
            self.details["causes"] = causes

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(name: str | None, group: str, kind: str) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": kind}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    return d


def qualified(plural: str, group: str) -> str:
    """`pods`, `deployments.apps`: how Kubernetes names a resource in messages."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> APIError:
    return APIError(
        404, "NotFound", f'{qualified(plural, group)} "{name}" not found',
        details=_details(name, group, plural),
    )


def already_exists(plural: str, group: str, name: str) -> APIError:
    return APIError(
        409, "AlreadyExists", f'{qualified(plural, group)} "{name}" already exists',
        details=_details(name, group, plural),
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> APIError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return APIError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        details=_details(name, group, plural),
    )


def forbidden(plural: str, group: str, name: str, why: str) -> APIError:
    return APIError(
        403, "Forbidden", f'{qualified(plural, group)} "{name}" is forbidden: {why}',
        details=_details(name, group, plural),
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> APIError:
    """422 Invalid; each cause is {reason, message, field}, as the real server reports them."""
    what = f"{kind}.{group}" if group else kind
    summary = causes[0]["field"] + ": " + causes[0]["message"] if len(causes) == 1 else (
        "[" + ", ".join(f"{c['field']}: {c['message']}" for c in causes) + "]"
    )
    return APIError(
        422, "Invalid", f'{what} "{name}" is invalid: {summary}',
        details=_details(name, group, kind), causes=causes,
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> APIError:  # noqa: E501
    return APIError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
        f"accepted media types include: application/json-patch+json, "
        f"application/merge-patch+json, application/apply-patch+yaml, "
        f"application/strategic-merge-patch+json (got {content_type!r})",
    )


def internal_error(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")
