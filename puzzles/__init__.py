"""Puzzle codecs (Sudoku, maze, ARC): parse, encode, decode, verify, render. No torch anywhere here."""

from __future__ import annotations

from importlib import import_module

from puzzles.base import Codec, ExactFacts, PuzzleError, Verification

TASKS: tuple[str, ...] = ("sudoku", "maze", "arc")

__all__ = ["TASKS", "Codec", "ExactFacts", "PuzzleError", "Verification", "get_codec"]

_cache: dict[str, Codec] = {}


def get_codec(task: str) -> Codec:
    """The codec for ``task``; modules load lazily so a Sudoku-only server never imports ARC data."""
    if task not in TASKS:
        raise PuzzleError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}", location="task",
                          code="unknown_task")
    if task not in _cache:
        _cache[task] = import_module(f"puzzles.{task}").CODEC
    return _cache[task]
