"""`kdash-hub culler [--config FILE] [--dry-run] [--once] [CullerApp options...]`."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "culler", help="run kdash-culler (stop idle servers with per-profile rules)",
        description="Run the kdash-culler service. Other CullerApp settings can follow as "
                    "--CullerApp.<name>=<value>.",
    )
    parser.add_argument("--config", metavar="FILE", help="config file (.py or .json)")
    parser.add_argument("--dry-run", action="store_true", help="log, don't stop anything")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--log-level", default=None)
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="more settings, e.g. --CullerApp.cull_every=10m")
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
    return argv + [a for a in args.extra if a != "--"]


def run(args: argparse.Namespace) -> int:
    from .app import main

    return main(argv_of(args))
