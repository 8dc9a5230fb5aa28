"""Side services past their TTL: stop or delete them as their template says.

The launcher owns the instance records and the stop/delete operations
(`kdash_hub.services.launcher.lifecycle`); this only finds the expired ones and applies
`on_expiry`, with retries when the Kubernetes API is unavailable. A deleted instance's
connection details also leave the owner's notebook Secrets (`notebookenv.forget`: its keys
only; what the culler's role in user namespaces, secrets get/patch/delete, already allows).
Records are verified with
the launcher's signing key (`signer`, default: $KDASH_RECORD_SIGNING_KEY(_FILE)); one that
doesn't verify or can't be read is skipped and logged, and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kdash_hub.kube import KubeResources

from .logs import emit


@dataclass
class ExpiryResult:
    namespace: str
    name: str
    owner: str
    template: str
    action: str  # "stop" | "delete"
    done: bool
    error: str = ""


class SideServiceExpiry:
    """Apply the launcher's `expired_instances` / `stop_instance` / `delete_instance`."""

    def __init__(self, kube: KubeResources, *, retries: int = 5, backoff_base: float = 0.5,
                 backoff_max: float = 30.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 signer: Any = None):
        from kdash_hub.services.launcher.signing import default_signer

        self.kube = kube
        self.signer = signer or default_signer()
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep = sleep

    async def _retry(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except Exception as e:  # noqa: BLE001 - the API may fail in any way; retry
                if _not_retryable(e) or attempt > self.retries:
                    raise
                delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
                emit("kubernetes-retry", logging.WARNING, operation=what, attempt=attempt,
                     delay=delay, error=f"{type(e).__name__}: {e}")
                await self.sleep(delay)

    async def expired(self, now: datetime) -> list:
        from kdash_hub.services.launcher.lifecycle import expired_instances

        return await self._retry("list-expired",
                                 lambda: expired_instances(self.kube, now, self.signer))

    async def expire(self, now: datetime, *, dry_run: bool = False) -> list[ExpiryResult]:
        """Stop/delete every expired instance; one failure doesn't stop the others."""
        from kdash_hub.services.launcher.lifecycle import delete_instance, stop_instance

        results = []
        for ref in await self.expired(now):
            action = "delete" if ref.on_expiry == "delete" else "stop"
            result = ExpiryResult(ref.namespace, ref.name, ref.owner, ref.template, action,
                                  done=False)
            fields = {"user": ref.owner, "namespace": ref.namespace, "instance": ref.name,
                      "template": ref.template, "action": action, "dry_run": dry_run,
                      "expired_seconds": round((now - ref.expires_at).total_seconds(), 1)}
            if dry_run:
                emit("instance-expired", **fields, outcome="dry-run")
                results.append(result)
                continue
            operation = delete_instance if action == "delete" else stop_instance
            try:
                await self._retry(f"{action}-instance", lambda op=operation, r=ref:
                                  op(self.kube, r.namespace, r.name, signer=self.signer))
                result.done = True
                emit("instance-expired", **fields, outcome="done")
            except Exception as e:  # noqa: BLE001 - log, count, go on with the next one
                result.error = f"{type(e).__name__}: {e}"
                emit("instance-expiry-failed", logging.ERROR, **fields, error=result.error)
            if result.done and action == "delete":
                await self._forget(ref)
            results.append(result)
        return results

    async def _forget(self, ref: Any) -> None:
        """The deleted instance's variables and files out of the owner's notebook; a
        failure is logged (the launcher's next change for that user rebuilds them)."""
        from kdash_hub.services.launcher.notebookenv import forget

        try:
            removed = await self._retry("forget-notebook-details", lambda: forget(
                self.kube, ref.namespace, ref.owner, ref.name))
        except Exception as e:  # noqa: BLE001 - the delete is done; say what is left
            emit("notebook-details-left", logging.WARNING, user=ref.owner,
                 namespace=ref.namespace, instance=ref.name, error=f"{type(e).__name__}: {e}")
            return
        if removed:
            emit("notebook-details-removed", user=ref.owner, namespace=ref.namespace,
                 instance=ref.name, keys=len(removed))


def _not_retryable(exc: Exception) -> bool:
    """Client errors (4xx but 429) won't get better by retrying."""
    status = getattr(exc, "status", None)
    if exc.__class__.__name__ in ("InstanceNotFound", "RecordInvalid"):
        return True
    return isinstance(status, int) and 400 <= status < 500 and status != 429
