"""The hubs the dev tooling starts import what the z2jh hub image has, and nothing the local
cluster alone brings into the venv (kdash_hub.dev.hub.NOT_IN_HUB_IMAGE)."""

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
