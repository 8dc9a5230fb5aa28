"""Flavors -> profiles, group filtering, tolerations merge, free GPUs."""

from __future__ import annotations

import pytest

from kdash_hub.spawner import profiles
from kdash_hub.spawner.gpu_availability import GpuFree, free_gpus

A100 = {"slug": "gpu-a100", "display_name": "GPU A100", "description": "Big GPUs",
        "gpu": {"resource": "nvidia.com/gpu", "counts": [1, 2, 4]},
        "node_selector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "images": {"torch": "pytorch:1", "tf": {"display_name": "TensorFlow", "image": "tf:2"}},
        "cpu_limit": 8, "mem_limit": "32G", "idle_timeout": 3600, "groups": ["ml"]}
SMALL = {"display_name": "CPU small", "cpu_limit": 1, "default": True}


def test_profile_from_gpu_flavor_shows_free_gpus():
    p = profiles.to_profile(A100, GpuFree(total=5, largest_node=3),
                            {"nvidia.com/gpu": "NVIDIA GPU"})
    assert p["slug"] == "gpu-a100"
    assert p["description"] == "Big GPUs — 5 NVIDIA GPUs free now, at most 3 per server"
    over = p["kubespawner_override"]
    assert over["cpu_limit"] == 8 and over["node_selector"] == {"gpu": "a100"}
    assert "tolerations" not in over  # merged by the spawner, never replaced
    gpus = p["profile_options"]["gpus"]["choices"]
    assert list(gpus) == ["1", "2", "4"]
    assert gpus["2"]["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    assert [(c["display_name"], c.get("disabled", False), c.get("default", False))
            for c in gpus.values()] == [("1 NVIDIA GPU", False, True),
                                        ("2 NVIDIA GPUs", False, False),
                                        ("4 NVIDIA GPUs", True, False)]
    assert gpus["4"]["disabled_reason"] == "not free now: at most 3 on one node"
    assert p["profile_options"]["image"]["choices"]["tf"]["kubespawner_override"] == {
        "image": "tf:2"}


def test_cpu_flavor_profile():
    p = profiles.to_profile(SMALL)
    assert p == {"slug": "cpu-small", "display_name": "CPU small", "description": "",
                 "kubespawner_override": {"cpu_limit": 1}, "default": True}


def test_group_filtering():
    flavors = [SMALL, A100]
    assert profiles.allowed_flavors(flavors, []) == [SMALL]
    assert profiles.allowed_flavors(flavors, ["ml"]) == [SMALL, A100]
    assert profiles.allowed_flavors(flavors, [], is_admin=True) == [SMALL, A100]


def test_tolerations_merge_keeps_defaults():
    base = [{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
             "effect": "NoSchedule"}]
    merged = profiles.merge_tolerations(base, A100["tolerations"] + base)
    assert merged == base + A100["tolerations"]


def test_chosen_gpus():
    assert profiles.chosen_gpus(A100, {}) == 1
    assert profiles.chosen_gpus(A100, {"gpus": "4"}) == 4
    assert profiles.chosen_gpus(SMALL, {"gpus": "4"}) == 0
    with pytest.raises(ValueError, match="not a number of GPUs"):
        profiles.chosen_gpus(A100, {"gpus": "3"})
    with pytest.raises(ValueError, match="choose 1 or 2 or 4"):
        profiles.chosen_gpus(A100, {"gpus": "many"})


def test_unnamed_gpu_kinds_keep_their_resource_name():
    p = profiles.to_profile(A100, GpuFree(total=0, largest_node=0), {})
    gpus = p["profile_options"]["gpus"]["choices"]
    assert gpus["1"]["display_name"] == "1 × nvidia.com/gpu"
    assert all(c["disabled_reason"] == "none free now" for c in gpus.values())
    assert gpus["1"]["default"] and p["kdash_unavailable"] == \
        "No nvidia.com/gpu is free now; try again later."


