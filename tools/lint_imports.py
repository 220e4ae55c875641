"""`lint-imports` on this repository's layout: checks the import-linter contracts in pyproject.toml.

import-linter builds its graph with grimp, which finds a root package by its import spec and accepts
only top-level ones. Highland's subpackages live in folders of their own (pyproject's
``[tool.setuptools.package-dir]``: catalog/ installs as highland.catalog, ...), so grimp finds
neither them under highland/ nor them on their own. This tells grimp each mapped package's folder,
read from that same table, then runs lint-imports unchanged; its options pass through
(``--verbose``, ``--contract ID``, ...). Run it from the repository's root: `make lint` does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from grimp.adaptors.packagefinder import ImportLibPackageFinder
from grimp.application.config import settings as grimp_settings
from grimp.application.ports.filesystem import AbstractFileSystem
from importlinter.cli import lint_imports_command

ROOT = Path(__file__).resolve().parent.parent


def mapped_folders(pyproject: Path) -> dict[str, str]:
    """Each subpackage that setuptools maps to a folder of its own -> that folder."""
    package_dir = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {name: str(pyproject.parent / folder) for name, folder in package_dir.items() if "." in name}


class MappedPackageFinder(ImportLibPackageFinder):
    """grimp's own finder, except for the packages in ``folders``."""

    def __init__(self, folders: dict[str, str]) -> None:
        self.folders = folders

    def determine_package_directories(self, package_name: str, file_system: AbstractFileSystem) -> set[str]:
        folder = self.folders.get(package_name)
        if folder is not None:
            return {folder}
        return super().determine_package_directories(package_name, file_system)


def main() -> None:
    grimp_settings.configure(PACKAGE_FINDER=MappedPackageFinder(mapped_folders(ROOT / "pyproject.toml")))
    lint_imports_command()


if __name__ == "__main__":
    main()
