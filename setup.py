"""Keep kdash_hub/demo.py out of the kdash-hub sdist and wheel (everything else is in
pyproject.toml).

`kdash-hub demo` is part of kdash-hub-local (kdash-hub-local/pyproject.toml), like the local
cluster and the dev services it starts; the layout keeps its source in kdash_hub/, whose
other modules are the core. setuptools takes every module of a listed package, so this
build_py leaves that one module out.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

# (package, module) pairs that kdash-hub-local ships
LOCAL_MODULES = {("kdash_hub", "demo")}


class CoreBuildPy(build_py):
    """build_py without the modules kdash-hub-local ships."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in LOCAL_MODULES]


setup(cmdclass={"build_py": CoreBuildPy})
