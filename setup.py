"""Packages are found, not listed: every folder with an ``__init__.py`` under the four source roots
travels in the wheel, under one import name (``pipeline/store`` installs as
``viewfinder.pipeline.store``). Everything else about the build is in ``pyproject.toml``."""

from setuptools import find_packages, setup

ROOTS = {"viewfinder": "viewfinder", "viewfinder.pipeline": "pipeline", "viewfinder.adapters": "adapters"}
DATA = {"viewfinder.prompts": "prompts", "viewfinder.configs": "configs"}  # data-only packages


def packages() -> list[str]:
    found = list(ROOTS) + list(DATA)
    for name, folder in ROOTS.items():
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return found


setup(packages=packages(), package_dir={**ROOTS, **DATA})
