"""Named servers, property-based: no two (user, server) pairs ever share a pod, whatever
names they pick, and every server of a user has the same home claim.

KDashSpawner names a server's pod `naming.user_object_name("jupyter", user, server)`
(spawner/servers.py) under KubeSpawner's default template. The pairs below are the ones a
user would craft: a server name equal to another's escaped form, user/server splits of
one text (`("a", "b--c")` and `("a--b", "c")`), the default server of a user named like
someone's `user--server`, long names sharing their first 60 characters. JupyterHub 6 takes
only safe-slug server names for new servers; 5.5 (the chart's hub image) takes any name
without '/', and names made under 5.5 stay after an upgrade: so any text is drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from traitlets.config import Config

from kdash_hub.naming import is_dns1123_label, user_object_name
from kdash_hub.spawner import KDashSpawner, servers

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
names = st.text(max_size=80) | st.text(alphabet="abz09-._", min_size=1, max_size=70)


@dataclass
class _User:
    name: str
    id: int = 1
    admin: bool = False
    groups: list = field(default_factory=list)
    url: str = "/user/x/"

    @property
    def escaped_name(self) -> str:
        return self.name


def pod(user: str, server: str) -> str:
    """The pod name of `user`'s `server` as KDashSpawner computes it."""
    stub = SimpleNamespace(pod_name_template=servers.KUBESPAWNER_POD_NAME,
                           user=SimpleNamespace(name=user), name=server)
    return servers.pod_name(stub)


@SETTINGS
@given(names, names)
@example("alice", "")
@example("a" * 70, "gpu")
@example("数据", "ｇｐｕ")
def test_every_pod_name_is_a_valid_label(user, server):
    name = pod(user, server)
    assert is_dns1123_label(name) and len(name) <= 63, (user, server, name)
    assert pod(user, server) == name


@SETTINGS
@given(names, names, names, names)
@example("a", "b--c", "a--b", "c")
@example("a", "b", "a--b", "")
@example("a-b", "c", "a", "b-c")
@example("alice", "gpu", "alice--gpu", "")
def test_distinct_pairs_get_distinct_pods(user_a, server_a, user_b, server_b):
    assume((user_a, server_a) != (user_b, server_b))
    assert pod(user_a, server_a) != pod(user_b, server_b)


@SETTINGS
@given(names, names, st.sampled_from(["server", "user", "joined"]))
@example("eve", "a.b", "server")
@example("eve", "x" * 60, "server")
@example("bob", "gpu", "joined")
def test_a_name_made_from_anothers_pod_name_is_apart(user, server, how):
    """The attacker picks, as a server name (or username), what a victim's pod became."""
    victim = pod(user, server).removeprefix("jupyter-")
    if how == "server":  # the victim's pod suffix after "<user>--", as a server of the user
        attacker = (user, victim.removeprefix(f"{user}--"))
    elif how == "user":  # the victim's whole suffix as a username (its default server)
        attacker = (victim, "")
    else:  # split at the first "--"
        head, _, tail = victim.partition("--")
        attacker = (head, tail)
    assume(attacker != (user, server))
    assert pod(*attacker) != pod(user, server)


@SETTINGS
@given(st.text(alphabet="abcdefghij", min_size=60, max_size=60), names, names)
def test_long_server_names_sharing_60_characters_are_apart(common, tail_a, tail_b):
    assume(tail_a != tail_b)
    assert pod("eve", common + tail_a) != pod("eve", common + tail_b)


def test_kept_names_read_as_kubespawner_made_them():
    """Readable where KubeSpawner's were: existing docs, dashboards and kubectl habits hold."""
    assert pod("alice", "") == "jupyter-alice"
    assert pod("alice", "gpu") == "jupyter-alice--gpu"
    assert pod("alice", "a.b") == user_object_name("jupyter", "alice", "a.b")
    assert "---" in pod("alice", "a.b")


def spawner(user: str, server: str, **traits) -> KDashSpawner:
    config = Config()
    for key, value in traits.items():
        config.KDashSpawner[key] = value
    orm = SimpleNamespace(name=server, state={}, user_options={}, server=None)
    return KDashSpawner(_mock=True, user=_User(user), orm_spawner=orm, config=config)


@pytest.mark.parametrize("user", ["alice", "a.b", "A" * 50, "数据"])
@pytest.mark.parametrize("server", ["", "gpu", "x" * 30, "work-2"])
async def test_every_server_of_a_user_has_the_default_servers_home(offline_kube, user,
                                                                   server):
    named, default = spawner(user, server), spawner(user, "")
    assert named.name == server
    assert named.pvc_name == default.pvc_name == default._home_pvc_name
    assert named.pod_name == pod(user, server)
    if server:
        assert named.pod_name != default.pod_name


async def test_an_admins_own_templates_are_kept(offline_kube):
    s = spawner("alice", "gpu", pod_name_template="nb-{username}-{servername}",
                pvc_name_template="home-{username}")
    assert s.pod_name == "nb-alice-gpu"
    assert s.pvc_name == "home-alice"


async def test_a_renamed_server_forgets_its_old_pod_name(offline_kube):
    """JupyterHub 6 renames a stopped server and makes its spawner anew from the saved
    state: with the old pod name in it, a new server of the old name would share the pod."""
    old = spawner("eve", "old")
    orm = SimpleNamespace(state=old.get_state())
    assert orm.state["pod_name"] == "jupyter-eve--old"
    servers.forget_pod_name(orm)
    assert "pod_name" not in orm.state and "dns_name" not in orm.state
    renamed = spawner("eve", "renamed")
    renamed.load_state(orm.state)
    assert renamed.pod_name == "jupyter-eve--renamed"
    assert renamed.pvc_name == old.pvc_name  # the home stays the user's
