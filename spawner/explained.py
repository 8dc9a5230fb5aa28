"""The start path with every failure explained (sentences in errors.py), and temporary API
errors at the pod and claim creates tried again a few times.

Mixed into KDashSpawner in front of KubeSpawner. `start()` wraps KubeSpawner's start future:
a web.HTTPError keeps its status and gets `jupyterhub_message`; a Kubernetes ApiException
becomes an HTTPError whose sentence names the step that failed; anything else becomes a
sentence naming its type, with the traceback in the log. The wrapper also gives up a moment
before JupyterHub's own `start_timeout`, so a server that does not start is reported with
what its pod is waiting for instead of JupyterHub's bare timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web
from traitlets import Integer
from traitlets.config import Configurable

from . import errors, servers


def _margin(start_timeout: float) -> float:
    """How much earlier than JupyterHub's start_timeout the wrapper gives up."""
    return min(1.0, start_timeout * 0.05)


class ExplainedStart(Configurable):
    """Mixed into KDashSpawner (configure as `c.KDashSpawner.<name>`)."""

    api_retries = Integer(
        3, min=0, config=True,
        help="How many more times a start creates its pod or home claim after the "
             "Kubernetes API answered with a temporary error (429, 500, 502, 503, 504). "
             "After that the start fails with a sentence saying what happened.",
    )

    _step = "starting your server"
    _retries_used = 0
    _last_api_error: ApiException | None = None

    def start(self):
        self._step = "preparing your server"
        self._retries_used = 0
        self._last_api_error = None
        inner = super().start()  # KubeSpawner: the future of _start(), kept as _start_future
        return asyncio.ensure_future(self._explained(asyncio.ensure_future(inner)))

    async def _explained(self, inner: asyncio.Future) -> Any:
        budget = max(self.start_timeout - _margin(self.start_timeout), 0.5)
        try:
            done, _ = await asyncio.wait([inner], timeout=budget)
        except asyncio.CancelledError:
            inner.cancel()
            raise
        if not done:
            inner.cancel()
            message = errors.timeout_message(self.start_timeout, self._own_pod())
            self.log.warning("%s did not start in %ss while %s: %s", self._log_name,
                             self.start_timeout, self._step, message)
            raise errors.with_message(TimeoutError(message), message)
        if inner.cancelled():
            # not by us: something the start awaited was cancelled under it. Passed on as a
            # cancellation, JupyterHub would take the spawn for done and the server for ready
            self.log.error("%s: the start was cancelled from inside while %s",
                           self._log_name, self._step)
            raise errors.interrupted(self._step)
        try:
            return inner.result()
        except Exception as e:
            raise self._explain(e) from e

    def _explain(self, e: Exception) -> BaseException:
        """`e` as the user should see it (its detail logged here)."""
        if isinstance(e, web.HTTPError):
            if not errors.message_of(e):
                errors.with_message(e, errors.http_error_message(e))
            return e
        if isinstance(e, ApiException):
            self.log.error("%s: Kubernetes API error while %s: %s %s %s", self._log_name,
                           self._step, e.status, e.reason, e.body)
            return errors.api_failure(self._step, e)
        if isinstance(e, TimeoutError):
            last = self._last_api_error
            if last is not None and self._step.startswith("creating"):
                self.log.error("%s: %s kept failing (last: %s %s)", self._log_name,
                               self._step, last.status, last.body)
                return errors.api_failure(self._step, last)
            if errors.message_of(e):
                return e
            return errors.with_message(e, errors.timeout_message(self.start_timeout,
                                                                 self._own_pod()))
        self.log.error("%s: unexpected error while %s", self._log_name, self._step,
                       exc_info=e)
        return errors.unexpected(self._step, e)

    def _own_pod(self) -> dict | None:
        reflector = getattr(self, "pod_reflector", None)
        if reflector is None:
            return None
        return reflector.pods.get(servers.reflector_key(self.namespace, self.pod_name))

    # --- the creates KubeSpawner retries with exponential_backoff: False means "again" ----

    async def _make_create_pod_request(self, pod, request_timeout):
        created = await self._create_step("creating your server's pod",
                                          super()._make_create_pod_request, pod,
                                          request_timeout)
        if created:
            self._step = "waiting for your server's pod to start"
        return created

    async def _make_create_pvc_request(self, pvc, request_timeout):
        if self._pvc_exists:  # KubeSpawner 7.0 asks again for a known claim (7.1 doesn't)
            return True
        return await self._create_step("creating your home volume claim",
                                       super()._make_create_pvc_request, pvc, request_timeout)

    async def _create_step(self, step: str, create, obj: Any, request_timeout: float) -> bool:
        self._step = step
        try:
            return await create(obj, request_timeout)
        except ApiException as e:
            self._last_api_error = e
            if e.status in errors.TRANSIENT_STATUSES and self._retries_used < self.api_retries:
                self._retries_used += 1
                self.log.warning("%s: %s failed with %s %s; trying again (%d of %d)",
                                 self._log_name, step, e.status, e.reason,
                                 self._retries_used, self.api_retries)
                return False
            raise
