"""`kill -9` of a real hub during concurrent spawns, at several points, then a restart on
the same database: nothing that reached a running state is lost, nothing half-made stays,
no pod is orphaned, the hub home tells the truth, and one more start repairs the rest.

Each test: a fresh local cluster whose kubelet runs every notebook as a real
jupyterhub-singleuser process, a real hub + proxy (subprocess) with KDashSpawner, and
N users spawning at once through the REST API (tests/fixtures/crashlab.py).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.crashlab import CrashLab, kill_points

N = 10
KILL_POINTS = kill_points(N)


@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_hub_killed_during_spawns_loses_nothing(tmp_path, point):
    lab = await CrashLab(tmp_path, N).start()
    try:
        spawns = [asyncio.ensure_future(lab.spawn(name)) for name in lab.names]
        await lab.wait_pods(KILL_POINTS[point])
        pods_at_kill = set(await lab.notebook_pods())
        running_at_kill = await lab.running_pod_users()
        lab.kill_hub()
        for spawn in spawns:
            spawn.cancel()
        if point == "all-running":
            assert running_at_kill == set(lab.names)

        began = await lab.restart_hub()
        pods_ready = asyncio.ensure_future(lab.all_pods_ready())
        recovered = await lab.settle() - began
        last_pod_ready = await pods_ready - began
        after = await lab.counts(running_at_kill)
        # nothing that had reached a running state is lost, and every pod that existed
        # became a running server (each was only starting), at its real address
        assert after.lost == 0, (after, lab.hub.log_tail(80))
        assert pods_at_kill <= {n for n, s in after.users.items() if s == "ready"}, after
        assert after.false_ready == 0 and after.pending == 0, after
        assert after.orphans == 0, after
        # a namespace the crash left half-made is not marked complete, and an adopted
        # server's bundle is finished (it has no next start to do it)
        assert after.false_marked == 0, after
        bundles = await lab.bundle_states()
        assert all(bundles[n] == (True, True) for n, s in after.users.items() if s == "ready")
        if point == "all-running":
            assert after.running == N
        # served soon after the notebooks are (on a busy machine they take a minute to
        # listen), not after the hub's http_timeout wait at a placeholder address
        assert recovered - last_pod_ready < 30, (recovered, last_pod_ready)

        # the hub home tells each user the truth
        adopted = sorted(pods_at_kill)[0]
        assert "Stop My Server" in await lab.home_page(adopted)
        forgotten = [n for n, s in after.users.items() if s == "stopped"]
        if forgotten:
            home = await lab.home_page(forgotten[0])
            assert "Stop My Server" not in home and "Start My Server" in home, home[-800:]

        # one more start for everybody else repairs everything
        again = await lab.start_the_rest()
        assert all(o.result == "ready" for o in again), again
        final = await lab.counts()
        assert final.running == N, final
        assert final.half_made == final.false_marked == final.orphans == 0, final
        log = lab.hub.log_path.read_text(errors="replace")
        assert "Unhandled error" not in log
        assert "does not appear to be running" not in log  # no server judged dead
    finally:
        await lab.stop()


async def test_a_pod_that_never_gets_ready_is_cleaned_up(tmp_path):
    """A pod no node can take, still Pending when the hub dies: after the restart it is
    deleted (not left behind), the server is forgotten, and its token goes with it."""
    stuck = {"slug": "stuck", "display_name": "Stuck", "node_selector": {"no-such": "node"}}
    lab = CrashLab(tmp_path, 1, extra_config=(
        "c.KDashSpawner.adopt_wait_seconds = 2\n"
        f"c.KDashSpawner.flavors = c.KDashSpawner.flavors + [{stuck!r}]\n"))
    await lab.start()
    try:
        name = lab.names[0]
        spawn = asyncio.ensure_future(lab.spawn(name, profile="stuck"))
        await lab.wait_pods(lambda pods: name in pods)
        lab.kill_hub()
        spawn.cancel()
        await lab.restart_hub()
        await lab.settle()
        after = await lab.counts()
        assert after.users[name] == "stopped" and after.orphans == 0, after
        assert await lab.notebook_pods() == {}
        status, text = await lab.api("GET", f"/users/{name}/tokens")
        assert status == 200 and "Server at" not in text, text
        log = lab.hub.log_path.read_text(errors="replace")
        assert "deleting pod kdash-u00/jupyter-u00" in log and "no node could take it" in log
    finally:
        await lab.stop()


async def test_an_adopted_servers_unfinished_bundle_is_finished(local_cluster, kube):
    """The crash came after the pod but before the bundle's last objects and its hash (they
    go while the pod starts): adoption finishes them, since no next start will."""
    from kdash_hub.spawner import bundle
    from tests.fixtures.spawner import build_spawner

    s = build_spawner(username="ivy")
    await s.start()
    ns = await kube.get("Namespace", s.namespace)
    assert ns["metadata"]["annotations"][bundle.BUNDLE_HASH_ANNOTATION]
    # as the crash left it: the user's RoleBinding and the completion mark missing
    await kube.delete("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
    await kube.patch("Namespace", s.namespace, None, {"metadata": {"annotations": {
        bundle.BUNDLE_HASH_ANNOTATION: None}}})
    await s._finish_bundle_after_restart()
    assert await kube.get("RoleBinding", bundle.ROLE_BINDING_NAME, s.namespace)
    ns = await kube.get("Namespace", s.namespace)
    assert ns["metadata"]["annotations"][bundle.BUNDLE_HASH_ANNOTATION]
    await s.stop()
