"""Kubernetes `Status` error objects: the same codes, reasons and messages a real API server uses.

Every failure inside the emulator is an `APIError`; the HTTP layer turns it into a Status
body, so clients (kubernetes_asyncio, kubectl) see what they would see from a real cluster.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A failed API call, carried to the HTTP layer as a Status object.

    `details` None means the Status has no `details` key (BadRequest, Expired); an empty
    dict is sent as `"details":{}`, as a real server does for its generic errors.
    """

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
        self.details = None if details is None else dict(details)
        if causes:
            self.details = {**(self.details or {}), "causes": causes}

    def to_status(self) -> dict[str, Any]:
        """The Status in the field order a real server encodes (metav1.Status's struct)."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            status["details"] = ordered_details(self.details)
        status["code"] = self.code
        return status


_DETAIL_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")
_CAUSE_ORDER = ("reason", "message", "field")


def ordered_details(details: dict[str, Any]) -> dict[str, Any]:
    """StatusDetails with its keys in the Go struct's order, empty ones left out."""
    out = {k: details[k] for k in _DETAIL_ORDER if details.get(k)}
    if "causes" in out:
        out["causes"] = [{k: c[k] for k in _CAUSE_ORDER if c.get(k)} for c in out["causes"]]
    return out


def _details(name: str | None, group: str, kind: str) -> dict[str, Any]:
    return {"name": name, "group": group, "kind": kind}


_GENERIC = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
}


def generic(code: int, server_message: str = "") -> APIError:
    """The error a real server builds from a bare HTTP code (its route table, a failed JSON
    patch operation): fixed message, `"details":{}`."""
    reason, message = _GENERIC.get(code, ("Unknown", f"the server responded with the status "
                                                     f"code {code} but did not return more "
                                                     f"information"))
    if code == 415:
        reason, message = "UnsupportedMediaType", server_message
    return APIError(code, reason, message, details={})


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


def method_not_allowed() -> APIError:
    """A verb the resource has no route for."""
    return generic(405)


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
        f"accepted media types include: application/json-patch+json, "
        f"application/merge-patch+json, application/apply-patch+yaml, "
        f"application/strategic-merge-patch+json (got {content_type!r})",
    )


class PageNotFound(APIError):
    """A path outside every served group-version: a real server answers with Go's plain
    text `404 page not found`, not a Status."""

    def __init__(self) -> None:
        super().__init__(404, "NotFound", "404 page not found")


def internal_error(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}",
                    causes=[{"message": message}])
