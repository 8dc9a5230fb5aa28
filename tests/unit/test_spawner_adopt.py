"""Adoption after a hub restart (spawner/adopt.py) and the sentences of start failures
(spawner/errors.py, spawner/explained.py), with the upstream names they rely on pinned
(docs/upstream.md, "Spawner")."""

from __future__ import annotations

import asyncio
import inspect
import json
from datetime import datetime, timedelta

import pytest
from jupyterhub import orm
from jupyterhub.app import JupyterHub
from jupyterhub.objects import Server
from jupyterhub.spawner import Spawner
from jupyterhub.utils import format_exception
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from tornado import web

from kdash_hub.spawner import KDashSpawner, errors
from kdash_hub.spawner.adopt import PodState, classify, pod_token, wait_budget
from tests.fixtures.spawner import build_spawner, to_dict


def pod(phase="Running", ready=True, ip="127.0.0.9", token="tok", **extra) -> dict:
    status = {"phase": phase, "podIP": ip if phase == "Running" else None,
              "containerStatuses": [{"name": "notebook", "ready": ready,
                                     "state": {"running": {}} if ready else {"waiting": {
                                         "reason": "ContainerCreating"}}}]}
    status.update(extra.pop("status", {}))
    return {"metadata": {"name": "jupyter-alice", "namespace": "kdash-alice", "uid": "u1",
                         **extra.pop("metadata", {})},
            "spec": {"containers": [{"name": "notebook", "ports": [
                {"name": "notebook-port", "containerPort": 8888}],
                "env": [{"name": "JUPYTERHUB_API_TOKEN", "value": token}]}]},
            "status": status}


def running(p) -> bool:
    return KubeSpawner.is_pod_running(None, p)


# --- what a pod's state means after a restart ----------------------------------------------

