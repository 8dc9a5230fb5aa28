"""The `kdash-hub` command: one entry point, each part registers its own subcommands.

Every module listed in SUBCOMMAND_MODULES has `add_parser(subparsers)`, which adds its
subcommands and sets `func` (called with the parsed args; may return an exit code or a
coroutine). A module that isn't there is reported, not hidden, when its command is used.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys

SUBCOMMAND_MODULES = (
    "kdash_hub.localcluster.cli",
    "kdash_hub.demo",
    "kdash_hub.services.launcher.cli",
    "kdash_hub.services.culler.cli",
    "kdash_hub.settings_doc",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdash-hub",
        description="kdash-hub: a JupyterHub plugin pack for data-science platforms on Kubernetes",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"kdash-hub {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result = func(args)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
