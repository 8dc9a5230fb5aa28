"""A start sees its pod running when the hub's pod watch does, not at KubeSpawner's next look.

KubeSpawner waits for a new pod with JupyterHub's `exponential_backoff`: it looks at random
moments within 0.2, 0.4, 0.8 ... up to 5 s of each other, so a pod that runs just after a
look is seen up to seconds later (with 200 starts at once on the emulator, 1.2 s from the
pod Running to the server ready at p95 for plain KubeSpawner, 2.2 s for pods running a
little later). `RunningWatch` looks at the same pod (KubeSpawner's pod reflector) with the
same test (`is_pod_running`) every `interval` seconds, for every waiting start of a hub in
one pass, and resolves each start's future once its pod passes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

IsRunning = Callable[[Any], bool]


class RunningWatch:
    """The starts waiting on one pod reflector, looked at together every `interval` s."""

    # per reflector (one per hub process in KubeSpawner's default settings)
    _watches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, reflector: Any):
        self._reflector = weakref.ref(reflector)
        # future -> (ref_key, is_running, interval)
        self._starts: dict[asyncio.Future, tuple[str, IsRunning, float]] = {}
        self._ticker: asyncio.Task | None = None

    @classmethod
    def of(cls, reflector: Any) -> RunningWatch:
        watch = cls._watches.get(reflector)
        if watch is None:
            watch = cls._watches[reflector] = cls(reflector)
        return watch

    def wait(self, ref_key: str, is_running: IsRunning, interval: float) -> asyncio.Future:
        """A future resolved with the pod `ref_key` ("namespace/name") once `is_running`
        says so of the reflector's copy; cancel it to stop waiting."""
        future = asyncio.get_running_loop().create_future()
        self._starts[future] = (ref_key, is_running, interval)
        future.add_done_callback(self._forget)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick())
        return future

    def _forget(self, future: asyncio.Future) -> None:
        self._starts.pop(future, None)

    async def _tick(self) -> None:
        while self._starts:
            reflector = self._reflector()
            if reflector is None:  # the hub replaced its reflector: KubeSpawner's own look
                return
            pods = reflector.pods
            for future, (ref_key, is_running, _) in list(self._starts.items()):
                pod = pods.get(ref_key)
                if pod is None or future.done():
                    continue
                try:
                    running = is_running(pod)
                except (KeyError, TypeError):  # a status without a field it reads: not yet
                    running = False
                if running:
                    future.set_result(pod)
            if self._starts:
                await asyncio.sleep(min(i for _, _, i in self._starts.values()))
