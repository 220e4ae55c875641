"""Load the plan catalog from YAML, failing with the file, the line and the reason."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from highland.catalog.models import Catalog
from pydantic import ValidationError

DATA_DIR = Path(__file__).parent / "data"
FILES = {"plan": "plan.yaml", "agencies": "agencies.yaml", "districts": "districts.yaml"}


class CatalogError(ValueError):
    """A catalog file is broken; the message names the file, the line and the reason."""


def _node_at(node: yaml.Node, loc: tuple[int | str, ...]) -> yaml.Node:
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


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise CatalogError(f"{path}{line}: not valid YAML: {exc}") from exc


def load_catalog(data_dir: Path = DATA_DIR) -> Catalog:
    """Read ``plan.yaml``, ``agencies.yaml`` and ``districts.yaml`` from ``data_dir``."""
    raw: dict[str, Any] = {}
    nodes: dict[str, tuple[Path, yaml.Node | None]] = {}
    for section, name in FILES.items():
        path = data_dir / name
        if not path.is_file():
            raise CatalogError(f"{path}: missing catalog file")
        data, node = _parse(path)
        if not isinstance(data, dict):
            raise CatalogError(f"{path}:1: expected a mapping at the top level")
        nodes[section] = (path, node)
        if section == "plan":
            raw["plan"] = data.get("plan")
            raw["indicators"] = data.get("indicators")
            nodes["indicators"] = (path, node)
        else:
            raw[section] = data.get(section)
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(_describe(exc, nodes)) from None


def _describe(exc: ValidationError, nodes: dict[str, tuple[Path, yaml.Node | None]]) -> str:
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        section = str(loc[0]) if loc else "plan"
        path, node = nodes.get(section, nodes["plan"])
        line = "?"
        if node is not None:
            target = _node_at(node, loc)
            line = str(target.start_mark.line + 1)
        where = ".".join(str(p) for p in loc)
        lines.append(f"{path}:{line}: {where}: {err['msg']}")
    return "\n".join(lines)


@lru_cache(maxsize=4)
def default_catalog() -> Catalog:
    return load_catalog(DATA_DIR)
