"""bench_request_cost: what it measures against a cluster (and what it leaves there), and the
floor it derives: KDashSpawner's extra requests' client CPU over plain KubeSpawner's hub CPU
per spawn."""

from benchmarks.bench_request_cost import EXTRA_REQUESTS, NAMESPACE, measure, report
from kdash_hub.kube import KubeResources
from kdash_hub.localcluster import LocalCluster
from tests.fixtures.cluster import api_client_for


def test_the_floor_is_the_extra_requests_client_cpu_over_plains_hub_cpu(capsys):
    report({"get": [0.3, 0.1, 0.2], "create": [0.25, 0.2, 0.3],
            "create_at_once": [0.1, 0.15, 0.2]}, 10, 5, 18.0)
    out = capsys.readouterr().out
    # medians: 0.2 (the baseline), 0.25 and 0.15
    assert "0.200  (1.00x baseline)" in out
    assert "0.250  (1.25x baseline)" in out
    assert "0.150  (0.75x baseline)" in out
    low, high = EXTRA_REQUESTS * 0.15, EXTRA_REQUESTS * 0.25
    assert f"{low:.2f} to {high:.2f} ms of the hub's CPU" in out
    assert f"{1 + low / 18:.3f}x to {1 + high / 18:.3f}x" in out


def test_no_floor_without_plains_hub_cpu(capsys):
    report({"get": [0.2], "create": [0.2], "create_at_once": [0.2]}, 10, 5, None)
    assert "p95 ratio" not in capsys.readouterr().out


async def test_it_measures_every_round_and_deletes_its_namespace(tmp_path):
    cluster = await LocalCluster(kubeconfig_path=tmp_path / "kubeconfig").start()
    try:
        out = await measure(cluster.kubeconfig_path, requests=6, concurrency=2, rounds=2)
        assert sorted(out) == ["create", "create_at_once", "get"]
        assert all(len(values) == 2 and min(values) > 0 for values in out.values())
        async with api_client_for(cluster.kubeconfig_path) as client:
            kube = KubeResources(client)
            left = await kube.get("Namespace", NAMESPACE)
            assert left is None or left["metadata"].get("deletionTimestamp")
            # 6 one at a time and 6 at once, in each of 2 rounds
            bindings = await kube.list("RoleBinding", namespace=NAMESPACE)
            assert len(bindings) in (0, 24)  # deleted with the namespace, or being
    finally:
        await cluster.stop()
