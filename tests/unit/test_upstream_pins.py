"""Private names of jupyterhub, kubespawner and tornado that the spawner's namespace, storage
and start code and the launcher still use, pinned by what they rely on (docs/upstream.md,
"Spawner: namespaces, storage, start" and "Services"). An upstream release that renames,
removes or changes one fails here, in CI, instead of in a hub pod. (The crash-recovery and
authenticator sections are pinned by tests/unit/test_spawner_adopt.py and
tests/unit/test_upstream_pins_auth.py.)

Two checks keep docs/upstream.md complete: every private upstream name the core's code uses
is named there (whichever section), and no pin here outlives its use.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets import TraitError

from tests.fixtures.cluster import point_kubernetes_clients_at

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "upstream.md"
UPSTREAM = ("jupyterhub", "kubespawner", "oauthenticator", "ldapauthenticator", "tornado")
CORE = ("kdash_hub", "spawner", "authenticator", "services")
# kdash-hub-local's code (the emulator, the dev services) is not in the hub image
NOT_CORE = ("kdash_hub/localcluster", "kdash_hub/dev", "kdash_hub/demo.py")


# --- what the pack relies on, one check each --------------------------------------------------

def kubespawner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **config):
    """A KubeSpawner for user "Alice.Smith" (no cluster is contacted)."""
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    point_kubernetes_clients_at(kubeconfig, monkeypatch)
    user = SimpleNamespace(name="Alice.Smith", id=7, url="/user/Alice.Smith/",
                           escaped_name="Alice.Smith")
    return KubeSpawner(_mock=True, user=user, config=Config({"KubeSpawner": config}))


def check_expand_user_properties(tmp_path, monkeypatch) -> None:
    # a profile's pvc_name_template is expanded as KubeSpawner expands its own (#761)
    spawner = kubespawner(tmp_path, monkeypatch, pvc_name_template="home-{username}")
    assert spawner._expand_user_properties("home-{username}") == spawner.pvc_name
    assert spawner.pvc_name.startswith("home-alice")


def check_expand_all(tmp_path, monkeypatch) -> None:
    # namespace labels/annotations: every string of a dict (or list) expanded
    spawner = kubespawner(tmp_path, monkeypatch)
    slug = spawner._expand_user_properties("{username}")
    assert spawner._expand_all({"a": "x-{username}", "b": ["{username}"]}) == {
        "a": f"x-{slug}", "b": [slug]}


def check_sorted_dict_values(tmp_path, monkeypatch) -> None:
    # tolerations configured as a dict become KubeSpawner's list, in key order
    spawner = kubespawner(tmp_path, monkeypatch)
    assert spawner._sorted_dict_values({"b": 2, "a": 1}) == [1, 2]
    assert spawner._sorted_dict_values([3, 1]) == [3, 1]


def check_pvc_exists(tmp_path, monkeypatch) -> None:
    # a bool KubeSpawner sets up in __init__ and consults before creating the home claim
    from kubespawner import KubeSpawner

    spawner = kubespawner(tmp_path, monkeypatch)
    assert spawner._pvc_exists is False
    assert "self._pvc_exists" in inspect.getsource(KubeSpawner._start)


async def check_start_future(tmp_path, monkeypatch) -> None:
    from kubespawner import KubeSpawner

    # start() runs self._start() (KDashSpawner's override awaits the namespace bundle at its
    # end) and keeps its future in _start_future
    spawner = kubespawner(tmp_path, monkeypatch)
    assert spawner._start_future is None

    async def fake_start():
        return "http://127.0.0.1:8888"

    spawner._start = fake_start
    future = spawner.start()
    assert spawner._start_future is future
    assert await future == "http://127.0.0.1:8888"
    # the override ends _start's last wait once the pod runs (spawner/running.py): after the
    # pod's create nothing else runs unless one of the three settings is on, then the wait
    # reads the reflector's pod under ref_key with is_pod_running, and the start returns
    # _get_pod_url of that pod after setting pod_id
    source = inspect.getsource(KubeSpawner._start)
    steps = ['ref_key = f"{self.namespace}/{self.pod_name}"',
             "self._make_create_pod_request",
             "if self.internal_ssl or self.services_enabled or self.after_pod_created_hook:",
             "self.is_pod_running(self.pod_reflector.pods.get(ref_key, None))",
             'self.pod_id = pod["metadata"]["uid"]',
             "return self._get_pod_url(pod)"]
    at = [source.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), dict(zip(steps, at, strict=True))


def check_namespace_default(tmp_path, monkeypatch) -> None:
    # the hub's own namespace: the pod's service account namespace file, else "default"
    spawner = kubespawner(tmp_path, monkeypatch)
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    expected = path.read_text().strip() if path.exists() else "default"
    assert spawner._namespace_default() == expected


def check_options_form_default(tmp_path, monkeypatch) -> None:
    # an admin's profile_list (not the pack's flavors) gets KubeSpawner's own form: empty
    # without profiles, a rendered form with them
    assert kubespawner(tmp_path, monkeypatch)._options_form_default() == ""
    spawner = kubespawner(tmp_path, monkeypatch, profile_list=[
        {"display_name": "Small", "slug": "small", "kubespawner_override": {}}])
    form = spawner._options_form_default()
    assert isinstance(form, str) and 'value="small"' in form


def check_delete_request(tmp_path, monkeypatch) -> None:
    # overridden to turn a 403 for a pod the hub never made into "gone"; stop() calls it
    from kubespawner import KubeSpawner

    method = KubeSpawner._make_delete_pod_request
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == [
        "self", "pod_name", "delete_options", "grace_seconds", "request_timeout"]
    assert "self._make_delete_pod_request" in inspect.getsource(KubeSpawner.stop)


def check_log_name(tmp_path, monkeypatch) -> None:
    from jupyterhub.spawner import Spawner

    user = SimpleNamespace(name="alice")
    assert Spawner(user=user)._log_name == "alice"
    named = Spawner(user=user, orm_spawner=SimpleNamespace(name="gpu", server=None))
    assert named._log_name == "alice:gpu"


def check_state_kubespawner_version(tmp_path, monkeypatch) -> None:
    # which KubeSpawner wrote the saved state ("unknown": 6.x, before the safe slug scheme)
    spawner = kubespawner(tmp_path, monkeypatch)
    assert spawner._state_kubespawner_version is None
    spawner.load_state({"pod_name": "jupyter-x"})
    assert spawner._state_kubespawner_version == "unknown"
    spawner.load_state({"pod_name": "jupyter-x", "kubespawner_version": "7.0.0"})
    assert spawner._state_kubespawner_version == "7.0.0"


def hub_authenticated_handler():
    from jupyterhub.services.auth import HubAuthenticated
    from tornado import httputil, web

    class Handler(HubAuthenticated, web.RequestHandler):
        pass

    app = web.Application()
    request = httputil.HTTPServerRequest(method="GET", uri="/", connection=_Connection())
    return Handler(app, request)


class _Connection:
    def set_close_callback(self, callback) -> None:
        pass


def check_hub_auth_user_cache(tmp_path, monkeypatch) -> None:
    # the launcher sets the user it checked itself; get_current_user returns it as it is
    handler = hub_authenticated_handler()
    handler._hub_auth_user_cache = {"name": "alice", "kind": "user"}
    assert handler.get_current_user() == {"name": "alice", "kind": "user"}
    handler._hub_auth_user_cache = None
    assert handler.get_current_user() is None


def check_token_authenticated(tmp_path, monkeypatch) -> None:
    # HubAuth marks a request authenticated by a token (not a cookie): no XSRF check then
    from jupyterhub.services import auth

    source = inspect.getsource(auth)
    assert "handler._token_authenticated = True" in source
    assert "getattr(handler, '_token_authenticated', False)" in source


async def check_tornado_request_handler(tmp_path, monkeypatch) -> None:
    """_reason (the status' reason phrase), _finished and the _handle_request_exception
    hook, through a real tornado server on 127.0.0.1."""
    from tornado import httpclient, httpserver, web

    seen: dict = {}

    class Refused(Exception):
        pass

    class Handler(web.RequestHandler):
        def get(self):
            self.set_status(404)
            seen["reason"] = self._reason
            seen["finished_before"] = self._finished
            raise Refused()

        def _handle_request_exception(self, e):
            seen["hook"] = type(e).__name__
            self.set_status(418)
            self.finish("refused")
            seen["finished_after"] = self._finished

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = httpserver.HTTPServer(web.Application([("/", Handler)]))
    server.listen(port, "127.0.0.1")
    try:
        response = await httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/", raise_error=False)
    finally:
        server.stop()
    assert response.code == 418 and response.body == b"refused"
    assert seen == {"reason": "Not Found", "finished_before": False, "hook": "Refused",
                    "finished_after": True}


@dataclass(frozen=True)
class Pin:
    """One private upstream name: where it lives, how the code refers to it, the check."""

    qualname: str          # as docs/upstream.md names it
    names: tuple[str, ...]  # the attribute/import names the code uses
    check: Callable


PINS = (
    Pin("kubespawner.KubeSpawner._expand_user_properties", ("_expand_user_properties",),
        check_expand_user_properties),
    Pin("kubespawner.KubeSpawner._expand_all", ("_expand_all",), check_expand_all),
    Pin("kubespawner.KubeSpawner._sorted_dict_values", ("_sorted_dict_values",),
        check_sorted_dict_values),
    Pin("kubespawner.KubeSpawner._pvc_exists", ("_pvc_exists",), check_pvc_exists),
    Pin("kubespawner.KubeSpawner._start (overridden)", ("_start",), check_start_future),
    Pin("kubespawner.KubeSpawner._state_kubespawner_version", ("_state_kubespawner_version",),
        check_state_kubespawner_version),
    Pin("kubespawner.KubeSpawner._namespace_default", ("_namespace_default",),
        check_namespace_default),
    Pin("kubespawner.KubeSpawner._options_form_default", ("_options_form_default",),
        check_options_form_default),
    Pin("kubespawner.KubeSpawner._make_delete_pod_request (overridden)",
        ("_make_delete_pod_request",), check_delete_request),
    Pin("jupyterhub.spawner.Spawner._log_name", ("_log_name",), check_log_name),
    Pin("jupyterhub.services.auth.HubAuthenticated._hub_auth_user_cache",
        ("_hub_auth_user_cache",), check_hub_auth_user_cache),
    Pin("jupyterhub.services.auth.HubAuth: handler._token_authenticated",
        ("_token_authenticated",), check_token_authenticated),
    Pin("tornado.web.RequestHandler._reason / _finished / _handle_request_exception",
        ("_reason", "_finished", "_handle_request_exception"), check_tornado_request_handler),
)

# our own attributes whose names happen to be private names of an upstream class
OWN = {
    "_change": "the launcher's instance manager (services/launcher/instances.py)",
    "_ensure_namespace": "the launcher's own namespace check (services/launcher/instances.py)",
    "_lock": "asyncio locks of the GPU cache and the OIDC discovery cache",
    "_locks": "the launcher's per-instance locks (services/launcher/instances.py)",
    "_path": "the launcher client's URL helper (services/launcher/client.py)",
    "_render": "page rendering of the approval handlers and the launcher's reconciler",
    "_server": "LDAPBackend's ldap3.Server factory (authenticator/ldap_backend.py)",
    "_session": "the culler's aiohttp session (services/culler/hubapi.py)",
    "_started": "the drift watch's state (spawner/drift.py)",
    "_subprotocols": "the launcher proxy's websocket subprotocols (services/launcher/proxy.py)",
}


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.qualname.split(".", 1)[1][:60])
async def test_upstream_still_behaves_as_the_pack_relies_on(pin, tmp_path, monkeypatch):
    result = pin.check(tmp_path, monkeypatch)
    if inspect.isawaitable(result):
        await result


# --- the list is complete, used and documented -------------------------------------------------

def core_files() -> list[Path]:
    files = [f for folder in CORE for f in (REPO / folder).rglob("*.py")
             if "__pycache__" not in f.parts]
    return [f for f in files if not str(f.relative_to(REPO)).startswith(NOT_CORE)]


def upstream_private_names() -> set[str]:
    """Private names defined by the upstream packages (functions, classes, attributes)."""
    names: set[str] = set()
    for package in UPSTREAM:
        root = Path(__import__(package).__file__).parent
        for path in root.rglob("*.py"):
            if "tests" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(errors="replace"))):
                name = None
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    name = node.attr
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    name = node.id
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    name = node.value  # getattr(handler, '_token_authenticated', False)
                if name and re.fullmatch(r"_[a-z]\w*", name) and not name.endswith("__"):
                    names.add(name)
    return names


def used_private_names() -> dict[str, list[str]]:
    """Private attribute/import names in the core's code -> where (file:line)."""
    used: dict[str, list[str]] = {}
    for path in core_files():
        where = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            found = []
            if isinstance(node, ast.Attribute):
                found = [node.attr]
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in UPSTREAM:
                found = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant):
                found = [str(node.args[1].value)]
            for name in found:
                if re.fullmatch(r"_[a-z]\w*", name):
                    used.setdefault(name, []).append(f"{where}:{node.lineno}")
    return used


