"""KubeSpawner's shared watches, started out of reach of their callers' cancellation.

KubeSpawner 7.1 keeps one pod watch and one event watch per hub (class-level reflectors),
started by the first spawner that needs one while the others wait for its bare
`first_load_future`. When JupyterHub cancels one caller (it cancels a spawn's progress
stream as soon as that spawn fails; a start that times out is cancelled too) while the
hub's first list of pods or events is still running:

- cancelled while awaiting `first_load_future`: cancelling a task cancels the future it
  awaits, so every other spawn waiting on that shared future ends with CancelledError, and
  JupyterHub 6 takes a cancelled spawn for a finished one: it reports the server ready,
  with no pod behind it;
- cancelled during the first list itself: the reflector stays registered but never loads,
  and every later spawn of the hub waits on it until its start_timeout.

Seen here with 20 first spawns under API faults on a fresh hub (after a restart, say). Each
start of a watch therefore runs in a task of its own, and callers wait for it through
`asyncio.shield`: a cancelled caller stops waiting, the watch goes on loading.
"""

from __future__ import annotations

import asyncio

from traitlets.config import Configurable


class ShieldedReflectors(Configurable):
    """Mixed into KDashSpawner in front of KubeSpawner."""

    async def _start_watching_pods(self, replace=False):
        return await asyncio.shield(asyncio.ensure_future(
            super()._start_watching_pods(replace=replace)))

    async def _start_watching_events(self, replace=False):
        return await asyncio.shield(asyncio.ensure_future(
            super()._start_watching_events(replace=replace)))
