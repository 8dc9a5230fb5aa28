"""Finding 8, upgrading: a name KubeSpawner saved in the spawner's state under 0.1 is used
only to find a server that is still running; the next start uses today's name, the same
one the launcher computes, so a user whose name moved can't keep an old, collidable one."""

from __future__ import annotations

from kubespawner import KubeSpawner

from kdash_hub.naming import readable_label, user_namespace
from tests.fixtures.spawner import build_spawner


async def test_a_start_uses_todays_namespace_not_the_one_in_state(offline_kube, monkeypatch):
    started = []

    async def fake_start(self):  # KubeSpawner's own start: no cluster in this test
        started.append((self.namespace, self.dns_name))
        return "http://127.0.0.1:8888"

    monkeypatch.setattr(KubeSpawner, "start", fake_start)
    name = "john.smith"
    old = readable_label("kdash-" + name)  # what 0.1 made and KubeSpawner saved
    spawner = build_spawner(username=name)
    spawner.load_state({"namespace": old, "pod_name": "jupyter-john-2esmith",
                        "dns_name": f"jupyter-john-2esmith.{old}.svc.cluster.local"})
    assert spawner.namespace == old  # a running server is still found where it is
    await spawner.start()
    new = user_namespace(name)
    assert started == [(new, f"{spawner.pod_name}.{new}.svc.cluster.local")]
    assert new != old and not new.endswith(old.removeprefix("kdash-"))


async def test_kept_names_do_not_move(offline_kube, monkeypatch):
    async def fake_start(self):
        return "http://127.0.0.1:8888"

    monkeypatch.setattr(KubeSpawner, "start", fake_start)
    spawner = build_spawner(username="alice")
    spawner.load_state({"namespace": "kdash-alice"})
    await spawner.start()
    assert spawner.namespace == "kdash-alice"
