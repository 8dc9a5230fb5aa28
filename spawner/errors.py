"""A sentence a person understands for every failure a user can meet while a server starts.

JupyterHub shows an exception's `jupyterhub_message` attribute, when it has one, on the
spawn page, in the progress stream's "Spawn failed" event and in REST API errors. Without
it a Kubernetes error reaches the user as a bare `500 Internal Server Error` (REST) or a
dump of `(500) Reason: ... HTTP response headers ...` (spawn page). Here each failure gets
that attribute: what went wrong, and what to do; the detail (status, body) goes to the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from kdash_hub.kube import api_error_message

# answers of the API server that a later attempt may not get (overload, a restarting etcd)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
AGAIN = "Try starting your server again"
ADMIN = "if it keeps failing, an admin can find the details in the hub log"
# container waiting reasons that only mean "still starting"
_STARTING_REASONS = {"ContainerCreating", "PodInitializing"}


def with_message(exc: BaseException, message: str) -> BaseException:
    """`exc` with the sentence JupyterHub shows to the user."""
    exc.jupyterhub_message = message  # type: ignore[attr-defined]
    return exc


def message_of(exc: BaseException) -> str | None:
    """The user's sentence already on `exc`, if any."""
    return getattr(exc, "jupyterhub_message", None)


def http_error(status: int, message: str) -> web.HTTPError:
    """A tornado HTTPError whose sentence is the same in every place the hub shows it."""
    error = web.HTTPError(status, message)
    return with_message(error, message)  # type: ignore[return-value]


def http_error_message(error: web.HTTPError) -> str:
    """The text of a tornado HTTPError without its "HTTP 500: Internal Server Error" prefix."""
    return error.get_message() or error.reason or f"HTTP {error.status_code}"


def api_failure(step: str, e: ApiException) -> web.HTTPError:
    """The user's sentence for a Kubernetes API error while `step` ("creating your server's
    pod"). Temporary failures say "try again" (503), refusals say who can fix them."""
    detail = f"{e.status} {e.reason or ''}".strip()
    text = api_error_message(e)
    if text and text not in detail:
        detail = f"{detail}: {text}"
    if e.status in TRANSIENT_STATUSES:
        return http_error(503, f"The Kubernetes API failed while {step} ({detail}). This is "
                               f"usually temporary: {AGAIN.lower()}; {ADMIN}.")
    if e.status == 403:
        return http_error(403, f"Kubernetes refused {step} ({text}). Choose a smaller profile "
                               "or stop other things running in your namespace; if that is "
                               "not it, ask an admin (the hub log has the details).")
    if e.status == 409:
        return http_error(409, f"Something else is in the way of {step} ({text}). "
                               f"{AGAIN} in a minute; {ADMIN}.")
    return http_error(500, f"Kubernetes refused {step} ({detail}). This is a configuration "
                           "problem: ask an admin, who can find the details in the hub log.")


def unexpected(step: str, exc: BaseException) -> web.HTTPError:
    """An error nobody planned for: the type, not the traceback, for the user."""
    return http_error(500, f"Your server could not be started: an unexpected "
                           f"{type(exc).__name__} while {step}. {AGAIN}; {ADMIN}.")


def interrupted(step: str) -> web.HTTPError:
    """A start that was cancelled under the spawner (not by the user or a timeout)."""
    return http_error(503, f"Starting your server was interrupted while {step}. "
                           f"{AGAIN}; {ADMIN}.")


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def pod_problem(pod: Mapping[str, Any] | None) -> str:
    """What keeps a pod from being ready, in words (scheduling, image, crash, ...)."""
    if not pod:
        return "its pod was not created"
    status = pod.get("status") or {}
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        why = scheduled.get("message") or scheduled.get("reason") or "no reason given"
        return f"no node could take it ({why})"
    for container in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []):
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in _STARTING_REASONS:
            message = f": {waiting['message']}" if waiting.get("message") else ""
            return f"container {container.get('name')} is waiting ({waiting['reason']}{message})"
        done = state.get("terminated") or {}
        if done and (done.get("exitCode") or 0) != 0:
            return (f"container {container.get('name')} exited with code {done.get('exitCode')}"
                    f" ({done.get('reason') or 'no reason given'})")
    phase = status.get("phase") or "Pending"
    if phase == "Running":
        return "its pod runs but the server did not become ready"
    return f"its pod is still {phase}"


def timeout_message(seconds: float, pod: Mapping[str, Any] | None) -> str:
    """Why a server did not start within start_timeout."""
    return (f"Your server did not start within {seconds:g} seconds: {pod_problem(pod)}. "
            f"{AGAIN}, perhaps with a smaller profile; {ADMIN}.")
