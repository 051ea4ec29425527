"""Small helpers shared by the grid codecs: cell names and separator stripping for text payloads."""

from __future__ import annotations

from typing import Any


def cell_name(row: int, col: int) -> str:
    """1-based ``r3c7`` naming, the form Sudoku players and LLMs both use."""
    return f"r{row + 1}c{col + 1}"


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int in Python but never a cell value)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # numpy integer scalars without importing numpy here
    return type(value).__module__ == "numpy" and "int" in type(value).__name__


def clip(text: str, limit: int = 40) -> str:
    """Shorten echoed user text so an error message stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