def test_idle_timeout_follows_the_culler_rules():
    rules = {"default_rule": {"idle": "8h"}, "profile_rules": {"gpu-a100": {"idle": "30m"}},
             "group_rules": {"long": {"idle": "1d"}, "forever": {"idle": "never"}}}
    assert profiles.idle_timeout(SMALL, {}, []) == (False, None)
    assert profiles.idle_timeout(A100, {}, []) == (True, 3600)  # the flavor's own
    assert profiles.idle_timeout(SMALL, rules, []) == (True, 8 * 3600)
    assert profiles.idle_timeout(A100, rules, []) == (True, 1800)  # the culler's rule wins
    assert profiles.idle_timeout(A100, rules, ["long"]) == (True, 86400)
    assert profiles.idle_timeout(A100, rules, ["long", "forever"]) == (True, None)
    assert profiles.idle_text(True, 5400) == "Stopped after 1h30m idle"
    assert profiles.idle_text(True, None) == "Never stopped for being idle"
    assert profiles.idle_text(False, None) is None


def test_hidden_flavors_explained_by_group_rule():
    other = {"display_name": "CPU large", "groups": ["ml"]}
    secret = {"display_name": "Debug", "groups": ["ops"], "hidden_note": False}
    own = {"display_name": "H100", "groups": ["hpc", "ml"], "hidden_note": "Ask for H100s."}
    flavors = [SMALL, A100, other, secret, own]
    assert profiles.hidden_notes(flavors, []) == ["Ask for H100s.",
                                                  "GPU A100 and CPU large are for the group ml."]
    assert profiles.hidden_notes(flavors, ["ml"]) == []
    assert profiles.hidden_notes([{"display_name": "X", "groups": ["a", "b"]}], []) == [
        "X is for the groups a and b."]


def node(name, gpus, labels=None, ready=True, unschedulable=False):
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)} if gpus is not None else {},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(node_name, gpus, phase="Running", via="requests"):
    return {"spec": {"nodeName": node_name, "containers": [
        {"resources": {via: {"nvidia.com/gpu": str(gpus)}}}]}, "status": {"phase": phase}}


def test_free_gpus_is_allocatable_minus_requests():
    nodes = [node("a", 4, {"gpu": "a100"}), node("b", 8, {"gpu": "a100"}),
             node("c", 8, {"gpu": "t4"}), node("d", 8, {"gpu": "a100"}, ready=False),
             node("e", None)]
    pods = [pod("a", 1), pod("a", 2, via="limits"), pod("b", 8, phase="Succeeded"),
            pod("b", 3, phase="Pending"), pod(None, 4)]
    assert free_gpus(nodes, pods, "nvidia.com/gpu", {"gpu": "a100"}) == GpuFree(6, 5)
    assert free_gpus(nodes, pods, "nvidia.com/gpu") == GpuFree(14, 8)
    assert free_gpus(nodes, pods, "amd.com/gpu") == GpuFree(0, 0)


def test_refusal_sentences_are_plain():
    from kdash_hub.spawner import refusals

    names = {"nvidia.com/gpu": "NVIDIA GPU"}

    def sentence(check, *args):
        with pytest.raises(Exception) as e:
            check(*args)
        assert str(e.value) == f"HTTP {e.value.status_code}: Refused ({e.value.log_message})"
        return e.value.status_code, e.value.jupyterhub_message

    assert sentence(refusals.check_gpus_free, A100, 1, GpuFree(0, 0), names) == (
        400, "You asked for 1 NVIDIA GPU with GPU A100, but no NVIDIA GPU is free right now: "
             "try again later or choose another profile.")
    assert sentence(refusals.check_choices, A100, profiles.to_profile(A100),
                    {"image": "x" * 60}) == (
        400, f"“{'x' * 40}…” is not one of the Image choices of GPU A100; choose torch or "
             "TensorFlow.")
    assert sentence(refusals.check_quota, {"requests.nvidia.com/gpu": 2, "limits.memory": "8Gi"},
                    {"requests.nvidia.com/gpu": "2", "limits.memory": "16Gi"},
                    {"requests.nvidia.com/gpu": "1", "limits.memory": "4Gi"}, names) == (
        403, "This server would go over your quota: it asks for 2 NVIDIA GPUs (your quota is 2, "
             "1 already in use); choose a smaller profile, stop other things in your namespace, "
             "or ask an admin for more.")
    assert sentence(refusals.choose_flavor, [SMALL, A100], [], "gpu-a100")[0] == 403
    assert sentence(refusals.choose_flavor, [SMALL], [], None) == (
        403, "No server profile is available to you: ask an admin to add you to a group that "
             "may start servers.")
