"""Loads every fixture module under tests/fixtures as a pytest plugin.

Each part of the pack keeps its fixtures in a module of its own there (cluster, hub, ldap,
oidc, ...), so they can be shared by all the test folders without one giant conftest.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Collect garbage before the summary. On CPython 3.11.7, a finalizer the collector runs
    while `compile()` builds an AST can fail it with "SystemError: AST constructor recursion
    depth mismatch"; hypothesis's plugin compiles its modules at the summary, after the last
    test's leftovers (a run of test_spawner_bundle.py alone crashed there)."""
    import gc

    gc.collect()
