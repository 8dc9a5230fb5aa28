"""Custom images: what a user may type, and the attacks that must be refused."""

from __future__ import annotations

import pytest
from tornado import web

from kdash_hub.spawner import chooser, images, profiles

DIGEST = "sha256:" + "a1" * 32
PREFIXES, PATTERNS = images.rules_of({"custom_image": True}, ["quay.io/jupyter"],
                                     [r"registry\.example\.org/ml/[a-z-]+:v[0-9]+"])
FLAVOR = {"slug": "cpu", "display_name": "CPU", "custom_image": True,
          "images": {"lab": "quay.io/jupyter/base-notebook:2024-12-02",
                     "torch": "quay.io/jupyter/pytorch-notebook:2024-12-02"}}


@pytest.mark.parametrize("image", [
    "quay.io/jupyter/scipy-notebook:2024-12-02",
    "quay.io/jupyter/scipy-notebook",
    f"quay.io/jupyter/scipy-notebook@{DIGEST}",
    f"quay.io/jupyter/scipy-notebook:latest@{DIGEST}",
    "quay.io/jupyter/team/sub_dir/x:Tag_1.2-rc",
    "registry.example.org/ml/trainer:v3",
])
def test_allowed(image):
    assert images.matches(image, PREFIXES, PATTERNS)


@pytest.mark.parametrize("image", [
    "quay.io.evil.com/jupyter/x:1",          # a look-alike registry
    "quay.io/jupyterx/x:1",                  # a look-alike organisation
    "evil.com/quay.io/jupyter/x:1",
    "quay.io/jupyter/../evil/x:1",           # path traversal
    "quay.io/jupyter/./x",
    "quay.io/jupyter//x",
    "quay.io/jupyter/",
    " quay.io/jupyter/x:1",                  # whitespace anywhere
    "quay.io/jupyter/x:1 ",
    "quay.io/jupyter/x:1\n",                 # a trailing newline ($ would let it through)
    "quay.io/jupyter/x:1\nevil.com/x",
    "quay.io/jupyter/x\t:1",
    "QUAY.IO/jupyter/x:1",                   # uppercase registry or path
    "quay.io/Jupyter/x:1",
    "quay.io/jupyter/x@sha256:abc",          # a short digest
    "quay.io/jupyter/x@md5:" + "a" * 32,
    "quay.io/jupyter/" + "a" * 300,          # too long
    "registry.example.org/ml/trainer:v3x",   # the regex is anchored at the end
    "registry.example.org/ml/trainer:v3\n",
    "xregistry.example.org/ml/trainer:v3",   # ... and at the start
    "registry.example.org/ml/trainer:v3@" + DIGEST,
    "quay.io/jupyter/x:1;rm -rf /",
    "",
])
def test_refused(image):
    assert not images.matches(image, PREFIXES, PATTERNS)


def test_a_prefix_without_slash_never_matches_a_longer_host():
    prefixes, _ = images.rules_of({"custom_image": True}, ["quay.io"], [])
    assert prefixes == ["quay.io/"]
    assert images.matches("quay.io/x/y:1", prefixes, [])
    assert not images.matches("quay.io.evil.com/x/y:1", prefixes, [])


def test_a_flavors_own_lists_replace_the_spawners():
    flavor = {"custom_image": {"registries": ["ghcr.io/lab/"]}}
    assert images.rules_of(flavor, ["quay.io/"], ["x"]) == (["ghcr.io/lab/"], [])


def check(options, flavor=FLAVOR):
    return images.check(flavor, options, ["quay.io/jupyter/"], [])


def test_check_sentences():
    assert check({"image": "lab"}) is None
    assert check({"image--unlisted-choice": ""}) is None
    assert check({"image--unlisted-choice": "quay.io/jupyter/r-notebook:1"}) == \
        "quay.io/jupyter/r-notebook:1"
    with pytest.raises(web.HTTPError) as e:
        check({"image--unlisted-choice": "docker.io/evil/miner:1"})
    assert e.value.status_code == 400
    assert e.value.jupyterhub_message == (
        "The image “docker.io/evil/miner:1” is not from a registry allowed here: CPU accepts "
        "images from quay.io/jupyter/…; choose one of those or one of the images offered.")
    with pytest.raises(web.HTTPError) as e:
        check({"image--unlisted-choice": "quay.io/jupyter/x:1\nevil"})
    assert "“quay.io/jupyter/x:1␣evil” is not an image name" in e.value.jupyterhub_message
    with pytest.raises(web.HTTPError) as e:
        check({"image--unlisted-choice": ["quay.io/jupyter/x:1"]})
    assert e.value.status_code == 400 and "written as text" in e.value.jupyterhub_message
    with pytest.raises(web.HTTPError) as e:
        check({"image--unlisted-choice": "quay.io/jupyter/x:1"},
              {**FLAVOR, "custom_image": False})
    assert e.value.jupyterhub_message == ("CPU does not let you choose your own image; "
                                          "choose one of the images offered.")


def test_profile_and_chooser_offer_the_field():
    profile = profiles.to_profile(FLAVOR, image_hint="quay.io/jupyter/…")
    option = profile["profile_options"]["image"]
    assert option["unlisted_choice"]["enabled"] is True
    assert option["unlisted_choice"]["kubespawner_override"] == {"image": "{value}"}
    # a flavor with no image list still gets a default choice (KubeSpawner needs one)
    bare = profiles.to_profile({"slug": "b", "display_name": "B", "custom_image": True})
    assert list(bare["profile_options"]["image"]["choices"]) == ["default"]
    html = chooser.render([profile], [], {"profile": "cpu",
                                          "image--unlisted-choice": "quay.io/jupyter/r:1"})
    assert 'name="profile-option-cpu--image--unlisted-choice"' in html
    assert 'value="quay.io/jupyter/r:1"' in html and "(from quay.io/jupyter/…)" in html
    # no field where the flavor does not allow it
    plain = profiles.to_profile({**FLAVOR, "custom_image": False})
    assert "unlisted-choice" not in chooser.render([plain], [], {})
