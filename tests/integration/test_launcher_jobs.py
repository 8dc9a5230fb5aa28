"""Batch work from the launcher: Job and CronJob instances launched, listed with their
status and their runs' logs, stopped (suspended), started, deleted with their runs; bad
input refused before anything is made; Argo refused where its CRDs aren't installed.

The launcher's code acts with the launcher's identity (its ServiceAccount in the real
tier); `kube` (admin) sets up and checks. The test that runs a script for real needs the
emulator's process-mode kubelet.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from kdash_hub import labels as L
from kdash_hub.kube import KubeResources
from kdash_hub.services.launcher import lifecycle
from kdash_hub.services.launcher.instances import Actor, InstanceManager, LauncherError
from kdash_hub.services.launcher.records import record_name
from kdash_hub.services.launcher.settings import CATALOG_DIR
from kdash_hub.templating import load_directories
from tests.fixtures.cluster import requires_emulator
from tests.fixtures.launcher import InstanceUser, home_claim
from tests.fixtures.polling import eventually as poll

WAIT = 240.0  # generous: the machine is shared; a CronJob's first run is within a minute


async def eventually(check: Any, within: float = WAIT, what: str = "") -> Any:
    """Poll every 0.5 s, for up to WAIT by default."""
    return await poll(check, what, within, interval=0.5)


def catalog_with(*texts: str) -> Any:
    catalog = load_directories([CATALOG_DIR])
    for n, text in enumerate(texts):
        catalog.add_text(textwrap.dedent(text), f"<test {n}>", catalog_kinds())
    return catalog


def catalog_kinds() -> tuple[str, ...]:
    from kdash_hub.templating import DEFAULT_ALLOWED_KINDS

    return DEFAULT_ALLOWED_KINDS


ESCAPE = """\
    kind: Template
    name: Escape
    variables:
    - {name: NAME, default: escape}
    - {name: SCHEDULE, default: "*/5 * * * *"}
    - {name: COMMAND, default: date}
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: $NAME, namespace: kube-system}
    spec:
      schedule: $SCHEDULE
      jobTemplate:
        metadata:
          namespace: kube-system
          labels: {kdash-hub.io/owner: victim, kdash-hub.io/instance: theirs}
        spec:
          template:
            metadata:
              labels: {kdash-hub.io/owner: victim, kdash-hub.io/instance: theirs}
            spec:
              restartPolicy: Never
              containers:
              - {name: run, image: busybox, command: [sh, -c, $COMMAND]}
    """
ARGO = """\
    kind: Template
    name: Argo flow
    variables:
    - {name: NAME, default: flow}
    ---
    apiVersion: argoproj.io/v1alpha1
    kind: Workflow
    metadata: {name: $NAME}
    spec:
      entrypoint: main
      templates:
      - name: main
        container: {image: busybox, command: [date]}
    """


@pytest.fixture
def user(instance_user: InstanceUser) -> InstanceUser:
    return instance_user


@pytest.fixture
async def home(kube: KubeResources, user: InstanceUser) -> None:
    """The user's namespace and home claim, as a first notebook start leaves them."""
    if not user.real:
        await kube.ensure({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": user.namespace, "labels": L.owner_labels(user.name)}})
        await kube.ensure(home_claim(user.name, user.namespace))


@pytest.fixture
def manager(launcher_identity: KubeResources, user: InstanceUser, home: None) -> InstanceManager:
    return InstanceManager(launcher_identity, user.settings(max_job_ttl_after_finished="2h"),
                           catalog_with(ESCAPE, ARGO))


async def instance(manager: InstanceManager, user: InstanceUser, name: str) -> dict:
    [found] = [i for i in await manager.list(user.actor) if i["name"] == name]
    return found


async def nothing_made(kube: KubeResources, user: InstanceUser, name: str) -> None:
    assert await kube.get("Secret", record_name(name), user.namespace) is None
    for kind in ("Job", "CronJob"):
        assert await kube.list(kind, user.namespace,
                               label_selector=f"{L.INSTANCE}={name}") == []


async def test_a_job_runs_is_listed_with_its_status_and_is_cleaned_up(manager, kube, user):
    info = await manager.launch(user.actor, "python-job", name="once",
                                values={"SCRIPT": "print('hi')"})
    assert info["objects"] == [{"kind": "Job", "name": "once"}]
    job = await kube.get("Job", "once", user.namespace)
    # the template's 1 day after finishing, capped at the admin's 2 h
    assert job["spec"]["ttlSecondsAfterFinished"] == 7200
    assert job["spec"]["template"]["metadata"]["labels"][L.INSTANCE] == "once"

    async def finished() -> dict | None:
        found = await instance(manager, user, "once")
        return found if found["status"] in ("succeeded", "failed") else None

    done = await eventually(finished, what="the Job to finish")
    [item] = done["batch"]
    assert (done["status"], item["state"], item["succeeded"]) == ("succeeded", "succeeded", 1)
    assert item["completion_time"] and item["start_time"]
    details = await manager.details(user.actor, user.name, "once")
    assert [(entry["container"]) for entry in details["logs"]] == ["script"]
    # its lifetime (the template's 1 day) over: the culler's interface deletes it
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    expired = await lifecycle.expired_instances(manager.kube, later, manager.signer)
    assert [(r.name, r.on_expiry) for r in expired if r.namespace == user.namespace] == [
        ("once", "delete")]
    await lifecycle.delete_instance(manager.kube, user.namespace, "once", manager.signer)
    assert await kube.get("Job", "once", user.namespace) is None
    await nothing_made(kube, user, "once")


async def test_a_cronjob_runs_on_its_schedule_stops_starts_and_goes(manager, kube, user):
    info = await manager.launch(user.actor, "nightly-script", name="every",
                                values={"SCHEDULE": "* * * * *", "COMMAND": "echo tick"})
    cron = await kube.get("CronJob", "every", user.namespace)
    assert cron["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] == 7200
    assert info["objects"] == [{"kind": "CronJob", "name": "every"}]

    async def ran() -> dict | None:
        found = await instance(manager, user, "every")
        [item] = found["batch"]
        return found if item["last_schedule_time"] and item["last_run"] else None

    listed = await eventually(ran, what="the CronJob's first run")
    [item] = listed["batch"]
    assert item["schedule"] == "* * * * *" and item["suspended"] is False
    run = item["last_run"]["name"]
    assert run.startswith("every-")
    made = await kube.get("Job", run, user.namespace)
    assert made["metadata"]["labels"][L.INSTANCE] == "every"
    assert made["metadata"]["labels"][L.OWNER] == L.owner_labels(user.name)[L.OWNER]
    owners = made["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["controller"]) for o in owners] == [
        ("CronJob", "every", True)]
    details = await manager.details(user.actor, user.name, "every")
    # the logs shown are the latest run's
    pods = await kube.list("Pod", user.namespace, label_selector=f"{L.INSTANCE}=every")
    of_run = {p["metadata"]["name"] for p in pods
              if any(r["name"] == run for r in p["metadata"].get("ownerReferences") or [])}
    assert {entry["pod"] for entry in details["logs"]} <= of_run

    stopped = await manager.stop(user.actor, user.name, "every")
    assert stopped["status"] == "stopped"
    assert (await kube.get("CronJob", "every", user.namespace))["spec"]["suspend"] is True
    assert (await instance(manager, user, "every"))["batch"][0]["suspended"] is True
    await manager.start(user.actor, user.name, "every")
    assert (await kube.get("CronJob", "every", user.namespace))["spec"]["suspend"] is False

    await manager.delete(user.actor, user.name, "every")
    assert await kube.get("CronJob", "every", user.namespace) is None

    async def runs_gone() -> bool:
        jobs = await kube.list("Job", user.namespace, label_selector=f"{L.INSTANCE}=every")
        return not [j for j in jobs if not j["metadata"].get("deletionTimestamp")]

    await eventually(runs_gone, what="the CronJob's Jobs to go with it")


async def test_stop_suspends_a_job(manager, kube, user):
    await manager.launch(user.actor, "python-job", name="held",
                         values={"SCRIPT": "import time; time.sleep(600)"})
    await manager.stop(user.actor, user.name, "held")
    assert (await kube.get("Job", "held", user.namespace))["spec"]["suspend"] is True
    await manager.start(user.actor, user.name, "held")
    assert (await kube.get("Job", "held", user.namespace))["spec"]["suspend"] is False
    await manager.delete(user.actor, user.name, "held")


@pytest.mark.parametrize("values, words", [
    ({"SCHEDULE": "every night"}, "spec.schedule"),
    ({"SCHEDULE": "0 25 * * *"}, "outside 0-23"),
    ({"SCHEDULE": "0 2 * * *\n---\napiVersion: v1\nkind: Namespace"}, "spec.schedule"),
    ({"NAMESPACE": "kube-system"}, "NAMESPACE"),
    ({"USERNAME": "victim"}, "USERNAME"),
])
async def test_bad_values_are_a_400_and_make_nothing(manager, kube, user, values, words):
    with pytest.raises(LauncherError) as caught:
        await manager.launch(user.actor, "nightly-script", name="bad", values=values)
    assert caught.value.status == 400 and words in caught.value.message
    await nothing_made(kube, user, "bad")


async def test_a_template_cannot_leave_the_namespace_or_claim_another_instance(
        manager, kube, user):
    """The template says kube-system and labels its runs as another user's instance: the
    CronJob is made in the user's namespace, its runs carry the user's own labels, and a
    value that injects a second document stays one string in the command."""
    injected = "date\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: evil}"
    await manager.launch(user.actor, "escape", name="escape",
                         values={"COMMAND": injected})
    cron = await kube.get("CronJob", "escape", user.namespace)
    assert cron is not None
    assert await kube.get("CronJob", "escape", "kube-system") is None
    assert await kube.get("Namespace", "evil") is None
    job = cron["spec"]["jobTemplate"]
    own = L.owner_labels(user.name)[L.OWNER]
    for meta in (cron["metadata"], job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"][L.OWNER] == own and meta["labels"][L.INSTANCE] == "escape"
    assert "namespace" not in job["metadata"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", injected]
    await manager.delete(user.actor, user.name, "escape")


async def test_a_kind_not_allowed_is_refused_and_argo_needs_its_crds(
        launcher_identity, kube, user, home):
    # an admin who allows only Jobs: CronJob templates don't load (so can't be launched)
    only_jobs = InstanceManager(
        launcher_identity, user.settings(allowed_kinds=["Job", "Secret"]),
        load_directories([CATALOG_DIR], allowed_kinds=["Job", "Secret"]))
    assert only_jobs.catalog.get("nightly-script") is None
    assert only_jobs.catalog.get("python-job") is not None
    with pytest.raises(LauncherError) as caught:
        await only_jobs.launch(user.actor, "nightly-script")
    assert caught.value.status == 404

    served = await kube.request("GET", "/apis")
    if any(g["name"] == "argoproj.io" for g in served.get("groups") or []):
        pytest.skip("this cluster has Argo Workflows installed")
    manager = InstanceManager(launcher_identity, user.settings(), catalog_with(ARGO))
    with pytest.raises(LauncherError) as caught:
        await manager.launch(user.actor, "argo-flow", name="flow")
    assert caught.value.status == 400
    assert "Argo Workflows" in caught.value.message and "Nothing was created" in (
        caught.value.message)
    assert await kube.get("Secret", record_name("flow"), user.namespace) is None


async def test_someone_else_cannot_see_or_stop_a_job(manager, kube, user):
    await manager.launch(user.actor, "python-job", name="mine")
    for verb in ("stop", "start", "delete", "details"):
        with pytest.raises(LauncherError) as caught:
            await getattr(manager, verb)(Actor("mallory"), user.name, "mine")
        assert caught.value.status == 404
    assert (await kube.get("Job", "mine", user.namespace))["spec"].get("suspend") in (
        None, False)
    await manager.delete(user.actor, user.name, "mine")


async def test_a_script_runs_for_real_in_process_mode(make_local_cluster, tmp_path):
    """The local cluster's process kubelet runs the Job's command: its output is in the
    instance's logs and the Job succeeds; a CronJob's run does the same."""
    cluster = await make_local_cluster(kubelet="process")
    requires_emulator(cluster)
    from tests.fixtures.cluster import api_client_for

    async with api_client_for(cluster.kubeconfig_path) as client:
        kube = KubeResources(client)
        user = InstanceUser("alice", "kdash-alice", real=False)
        await kube.ensure({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": user.namespace, "labels": L.owner_labels(user.name)}})
        await kube.ensure(home_claim(user.name, user.namespace))
        manager = InstanceManager(kube, user.settings(), load_directories([CATALOG_DIR]))
        script = "import sys, os; print('sum', sum(range(10)), sys.version_info[0])"
        await manager.launch(user.actor, "python-job", name="real",
                             values={"SCRIPT": script})

        async def done() -> dict | None:
            found = await instance(manager, user, "real")
            return found if found["status"] in ("succeeded", "failed") else None

        finished = await eventually(done, what="the script to finish")
        details = await manager.details(user.actor, user.name, "real")
        assert finished["status"] == "succeeded", (finished, details["logs"])
        assert "sum 45 3" in details["logs"][0]["text"]

        await manager.launch(user.actor, "python-job", name="broken",
                             values={"SCRIPT": "raise SystemExit(3)"})

        async def failed() -> dict | None:
            found = await instance(manager, user, "broken")
            return found if found["status"] == "failed" else None

        broken = await eventually(failed, what="the failing script")
        assert broken["batch"][0]["state"] == "failed"

        await manager.launch(user.actor, "nightly-script", name="tick",
                             values={"SCHEDULE": "* * * * *", "COMMAND": "echo tick-42"})

        async def ticked() -> dict | None:
            found = await instance(manager, user, "tick")
            last = found["batch"][0]["last_run"]
            return found if last and last["state"] == "succeeded" else None

        await eventually(ticked, what="the CronJob's run to succeed")
        details = await manager.details(user.actor, user.name, "tick")
        assert "tick-42" in details["logs"][0]["text"]


WORKFLOW_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "workflows.argoproj.io"},
    "spec": {"group": "argoproj.io", "scope": "Namespaced",
             "names": {"kind": "Workflow", "listKind": "WorkflowList", "plural": "workflows",
                       "singular": "workflow", "shortNames": ["wf"]},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                           "subresources": {}}]}}
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


async def test_argo_is_accepted_where_its_crds_are_installed(launcher_identity, kube, user,
                                                             home):
    """With Argo's Workflow CRD installed (its schema as Argo ships it: open), an Argo
    template launches: the Workflow is made in the user's namespace with the instance's
    labels on its pods, stop suspends it, delete removes it. Needs a cluster that serves
    CustomResourceDefinitions (the real control plane; the emulator has none)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        await kube.request("POST", CRDS, body=WORKFLOW_CRD)
    except ApiException as e:
        if e.status == 404:
            pytest.skip("this cluster serves no CustomResourceDefinitions (the emulator)")
        if e.status != 409:
            raise
    try:
        async def served() -> bool:
            try:
                found = await kube.request("GET", "/apis/argoproj.io/v1alpha1")
            except ApiException:
                return False
            return any(r.get("kind") == "Workflow" for r in found.get("resources") or [])

        await eventually(served, within=60, what="the Workflow API to be served")
        manager = InstanceManager(launcher_identity, user.settings(), catalog_with(ARGO))

        async def launched() -> dict | None:
            try:  # the launcher's own discovery may lag the admin's by a moment
                return await manager.launch(user.actor, "argo-flow", name="flow")
            except LauncherError as e:
                if "Argo" not in e.message:
                    raise
                return None

        info = await eventually(launched, within=60, what="the Argo launch")
        assert info["objects"] == [{"kind": "Workflow", "name": "flow"}]
        flow = await kube.get("Workflow", "flow", user.namespace)
        assert flow["spec"]["podMetadata"]["labels"][L.INSTANCE] == "flow"
        await manager.stop(user.actor, user.name, "flow")
        assert (await kube.get("Workflow", "flow", user.namespace))["spec"]["suspend"] is True
        await manager.delete(user.actor, user.name, "flow")
        assert await kube.get("Workflow", "flow", user.namespace) is None
    finally:
        try:
            await kube.request("DELETE", f"{CRDS}/workflows.argoproj.io")
        except ApiException as e:
            if e.status != 404:
                raise


PRIVILEGED = """\
    kind: Template
    name: Root job
    variables:
    - {name: NAME, default: rootjob}
    ---
    apiVersion: batch/v1
    kind: Job
    metadata: {name: $NAME}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: run
            image: busybox
            command: [cat, /host/etc/shadow]
            securityContext: {privileged: true}
            volumeMounts: [{name: host, mountPath: /host}]
          volumes:
          - {name: host, hostPath: {path: /}}
    """


async def test_a_privileged_job_with_a_host_path_is_a_400_and_makes_nothing(
        launcher_identity, kube, user, home):
    """The namespace's Pod Security level (the spawner's bundle sets one; here `baseline`
    on the emulator) would refuse the Job's pods one by one while the Job looks launched:
    the launcher says why at once and makes nothing."""
    from kdash_hub.localcluster.apiserver.podsecurity import ENFORCE_LABEL

    if not user.real:
        await kube.patch("Namespace", user.namespace, None,
                         {"metadata": {"labels": {ENFORCE_LABEL: "baseline"}}})
    manager = InstanceManager(launcher_identity, user.settings(), catalog_with(PRIVILEGED))
    with pytest.raises(LauncherError) as caught:
        await manager.launch(user.actor, "root-job", name="rootjob")
    assert caught.value.status == 400
    message = caught.value.message
    assert "Job rootjob: its pods would be refused" in message
    assert "privileged" in message and "hostPath" in message
    await nothing_made(kube, user, "rootjob")
    # the catalog's own batch templates pass the same level
    await manager.launch(user.actor, "python-job", name="fine")
    await manager.delete(user.actor, user.name, "fine")


async def test_a_cronjobs_runs_are_not_orphans(manager, kube, user):
    """The reconciler reports objects no record lists; a CronJob's runs (owned by the
    CronJob the record signed, by UID) are the instance's, not orphans; one with the
    instance's labels but no such owner is still reported."""
    from kdash_hub.services.launcher.reconcile import Reconciler

    await manager.launch(user.actor, "nightly-script", name="runs",
                         values={"SCHEDULE": "* * * * *"})
    cron = await kube.get("CronJob", "runs", user.namespace)
    labels = cron["spec"]["jobTemplate"]["metadata"]["labels"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    owned = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": "runs-1", "namespace": user.namespace, "labels": labels,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "runs",
                             "uid": cron["metadata"]["uid"], "controller": True}]},
        "spec": {"suspend": True, "template": pod}}
    # the same labels, no owner: claiming to be the instance's does not make it so
    faked = {**owned, "metadata": {**owned["metadata"], "name": "runs-2",
                                   "ownerReferences": []}}
    await kube.create(owned)
    await kube.create(faked)
    report = await Reconciler(manager).run_once()
    names = {(o.kind, o.name) for o in report.orphans if o.namespace == user.namespace}
    assert ("Job", "runs-1") not in names
    assert ("Job", "runs-2") in names
    await manager.delete(user.actor, user.name, "runs")
    await kube.delete("Job", "runs-2", user.namespace)
