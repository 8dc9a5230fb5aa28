"""docs/settings.md is the current output of `kdash-hub settings-doc`."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from kdash_hub import settings_doc, z2jh

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_settings_md_is_current():
    assert DOC.read_text() == settings_doc.render(), (
        "docs/settings.md is out of date: run `make settings-doc` "
        "(kdash-hub settings-doc -o docs/settings.md)"
    )


def test_every_section_class_and_pack_setting_is_documented():
    text = settings_doc.render()
    for section in z2jh.SECTIONS:
        for cls in z2jh.section_classes(section):
            assert f"## `{cls.__name__}` — `custom.kdash.{section.name}`" in text
            for name in settings_doc.own_traits(cls):
                assert f"#### `{name}`" in text, (cls.__name__, name)


def test_rendering_is_stable_and_free_of_addresses():
    first, second = settings_doc.render(), settings_doc.render()
    assert first == second
    assert not re.search(r"0x[0-9a-f]{6,}", first)


def test_command_writes_the_file(tmp_path):
    parser = argparse.ArgumentParser()
    settings_doc.add_parser(parser.add_subparsers())
    out = tmp_path / "settings.md"
    args = parser.parse_args(["settings-doc", "-o", str(out)])
    assert args.func(args) == 0
    assert out.read_text() == settings_doc.render()
