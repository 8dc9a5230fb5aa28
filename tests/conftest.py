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
