"""Stopping the local services' processes the same way everywhere: ask, wait, then kill."""

from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Send `sig` to a running `proc`, wait up to `timeout` seconds, then SIGKILL it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
