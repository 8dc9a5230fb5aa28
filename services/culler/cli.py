"""`kdash-hub culler [--config FILE] [--dry-run] [--once] [--set NAME=VALUE ...]`."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "culler", help="run kdash-culler (stop idle servers with per-profile rules)",
        description="Run the kdash-culler service (the hub runs it as a managed service; "
                    "this is for trying rules by hand, e.g. with --dry-run --once).",
    )
    parser.add_argument("--config", metavar="FILE", help="config file (.py or .json)")
    parser.add_argument("--dry-run", action="store_true", help="log, don't stop anything")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--log-level", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a CullerApp setting, e.g. --set cull_every=10m "
                             "(JSON values for rules: --set 'profile_rules={...}')")
    parser.set_defaults(func=run)


def argv_of(args: argparse.Namespace) -> list[str]:
    argv = []
    if args.config:
        argv.append(f"--config={args.config}")
    if args.dry_run:
        argv.append("--dry-run")
    if args.once:
        argv.append("--once")
    if args.log_level:
        argv.append(f"--log-level={args.log_level}")
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set needs NAME=VALUE, got {item!r}")
        argv.append(f"--CullerApp.{name}={value}")
    return argv


def run(args: argparse.Namespace) -> int:
    from .app import main

    return main(argv_of(args))