def test_classify_pod_states():
    assert classify(None, running) is PodState.ABSENT
    assert classify(pod(), running) is PodState.READY
    assert classify(pod(ready=False), running) is PodState.STARTING
    assert classify(pod(phase="Pending", ready=False), running) is PodState.STARTING
    assert classify(pod(phase="Failed", ready=False), running) is PodState.FINISHED
    assert classify(pod(metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"}),
                    running) is PodState.FINISHED
    done = pod(ready=False)
    done["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 1}}
    assert classify(done, running) is PodState.FINISHED


def test_wait_budget_is_a_whole_start_timeout_unless_set():
    assert wait_budget(60, None) == 60
    assert wait_budget(60, 5.0) == 5.0
    assert wait_budget(60, -1.0) == 0


def test_pod_token_reads_the_notebook_environment():
    assert pod_token(pod(token="abc")) == "abc"
    assert pod_token({"spec": {"containers": [{"name": "notebook"}]}}) is None


# --- the restart check, with a pod reflector standing in for the cluster ---------------------

class FakeReflector:
    def __init__(self, pods):
        self.pods = pods


@pytest.fixture
def restarted(offline_kube, monkeypatch):
    """A KDashSpawner as JupyterHub's init_spawners finds it: a server row with the
    placeholder address, `pending == "check"`, an orm spawner in a real hub database."""
    db = orm.new_session_factory("sqlite:///:memory:")()
    orm_user = orm.User(name="alice")
    other = orm.User(name="mallory")
    db.add_all([orm_user, other, orm.OAuthClient(identifier="jupyterhub")])
    db.commit()
    token = orm_user.new_api_token(note="Server at /user/alice/")
    foreign = other.new_api_token()
    orm_spawner = orm.Spawner(user=orm_user, name="",
                              started=datetime.utcnow() - timedelta(seconds=5))
    db.add(orm_spawner)
    db.commit()

    def make(pods: dict, **traits):
        s = build_spawner(username="alice", user_id=orm_user.id, start_timeout=30, **traits)
        s.orm_spawner = orm_spawner
        s.api_token = ""
        orm_server = orm.Server(base_url="/user/alice/", port=41234)  # the placeholder
        db.add(orm_server)
        db.commit()
        s.server = Server(orm_server=orm_server)
        s._check_pending = True
        stopped = []

        async def no_watch(*a, **k):
            return None

        async def stop(now=False):
            stopped.append(now)
            pods.clear()

        monkeypatch.setattr(s, "_start_watching_pods", no_watch)
        monkeypatch.setattr(s, "stop", stop)
        monkeypatch.setattr(type(s), "pod_reflector", property(lambda self: FakeReflector(pods)))
        return s, stopped

    make.token, make.foreign = token, foreign
    yield make
    db.close()


async def test_a_ready_pod_is_adopted_at_its_own_address(restarted):
    s, stopped = restarted({"kdash-alice/jupyter-alice": pod(token=restarted.token)})
    assert s.pending == "check"  # what init_spawners' check looks like to a spawner
    assert await s.poll() is None
    assert await s.get_url() == "http://127.0.0.9:8888"
    assert s.api_token == restarted.token  # the hub's stop will delete it
    assert stopped == []


async def test_a_starting_pod_is_waited_for(restarted):
    pods = {"kdash-alice/jupyter-alice": pod(phase="Pending", ready=False,
                                             token=restarted.token)}
    s, stopped = restarted(pods)

    async def becomes_ready():
        await asyncio.sleep(0.8)
        pods["kdash-alice/jupyter-alice"] = pod(token=restarted.token)

    asyncio.ensure_future(becomes_ready())
    assert await s.poll() is None
    assert await s.get_url() == "http://127.0.0.9:8888"
    assert stopped == []


async def test_a_pod_that_never_gets_ready_is_deleted(restarted):
    s, stopped = restarted({"kdash-alice/jupyter-alice": pod(
        phase="Pending", ready=False, token=restarted.token,
        status={"conditions": [{"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "message": "0/1 nodes"}]})},
        adopt_wait_seconds=0.6)
    t0 = asyncio.get_running_loop().time()
    assert await s.poll() == 1
    assert 0.5 <= asyncio.get_running_loop().time() - t0 < 3
    assert stopped == [True]
    assert s.api_token == restarted.token  # read back, so the hub's stop removes it


async def test_a_spawn_interrupted_before_its_pod_is_forgotten(restarted):
    s, stopped = restarted({})
    assert await s.poll() == 1
    assert stopped == []


async def test_a_pod_without_the_hubs_token_is_not_adopted(restarted):
    """A user may make pods in their namespace: one named like their notebook but not
    carrying the token this hub issued to them is deleted, not routed to."""
    for token in ("made-up", restarted.foreign):
        s, stopped = restarted({"kdash-alice/jupyter-alice": pod(token=token)})
        assert await s.poll() == 1
        assert stopped == [True]
        assert s.api_token == ""


async def test_poll_outside_the_restart_check_is_kubespawners(restarted, monkeypatch):
    s, _ = restarted({"kdash-alice/jupyter-alice": pod(phase="Pending", ready=False)})
    s._check_pending = False
    assert await s.poll() is None  # KubeSpawner: a Pending pod counts as running
    s._check_pending = True
    s._restart_checked = True  # only the first poll of the check is answered here
    assert await s.poll() is None


# --- sentences ---------------------------------------------------------------------------

def api_exception(status, reason, message):
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


def test_api_failures_read_as_sentences():
    e = errors.api_failure("creating your server's pod",
                           api_exception(500, "Internal Server Error", "etcd timed out"))
    assert e.status_code == 503
    assert e.jupyterhub_message.startswith("The Kubernetes API failed while creating your "
                                           "server's pod (500 Internal Server Error: etcd")
    assert "temporary" in e.jupyterhub_message and "hub log" in e.jupyterhub_message
    forbidden = errors.api_failure("creating your server's pod", api_exception(
        403, "Forbidden", "exceeded quota: kdash-quota"))
    assert forbidden.status_code == 403 and "exceeded quota" in forbidden.jupyterhub_message
    assert "smaller profile" in forbidden.jupyterhub_message
    invalid = errors.api_failure("creating your home volume claim", api_exception(
        422, "Unprocessable Entity", "spec.resources: Invalid value"))
    assert invalid.status_code == 500 and "ask an admin" in invalid.jupyterhub_message
    for error in (e, forbidden, invalid):
        assert error.get_message() == error.jupyterhub_message  # REST API and spawn page
        assert "Reason:" not in error.jupyterhub_message


def test_pod_problems_in_words():
    unschedulable = pod(phase="Pending", ready=False, status={"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu."}]})
    assert errors.pod_problem(unschedulable) == (
        "no node could take it (0/1 nodes are available: 1 Insufficient cpu.)")
    pulling = pod(phase="Pending", ready=False)
    pulling["status"]["containerStatuses"][0]["state"] = {"waiting": {
        "reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    assert "ImagePullBackOff: Back-off pulling image" in errors.pod_problem(pulling)
    assert errors.pod_problem(None) == "its pod was not created"
    assert errors.pod_problem(pod(phase="Pending", ready=False)) == "its pod is still Pending"
    message = errors.timeout_message(60, unschedulable)
    assert message.startswith("Your server did not start within 60 seconds: no node")


# --- the start wrapper ---------------------------------------------------------------------

async def test_start_failures_get_a_sentence_and_keep_their_status(offline_kube):
    s = build_spawner(username="alice", start_timeout=30)

    async def failing(exc):
        raise exc

    cases = [
        (api_exception(500, "Internal Server Error", "boom"), 503, "Kubernetes API failed"),
        (web.HTTPError(403, "Not your profile."), 403, "Not your profile."),
        (KeyError("flavor"), 500, "an unexpected KeyError while"),
    ]
    for exc, status, text in cases:
        with pytest.raises(web.HTTPError) as e:
            await s._explained(asyncio.ensure_future(failing(exc)))
        assert e.value.status_code == status
        assert text in e.value.jupyterhub_message
        assert format_exception(e.value)[0] == e.value.jupyterhub_message


async def test_start_gives_up_just_before_the_hubs_timeout_and_says_why(offline_kube,
                                                                        monkeypatch):
    s = build_spawner(username="alice", start_timeout=2)
    stuck = pod(phase="Pending", ready=False, status={"conditions": [{
        "type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}]})
    monkeypatch.setattr(type(s), "pod_reflector", property(
        lambda self: FakeReflector({"kdash-alice/jupyter-alice": stuck})))
    inner = asyncio.ensure_future(asyncio.sleep(60))
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError) as e:
        await s._explained(inner)
    assert asyncio.get_running_loop().time() - t0 < 2  # before JupyterHub's wait_for
    await asyncio.sleep(0)
    assert inner.cancelled()
    assert "did not start within 2 seconds: no node could take it" in e.value.jupyterhub_message


async def test_temporary_api_errors_at_creates_are_tried_again(offline_kube):
    s = build_spawner(username="alice", api_retries=2)
    calls = []

    async def create(obj, request_timeout):
        calls.append(obj)
        raise api_exception(500, "Internal Server Error", "try later")

    assert await s._create_step("creating your server's pod", create, "pod", 3) is False
    assert await s._create_step("creating your server's pod", create, "pod", 3) is False
    with pytest.raises(ApiException):
        await s._create_step("creating your server's pod", create, "pod", 3)
    assert len(calls) == 3

    async def refused(obj, request_timeout):
        raise api_exception(422, "Unprocessable Entity", "bad")

    s._retries_used = 0
    with pytest.raises(ApiException):  # not temporary: no second attempt
        await s._create_step("creating your server's pod", refused, "pod", 3)


# --- upstream names this relies on (docs/upstream.md) --------------------------------------

def test_upstream_private_names_are_still_there():
    for name, params in {
        "_start_watching_pods": ["self", "replace"],
        "_start_watching_events": ["self", "replace"],
        "_get_pod_url": ["self", "pod"],
        "_make_create_pod_request": ["self", "pod", "request_timeout"],
        "_make_create_pvc_request": ["self", "pvc", "request_timeout"],
        "is_pod_running": ["self", "pod"],
        "stop": ["self", "now"],
    }.items():
        assert list(inspect.signature(getattr(KubeSpawner, name)).parameters) == params, name
    assert isinstance(KubeSpawner.pod_reflector, property)
    assert "self._start_future = " in inspect.getsource(KubeSpawner.start)
    assert "orm_spawner" in Spawner.class_traits()
    # KDashSpawner's overrides really sit in front of KubeSpawner's
    mro = [c.__name__ for c in KDashSpawner.__mro__]
    for mixin in ("AdoptOnRestart", "ExplainedStart", "ShieldedReflectors"):
        assert mro.index(mixin) < mro.index("KubeSpawner"), mixin


def test_jupyterhub_restart_check_contract():
    """init_spawners marks each spawner `_check_pending` (pending == "check"), polls it,
    and only if running asks get_url() before its HTTP check; a spawner with a server
    and poll() != None is stopped."""
    assert Spawner.pending.fget(type("S", (), {"_spawn_pending": False, "_stop_pending": False,
                                               "_check_pending": True})()) == "check"
    source = inspect.getsource(JupyterHub.init_spawners)
    assert source.index("status = await spawner.poll()") < source.index(
        "url = await spawner.get_url()") < source.index("await user._wait_up(spawner)")
    assert "spawner._check_pending = True" in source


def test_jupyterhub_shows_jupyterhub_message():
    e = errors.with_message(RuntimeError("(500)\nReason: Internal Server Error"), "Sentence.")
    assert format_exception(e) == ("Sentence.", None)


async def test_kubespawner_puts_the_api_token_in_the_pod_env(offline_kube):
    s = build_spawner(username="alice")
    s.api_token = "secret-token"
    manifest = to_dict(await s.get_pod_manifest())
    assert pod_token(manifest) == "secret-token"


async def test_a_start_cancelled_from_inside_is_a_failure_not_a_cancellation(offline_kube):
    """A cancellation the user did not ask for must not reach JupyterHub as one (it would
    report the server ready)."""
    s = build_spawner(username="alice", start_timeout=30)
    inner = asyncio.ensure_future(asyncio.sleep(60))
    asyncio.get_running_loop().call_later(0.1, inner.cancel)
    with pytest.raises(web.HTTPError) as e:
        await s._explained(inner)
    assert e.value.status_code == 503
    assert e.value.jupyterhub_message.startswith("Starting your server was interrupted")
