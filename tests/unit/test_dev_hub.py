"""The hubs the dev tooling starts: they import what the z2jh hub image has, and nothing the local
cluster alone brings into the venv (NOT_IN_HUB_IMAGE); a dying one says why."""

import subprocess
import sys

from kdash_hub.dev.hub import NOT_IN_HUB_IMAGE, HubProcess

PROBE = """
import kubernetes_asyncio.dynamic.client as dynamic
try:
    import kubernetes_validate
    print("imported")
except ImportError as e:
    print("refused:", e)
print("validate" if dynamic.HAS_KUBERNETES_VALIDATE else "no-validate")
"""


def _probe(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.splitlines()


def test_the_hubs_environment_hides_what_the_hub_image_lacks(tmp_path):
    assert NOT_IN_HUB_IMAGE == ("kubernetes_validate",)
    hub = HubProcess("", tmp_path / "hub", env={"KDASH_PROBE": "1"})
    env = hub._environment()
    lines = _probe(env)
    assert lines[0].startswith("refused:") and "z2jh hub image" in lines[0], lines
    assert lines[1] == "no-validate", lines
    assert env["KDASH_PROBE"] == "1"  # the caller's variables still reach the hub


def test_the_venv_itself_keeps_it_for_the_local_cluster(tmp_path):
    # the same probe without the hub's PYTHONPATH: the emulator's schema validation needs it
    env = {k: v for k, v in HubProcess("", tmp_path / "hub")._environment().items()
           if k != "PYTHONPATH"}
    assert _probe(env) == ["imported", "validate"]


def test_a_dying_hubs_own_lines_are_not_buried_under_the_proxys(tmp_path):
    hub = HubProcess("", tmp_path / "hub")
    hub.log_path.write_text(
        "[I hub] starting\n"
        "Traceback (most recent call last):\n"
        '  File "app.py", line 1, in start\n'
        "ValueError: the reason\n"
        + "2026 [ConfigProxy] error: 404 GET /hub/api/\n"
          "    at TCPConnectWrap.afterConnect\n"
          "  errno: -111,\n"
          "}\n" * 30
        + "[C hub] exiting\n")
    tail = hub.log_tail(hub_only=True).splitlines()
    assert tail == ["[I hub] starting", "Traceback (most recent call last):",
                    '  File "app.py", line 1, in start', "ValueError: the reason",
                    "[C hub] exiting"]
    assert "ValueError: the reason" not in hub.log_tail()  # what the plain tail showed