def test_every_private_upstream_name_the_code_uses_is_documented_and_pins_are_used():
    documented = DOCS.read_text()
    upstream = upstream_private_names()
    used = used_private_names()
    undocumented = {n: w for n, w in used.items()
                    if n in upstream and n not in OWN and f"{n}" not in documented}
    assert undocumented == {}, (
        "private upstream names used but not in docs/upstream.md (say why there, pin them "
        f"in a test, or use a public API): {undocumented}")
    stale = sorted({name for pin in PINS for name in pin.names} - set(used))
    assert stale == [], (f"pinned but no longer used: {stale} (drop them from PINS and "
                         "docs/upstream.md)")


def test_docs_name_every_pin():
    text = DOCS.read_text()
    missing = [pin.qualname for pin in PINS if not all(name in text for name in pin.names)]
    assert missing == []


# --- fragile behaviour removed ----------------------------------------------------------------

async def test_user_namespace_template_is_refused_not_ignored(tmp_path, monkeypatch):
    """KubeSpawner.user_namespace_template would be silently ignored by KDashSpawner (it
    names namespaces with namespace_prefix): setting it stops the spawner with a message."""
    from traitlets.config import Config

    from kdash_hub.spawner import KDashSpawner

    kubespawner(tmp_path, monkeypatch)  # the kubeconfig environment
    user = SimpleNamespace(name="alice", id=1, url="/user/alice/", escaped_name="alice",
                           groups=[], admin=False)
    for section in ("KubeSpawner", "KDashSpawner", "Spawner"):
        with pytest.raises(TraitError) as info:
            KDashSpawner(_mock=True, user=user,
                         config=Config({section: {"user_namespace_template": "x-{username}"}}))
        message = str(info.value)
        assert "user_namespace_template = 'x-{username}' would be ignored" in message
        assert "KDashSpawner.namespace_prefix" in message
    # unset, the spawner names the namespace itself
    spawner = KDashSpawner(_mock=True, user=user, config=Config())
    assert spawner.namespace.startswith("kdash-")


def test_the_constraints_file_pins_the_chart_image_versions():
    """tests/constraints/z2jh-4.4.0.txt holds the hub image's versions of the upstream pack."""
    text = (REPO / "tests" / "constraints" / "z2jh-4.4.0.txt").read_text()
    for pin in ("jupyterhub==5.5.0", "jupyterhub-kubespawner==7.0.0", "oauthenticator==17.4.0",
                "jupyterhub-ldapauthenticator==2.0.2", "kubernetes-asyncio==36.1.0",
                "tornado==6.5.7"):
        assert re.search(rf"^{re.escape(pin)}$", text, re.M), pin
    image = Path(REPO.parent / "shared" / "z2jh" / "hub-image-4.4.0-requirements.txt")
    if image.is_file():  # equal to the image's own list, pin for pin
        def pins(t: str) -> list[str]:
            return sorted(line for line in t.splitlines() if re.match(r"[A-Za-z0-9]", line))
        assert pins(text) == pins(image.read_text())
    assert sys.version_info >= (3, 11)
