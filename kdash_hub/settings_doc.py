"""`kdash-hub settings-doc`: the settings reference, generated from the traitlets help strings.

docs/settings.md is this command's output; a test regenerates it and compares, so the
reference cannot drift from the code. Only settings the pack defines are listed; the ones a
class inherits from upstream (KubeSpawner, the OAuth and LDAP authenticators, traitlets
Application) are linked to upstream's documentation.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from traitlets import TraitType
from traitlets.config import Configurable

from . import z2jh

PACKAGE = "kdash_hub"
# modules that are programs or development tools (the local cluster too), not parts of a hub
SKIP_MODULES = re.compile(r"(^|\.)(__main__|demo|dev|localcluster|settings_doc|cli)(\.|$)")
UPSTREAM_DOCS = {
    "KubeSpawner": "https://jupyterhub-kubespawner.readthedocs.io/en/latest/spawner.html",
    "Spawner": "https://jupyterhub.readthedocs.io/en/stable/reference/api/spawner.html",
    "GenericOAuthenticator": "https://oauthenticator.readthedocs.io/en/latest/reference/api/gen/oauthenticator.generic.html",
    "LDAPAuthenticator": "https://github.com/jupyterhub/ldapauthenticator#configuration",
    "Authenticator": "https://jupyterhub.readthedocs.io/en/stable/reference/api/auth.html",
    "Application": "https://traitlets.readthedocs.io/en/stable/config.html",
}


def is_pack_class(cls: type) -> bool:
    return cls.__module__.split(".")[0] == PACKAGE


def own_traits(cls: type[Configurable]) -> dict[str, TraitType]:
    """Config traits defined (or redefined) by the pack's classes in `cls`'s MRO."""
    traits = cls.class_traits(config=True)
    return {
        name: trait
        for name, trait in sorted(traits.items())
        if any(is_pack_class(k) and name in vars(k) for k in cls.__mro__)
    }


def upstream_bases(cls: type) -> list[str]:
    """Upstream configurable bases whose settings `cls` also accepts, nearest first."""
    names = [k.__name__ for k in cls.__mro__[1:] if not is_pack_class(k)]
    return [n for n in names if n in UPSTREAM_DOCS][:2]


# the pack's package roots: spawner/, authenticator/ and services/ are mapped into
# kdash_hub by setuptools' package-dir, so they are not below kdash_hub/ on disk
ROOTS = (PACKAGE, f"{PACKAGE}.spawner", f"{PACKAGE}.authenticator", f"{PACKAGE}.services")


def _pack_modules() -> Iterator[str]:
    seen: set[str] = set()
    for root in ROOTS:
        package = importlib.import_module(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if info.name not in seen and not SKIP_MODULES.search(info.name[len(PACKAGE) + 1:]):
                seen.add(info.name)
                yield info.name


def discover_classes() -> list[tuple[str | None, type[Configurable]]]:
    """(custom.kdash section or None, class) for every configurable class of the pack."""
    found: list[tuple[str | None, type[Configurable]]] = []
    seen: set[type] = set()
    for section in z2jh.SECTIONS:
        for cls in z2jh.section_classes(section):
            found.append((section.name, cls))
            seen.add(cls)
    others = []
    for module_name in _pack_modules():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Configurable) and cls.__module__ == module_name
                and cls not in seen and own_traits(cls)
                # a mixin of a documented class is documented there
                and not any(issubclass(known, cls) for known in seen)
            ):
                seen.add(cls)
                others.append((None, cls))
    found.extend(sorted(others, key=lambda item: (item[1].__module__, item[1].__name__)))
    return found


def _package_dirs() -> list[tuple[str, str]]:
    """(directory, `<kdash_hub>/...` placeholder) of the pack's imported packages, longest
    first: defaults that are paths inside the installed package read the same everywhere."""
    dirs = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == PACKAGE and getattr(module, "__path__", None):
            rest = name.split(".", 1)[1].replace(".", "/") if "." in name else ""
            placeholder = f"<{PACKAGE}>" + (f"/{rest}" if rest else "")
            dirs.extend((str(Path(p)), placeholder) for p in module.__path__)
    return sorted(dirs, key=lambda item: -len(item[0]))


def _default(trait: TraitType) -> str:
    try:
        text = trait.default_value_repr()
    except Exception:  # noqa: BLE001 - a dynamic default has no static representation
        text = "(computed)"
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    for directory, placeholder in _package_dirs():
        text = text.replace(directory, placeholder)
    return text if len(text) <= 200 else text[:197] + "..."


def trait_markdown(cls: type, name: str, trait: TraitType) -> str:
    help_text = inspect.cleandoc(trait.help or "") or "(no help text)"
    return (
        f"#### `{name}`\n\n"
        f"*{type(trait).__name__}*, default: `{_default(trait)}`\n\n"
        f"{help_text}\n"
    )


def class_markdown(section: str | None, cls: type[Configurable]) -> str:
    title = f"`{cls.__name__}`" + (f" — `custom.kdash.{section}`" if section else "")
    lines = [f"## {title}\n"]
    doc = inspect.cleandoc(vars(cls).get("__doc__") or getattr(cls, "description", "") or "")
    if doc:
        lines.append(doc.split("\n\n")[0].replace("\n", " ") + "\n")
    where = f"Class `{cls.__module__}.{cls.__name__}`. "
    if section:
        where += f"In Helm values: `custom.kdash.{section}.<setting>`; in a "
    else:
        where += "In a "
    lines.append(where + f"jupyterhub_config.py: `c.{cls.__name__}.<setting>`.\n")
    bases = upstream_bases(cls)
    if bases:
        links = ", ".join(f"[{b}]({UPSTREAM_DOCS[b]})" for b in bases)
        lines.append(f"It also accepts every setting of {links}.\n")
    lines.append("")
    for name, trait in own_traits(cls).items():
        lines.append(trait_markdown(cls, name, trait))
    return "\n".join(lines)


def render() -> str:
    """The whole settings reference as Markdown."""
    parts = [
        "# Settings reference\n",
        "<!-- Generated by `kdash-hub settings-doc` (make settings-doc) from the traitlets help "
        "strings. Do not edit: tests/unit/test_settings_doc.py checks it is current. -->\n",
        "Every setting of the pack, by class. With the zero-to-jupyterhub chart, set them under "
        "`custom.kdash.<section>` (see [the admin guide](admin-guide.md)); in a plain "
        "`jupyterhub_config.py`, as `c.<Class>.<setting>`.\n",
    ]
    for section, cls in discover_classes():
        parts.append(class_markdown(section, cls))
    return "\n".join(parts).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    text = render()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "settings-doc", help="print the settings reference (Markdown) from the help strings",
        description="Print the Markdown settings reference of every configurable class of "
        "the pack, generated from the traitlets help strings (docs/settings.md).",
    )
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.set_defaults(func=run)
