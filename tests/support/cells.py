"""Terminal cells as a reader of a table counts them: rich's ``cell_len`` (wcwidth's rule: a CJK
character takes two cells), independently of how a table computed its layout."""

from __future__ import annotations

from rich.cells import cell_len


def cells_at(text: str, start: int, end: int) -> str:
    """What occupies terminal cells [start, end) of a line."""
    out, at = [], 0
    for ch in text:
        if start <= at < end:
            out.append(ch)
        at += cell_len(ch)
    return "".join(out)
