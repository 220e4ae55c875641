"""JSON that the project prints or serves: strict (RFC 8259), so that any parser reads it.

Python's ``json`` writes NaN and Infinity by default, and they are not JSON: one such number makes
a whole ``highland progress --json`` unreadable to jq or a browser. Here a number that is not finite
becomes null, deliberately: to a reader it is "no number", which is what it means. (The validator
keeps every accepted value below the catalog's ``max_value``, so sums stay finite; this guards the
output whatever is stored.)
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(data: Any) -> Any:
    """``data`` with every non-finite float, at any depth of dicts, lists and tuples, as None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data


def dumps(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite(data)``; allow_nan=False catches a float reached through ``default``."""
    return json.dumps(finite(data), allow_nan=False, **kwargs)
