"""HubProcess: a start that loses a port to another process starts again on others, and one
that cannot says so (the test fixtures' hub; a CI run lost the proxy's public port)."""

from __future__ import annotations

import socket

import pytest

from kdash_hub.dev.hub import HubProcess


def _listening() -> socket.socket:
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    return busy


async def test_a_public_port_taken_meanwhile_is_given_up_for_another(tmp_path):
    """configurable-http-proxy fails to listen but lives on, and so does the hub: the start
    notices in the log instead of waiting for an answer that never comes."""
    with _listening() as busy:
        hub = HubProcess("", tmp_path / "hub", start_timeout=90)
        hub.port = busy.getsockname()[1]  # as if taken between free_port() and the bind
        try:
            await hub.start()
            assert hub.port != busy.getsockname()[1]
            failed = list((tmp_path / "hub").glob("jupyterhub.failed-start-*.log"))
            assert len(failed) == 1 and "EADDRINUSE" in failed[0].read_text()
        finally:
            await hub.stop()


async def test_a_public_port_the_caller_gave_is_kept_and_the_failure_named(tmp_path):
    with _listening() as busy:
        taken = busy.getsockname()[1]
        hub = HubProcess("", tmp_path / "hub", port=taken, start_timeout=90)
        try:
            with pytest.raises(RuntimeError, match="could not listen on its ports"):
                await hub.start(port_retries=1)
            assert hub.port == taken
        finally:
            await hub.stop()
    assert hub.process is None or hub.process.poll() is not None
