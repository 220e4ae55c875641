"""Load a plan catalog from a folder of YAML, failing with the file, the line and the reason.

A plan is data: a folder holding ``plan.yaml``, ``agencies.yaml`` and ``districts.yaml``
(docs/catalog.md, "Adding a plan"). The 13th Five-Year Plan ships in ``data/``; the setting
``HIGHLAND_CATALOG_DIR`` points every command and worker at another folder (``catalog_at``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from highland.catalog.models import REFERENCES_CHECKED_BY_CALLER, Catalog, Location, reference_problems
from pydantic import ValidationError

DATA_DIR = Path(__file__).parent / "data"
FILES = {"plan": "plan.yaml", "agencies": "agencies.yaml", "districts": "districts.yaml"}


class CatalogError(ValueError):
    """A catalog folder is broken; every line of the message names a file, a line and a reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _node_at(node: yaml.Node, loc: Location) -> yaml.Node:
    """Walk a composed YAML node along a pydantic error location, as far as it goes."""
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            match = node.value[key]
        else:
            match = None
        if match is None:
            break
        node = match
    return node


def _duplicate_keys(path: Path, node: yaml.Node | None) -> list[str]:
    """A key given twice in one mapping (safe_load silently keeps the last one)."""
    problems: list[str] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[Any] = set()
            for key, value in current.value:
                if key.value in seen:
                    problems.append(f"{path}:{key.start_mark.line + 1}: key {key.value!r} given twice")
                seen.add(key.value)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return problems


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError([f"{path}:1: not UTF-8: {exc}"]) from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise CatalogError([f"{path}:{line}: not valid YAML: {exc}"]) from None


def _read(data_dir: Path) -> tuple[dict[str, Any], dict[str, tuple[Path, yaml.Node | None]], list[str], list[str]]:
    """The files' data and nodes, the problems that stop reading (a file missing or not YAML) and
    those that do not (a key given twice: the data holds its last value, and checking goes on)."""
    raw: dict[str, Any] = {}
    nodes: dict[str, tuple[Path, yaml.Node | None]] = {}
    problems: list[str] = []
    duplicates: list[str] = []
    if not data_dir.is_dir():
        raise CatalogError([f"{data_dir}: not a folder (a catalog is plan.yaml, agencies.yaml, districts.yaml)"])
    for section, name in FILES.items():
        path = data_dir / name
        if not path.is_file():
            problems.append(f"{path}:1: missing catalog file")
            continue
        try:
            data, node = _parse(path)
        except CatalogError as exc:
            problems += exc.problems
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}:1: expected a mapping at the top level")
            continue
        duplicates += _duplicate_keys(path, node)
        if section == "plan":
            raw["plan"], raw["indicators"] = data.get("plan"), data.get("indicators")
            nodes["plan"] = nodes["indicators"] = (path, node)
        else:
            raw[section] = data.get(section)
            nodes[section] = (path, node)
    return raw, nodes, problems, duplicates


def _where(nodes: dict[str, tuple[Path, yaml.Node | None]], loc: Location) -> str:
    section = str(loc[0]) if loc else "plan"
    path, node = nodes.get(section, nodes.get("plan", (Path("plan.yaml"), None)))
    line = _node_at(node, loc).start_mark.line + 1 if node is not None else 1
    return f"{path}:{line}: {'.'.join(str(p) for p in loc)}"


def load_catalog(data_dir: Path = DATA_DIR) -> Catalog:
    """Read and check the catalog in ``data_dir``; CatalogError lists every problem found."""
    raw, nodes, problems, duplicates = _read(data_dir)
    if problems:
        raise CatalogError(problems + duplicates)
    try:
        catalog = Catalog.model_validate(raw, context={REFERENCES_CHECKED_BY_CALLER: True})
    except ValidationError as exc:
        found = [f"{_where(nodes, err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise CatalogError(duplicates + found) from None
    problems = duplicates + [f"{_where(nodes, loc)}: {message}" for loc, message in reference_problems(catalog)]
    if problems:
        raise CatalogError(problems)
    return catalog


def validate_catalog(data_dir: Path) -> list[str]:
    """Every problem of the catalog in ``data_dir`` as ``file:line: where: reason``; [] if it is valid."""
    try:
        load_catalog(data_dir)
    except CatalogError as exc:
        return exc.problems
    return []


@lru_cache(maxsize=8)
def catalog_at(data_dir: Path | None = None) -> Catalog:
    """The catalog in ``data_dir`` (the setting catalog_dir), the shipped 13th plan when None."""
    return load_catalog(data_dir or DATA_DIR)


def default_catalog() -> Catalog:
    """The catalog shipped with the package: the 13th Five-Year Plan."""
    return catalog_at(None)
