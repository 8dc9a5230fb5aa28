"""The `kdash-hub` command: one entry point, each part registers its own subcommands.

Every module listed in SUBCOMMAND_MODULES has `add_parser(subparsers)`, which adds its
subcommands and sets `func` (called with the parsed args; may return an exit code or a
coroutine). A module that isn't there is reported, not hidden, when its command is used:
the local cluster and the demo come with kdash-hub-local (`pip install kdash-hub[local]`),
which the hub image does not install.
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
# subcommands of kdash-hub-local, by module: absent from a plain `pip install kdash-hub`
LOCAL_SUBCOMMANDS = {"kdash_hub.localcluster.cli": "local-cluster", "kdash_hub.demo": "demo"}
LOCAL_HINT = "install kdash-hub[local] for local-cluster/demo"


def add_missing_local(subparsers: argparse._SubParsersAction, command: str, error: str) -> None:
    """A stand-in for a kdash-hub-local subcommand that says how to get it."""

    def missing(args: argparse.Namespace) -> int:
        print(f"kdash-hub {command}: not installed ({error}); {LOCAL_HINT}", file=sys.stderr)
        return 2

    # no option prefix: every argument (--help too) is taken, so any use ends in the hint
    parser = subparsers.add_parser(command, help=f"(not installed: {LOCAL_HINT})",
                                   add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs="*")
    parser.set_defaults(func=missing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdash-hub",
        description="kdash-hub: a JupyterHub plugin pack for data-science platforms on Kubernetes",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"kdash-hub {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if name not in LOCAL_SUBCOMMANDS:
                raise
            add_missing_local(subparsers, LOCAL_SUBCOMMANDS[name], f"no module {e.name}")
            continue
        module.add_parser(subparsers)
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
