"""The zero-to-jupyterhub chart 4.4.0 as published, rendered by a real helm with our values and
each overlay, then every rendered object applied to the real control plane as a server-side
dry run: the API server (validation, admission, RBAC's escalation checks) must accept all."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kdash_hub.localcluster.kubeconfig import client_for
from kdash_hub.localcluster.real.apply import apply_objects
from kdash_hub.localcluster.real.build import KUBERNETES_VERSION, ensure_binaries
from tests.fixtures.helm import CHART_DIR, EXAMPLES, VALUES

CHART = CHART_DIR / "chart-4.4.0"
NAMESPACE = "kdash-chart"


def render_chart(values: list[Path], workdir: Path, namespace: str = NAMESPACE) -> list[dict]:
    """`helm template` of the published chart (copied: helm may write beside it)."""
    if not (CHART / "Chart.yaml").is_file():
        pytest.skip(f"the z2jh chart is not at {CHART}")
    helm = ensure_binaries(("helm",), progress=lambda _: None)["helm"]
    chart = workdir / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
    # helm can't ask a cluster here: it renders for the control plane's release
    args = [str(helm), "template", "kdash", str(chart), "--namespace", namespace,
            "--kube-version", KUBERNETES_VERSION]
    for path in values:
        args += ["--values", str(path)]
    done = subprocess.run(args, capture_output=True, text=True, check=False,
                          env={"HOME": str(workdir), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("overlay", [None, *EXAMPLES], ids=lambda p: p.stem if p else "values")
async def test_rendered_chart_is_accepted_by_the_real_api_server(
        real_control_plane, tmp_path: Path, overlay: Path | None) -> None:
    objects = render_chart([VALUES, *([overlay] if overlay else [])], tmp_path)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "ConfigMap", "Secret", "Service", "ServiceAccount"} <= kinds
    admin = client_for(real_control_plane.admin_kubeconfig)
    try:
        await apply_objects(admin, [{"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": NAMESPACE}}])
        rejected = []
        for obj in objects:
            try:
                await apply_objects(admin, [obj], namespace=NAMESPACE, dry_run=True)
            except Exception as e:  # collect them all, then fail with the whole list
                rejected.append(f"{obj['kind']}/{obj['metadata']['name']}: {e}")
        assert rejected == []
    finally:
        await admin.close()
