"""Loads every fixture module under tests/fixtures as a pytest plugin.

Each part of the pack keeps its fixtures in a module of its own there (cluster, hub, ldap,
oidc, ...), so they can be shared by all the test folders without one giant conftest.
"""

import ast
import functools
import gc
import sys
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)


def _parse_without_collector(parse):
    """`ast.parse` with the garbage collector paused. On CPython 3.11 a finalizer the collector
    runs while `compile()` builds an AST (an asyncio future logging "exception was never
    retrieved" formats a traceback, and 3.11's traceback parses source lines to place its
    carets) re-enters the AST builder and fails the outer parse with "SystemError: AST
    constructor recursion depth mismatch". It failed test_upstream_pins once on CI; pytest's
    assertion rewriting and hypothesis parse through the same function."""

    @functools.wraps(parse)
    def parse_paused(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return parse(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return parse_paused


if sys.version_info < (3, 12):
    ast.parse = _parse_without_collector(ast.parse)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Collect garbage before the summary. On CPython 3.11.7, a finalizer the collector runs
    while `compile()` builds an AST can fail it with "SystemError: AST constructor recursion
    depth mismatch"; hypothesis's plugin compiles its modules at the summary, after the last
    test's leftovers (a run of test_spawner_bundle.py alone crashed there)."""
    gc.collect()
