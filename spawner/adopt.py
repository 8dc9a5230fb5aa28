"""Adopt, don't discard: a hub that restarts with spawns in flight keeps what runs.

On start-up JupyterHub 6 checks every server its database has (`init_spawners` ->
`check_spawner`): `poll()`; if that says "running", `get_url()` and an HTTP check there
within `http_timeout`; otherwise, or if the check fails, it stops the server. A spawn the
crash interrupted has only a placeholder address in its Server row (the real one is written
when `start()` returns), and KubeSpawner 7.1 corrects that address in `poll()` only for a
pod that is already ready and does not override `get_url()`. So a pod still starting when
the hub died was checked at the placeholder for `http_timeout` seconds, judged dead, and
deleted, even when it had become ready in the meantime.

KDashSpawner answers that start-up check itself (`poll()` while `pending == "check"`):

- its pod is ready and carries the API token the hub issued for this server: running;
  `get_url()` gives the pod's own address, so the hub's HTTP check and the proxy route
  go there;
- its pod is still starting: wait for it, at most `start_timeout` (`adopt_wait_seconds`)
  from the check, then as above (the crash cut the spawn's own wait short, and the hub's
  downtime is not the pod's fault, so it gets a full wait again);
- no pod (the crash came before it was made): not running, the hub forgets the server;
- anything else (finished, failing, never ready in time, or not carrying the hub's token):
  the pod is deleted, not running.

Either way the API token of the interrupted spawn, read back from the pod when it is this
user's, is set on the spawner so the hub's stop removes it from its database. An adopted
server's namespace bundle is finished too: a start may make the pod before the last bundle
objects and the completion hash (they go while the pod starts), so the crash may have cut
those off, and an adopted server has no next start to repair them. The namespace is
trusted when it carries the hash, otherwise every object is ensured (provision.py, "hash").
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from typing import Any

from jupyterhub import orm
from sqlalchemy.orm import object_session
from traitlets import Float
from traitlets.config import Configurable

from . import errors, servers
from .provision import BundleProvisioner

WAIT_STEP_SECONDS = 0.5
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"


class PodState(enum.Enum):
    ABSENT = "absent"
    STARTING = "starting"
    READY = "ready"
    FINISHED = "finished"


def classify(pod: Mapping[str, Any] | None,
             is_running: Callable[[Mapping[str, Any]], bool]) -> PodState:
    """Where a notebook pod is in its life (`is_running`: KubeSpawner.is_pod_running)."""
    if not pod:
        return PodState.ABSENT
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") in (
            "Succeeded", "Failed"):
        return PodState.FINISHED
    for container in status.get("containerStatuses") or []:
        if container.get("name") == "notebook" and "terminated" in (container.get("state")
                                                                    or {}):
            return PodState.FINISHED
    if is_running(pod):
        return PodState.READY
    return PodState.STARTING


def pod_token(pod: Mapping[str, Any]) -> str | None:
    """The hub API token in the notebook container's environment (KubeSpawner puts it
    there as a plain value)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == TOKEN_ENV and env.get("value"):
                return env["value"]
    return None


def wait_budget(start_timeout: float, fixed: float | None) -> float:
    """Seconds to wait for a pod that is still starting: `fixed` when set, else a whole
    start_timeout."""
    return max(start_timeout if fixed is None else fixed, 0.0)


class AdoptOnRestart(Configurable):
    """Mixed into KDashSpawner (configure as `c.KDashSpawner.<name>`)."""

    adopt_wait_seconds = Float(
        None, allow_none=True, config=True,
        help="After a hub restart, how long to wait for the pod of an interrupted spawn "
             "that is still starting before it is deleted. None (default): start_timeout. "
             "Ready pods are adopted at once either way. While any pod is waited for, the "
             "hub routes the servers whose check finished when it starts, the rest when "
             "the last check ends.",
    )

    _adopted_url: str | None = None
    _restart_checked = False

    async def poll(self):
        if self.pending == "check" and self.server is not None and not self._restart_checked:
            self._restart_checked = True
            return await self._check_after_restart()
        return await super().poll()

    async def get_url(self):
        """The pod's own address for an adopted server (JupyterHub asks only when
        poll() says running, to correct the address in its database)."""
        if self._adopted_url:
            return self._adopted_url
        return await super().get_url()

    async def _check_after_restart(self) -> int | None:
        await self._start_watching_pods()
        key = servers.reflector_key(self.namespace, self.pod_name)
        budget = wait_budget(self.start_timeout, self.adopt_wait_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while True:
            pod = self.pod_reflector.pods.get(key)
            state = classify(pod, self.is_pod_running)
            if state is not PodState.STARTING or loop.time() >= deadline:
                break
            await asyncio.sleep(WAIT_STEP_SECONDS)
        owned = pod is not None and self._take_token(pod)
        if state is PodState.ABSENT:
            self.log.warning("Hub restart: %s's spawn was interrupted before its pod was "
                             "made; the server is forgotten (the user can start again)",
                             self._log_name)
            return 1
        if state is PodState.READY and owned:
            self._adopted_url = self._get_pod_url(pod)
            self.log.info("Hub restart: adopting %s's server, pod %s ready at %s",
                          self._log_name, key, self._adopted_url)
            await self._finish_bundle_after_restart()
            return None
        why = ("it does not carry the token this hub issued for the server"
               if state is PodState.READY else errors.pod_problem(pod)
               if state is PodState.STARTING else "it has finished")
        self.log.warning("Hub restart: deleting pod %s of %s's interrupted spawn after "
                         "%.0fs: %s", key, self._log_name, budget, why)
        await self.stop(now=True)
        return 1

    async def _finish_bundle_after_restart(self) -> None:
        """Finish the adopted server's namespace bundle when it lacks the completion hash
        (one GET when it has it). A failure is logged; the server stays: its guardrails
        that the pod needed were made before it, and the next start repairs the rest."""
        if not getattr(self, "enable_user_namespaces", False) or not hasattr(
                self, "bundle_spec"):
            return
        try:
            spec = await self.bundle_spec()
            provisioner = BundleProvisioner(self.kube, self.log, "hash")
            outcome = await provisioner.ensure(spec, lambda message: None)
        except Exception as e:  # noqa: BLE001 - the running server matters more
            self.log.warning("Hub restart: could not finish the namespace bundle of %s: %s",
                             self._log_name, e)
            return
        if outcome != "unchanged":
            self.log.info("Hub restart: finished the namespace bundle of %s (%s)",
                          self._log_name, outcome)

    def _take_token(self, pod: Mapping[str, Any]) -> bool:
        """Set `api_token` from the pod when the hub issued that token to this user (so the
        hub's stop deletes it); False when the pod carries no such token."""
        token = pod_token(pod)
        session = object_session(self.orm_spawner) if self.orm_spawner is not None else None
        if not token or session is None:
            return False
        found = orm.APIToken.find(session, token)
        if found is None or found.user_id != self.user.id:
            self.log.warning("Hub restart: pod of %s carries an API token that is not one "
                             "of this user's", self._log_name)
            return False
        if not self.api_token:
            self.api_token = token
        return True
