"""The contract every puzzle codec keeps, so the server, the engine and the trainer can treat
Sudoku, mazes and ARC the same way: parse -> encode -> (model) -> decode -> verify -> answer_payload.

No torch here: codecs run in the API process and in data builders that must stay light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import numpy as np


class PuzzleError(ValueError):
    """A payload the caller must fix. The API turns it into a 422 with ``message`` and ``location``.

    ``location`` names the offending place in the caller's own terms (``"row 3, col 5"``,
    ``"train[1].input[2][7]"``) so an LLM client can repair its request without guessing.
    ``accepted`` lists the payload forms the task takes, one short example each (the codec's shared
    constant, so the error and the docs say the same); ``describe()`` is the full text for a text-only
    channel such as an MCP tool error.
    """

    def __init__(self, message: str, location: str | None = None, code: str = "invalid_puzzle",
                 accepted: tuple[str, ...] = ()) -> None:
        self.message = message
        self.location = location
        self.code = code
        self.accepted = accepted
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.message if self.location is None else f"{self.message} (at {self.location})"

    def describe(self) -> str:
        if not self.accepted:
            return str(self)
        return str(self) + "\nAccepted forms:\n" + "\n".join(f"- {form}" for form in self.accepted)


P = ParamSpec("P")
R = TypeVar("R")


def lists_accepted(forms: tuple[str, ...]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a codec's ``parse`` so every PuzzleError it raises carries the task's accepted forms."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def parse(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except PuzzleError as err:
                if not err.accepted:
                    err.accepted = forms
                raise

        return parse

    return wrap


@dataclass(frozen=True)
class Verification:
    """Whether an answer is correct, and if not, every reason found (not just the first)."""

    valid: bool
    reasons: tuple[str, ...] = ()

    @staticmethod
    def of(reasons: list[str]) -> Verification:
        return Verification(valid=not reasons, reasons=tuple(reasons))


MAX_REASONS = 20  # a garbage answer can break hundreds of rules; the first few say enough


def at_most(reasons: list[str], what: str, limit: int = MAX_REASONS) -> list[str]:
    """The first `limit` reasons, and a last line counting the rest ("... and 37 more `what`")."""
    return reasons if len(reasons) <= limit else [*reasons[:limit], f"... and {len(reasons) - limit} more {what}"]


@dataclass(frozen=True)
class ExactFacts:
    """What an exact (non-neural) solver knows about a puzzle, reported beside the model's answer.

    ``solvable``: the puzzle has at least one solution; None when the effort cap stopped the search
    before it could tell. ``unique``: exactly one solution (Sudoku) or exactly one shortest path (maze),
    so False when unsolvable; None when the cap stopped the search before a second one was ruled out.
    ``solution``: one exact answer in the codec's answer type (the first found; with ``unique`` False
    it is one of several), None when none was found. ``ms``: wall time of the exact solver.
    ``capped``: the effort cap was hit, so at least one of the above is None.
    """

    solvable: bool | None
    unique: bool | None
    solution: Any | None
    ms: float
    capped: bool = False


@runtime_checkable
class Codec(Protocol):
    """One implementation per task ("sudoku", "maze", "arc")."""

    task: str
    vocab_size: int
    default_seq_len: int

    def parse(self, payload: Any) -> Any: ...
    def encode(self, puzzle: Any, seq_len: int) -> np.ndarray: ...
    def encode_label(self, puzzle: Any, seq_len: int) -> np.ndarray: ...
    def decode(self, tokens: np.ndarray, puzzle: Any) -> Any: ...
    def verify(self, puzzle: Any, answer: Any) -> Verification: ...
    def canonical(self, puzzle: Any) -> str: ...
    def render(self, puzzle_or_answer: Any) -> str: ...
    def answer_payload(self, answer: Any, puzzle: Any) -> Any: ...
    def exact(self, puzzle: Any) -> ExactFacts | None: ...  # None: no exact solver for the task (ARC)
    # What the engine's batched token verifier needs of this puzzle beyond its tokens (maze: the shortest S-G
    # distance, -1 when G is unreachable); None: nothing, or the engine works it out itself.
    def verify_fact(self, puzzle: Any) -> int | None: ...
    def overwritten(self, puzzle: Any, answer: Any) -> list[str]: ...  # givens the answer changed, located


def as_tokens(tokens: Any, seq_len: int) -> np.ndarray:
    """Flatten model output to a 1-D int array of the expected length (argmax already taken)."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.shape[0] != seq_len:
        raise PuzzleError(f"expected {seq_len} tokens, got {arr.shape[0]}", code="bad_tokens")
    if not np.issubdtype(arr.dtype, np.integer):
        raise PuzzleError(f"tokens must be integers, got dtype {arr.dtype}", code="bad_tokens")
    return arr.astype(np.int64, copy=False)


def describe_type(value: Any) -> str:
    """Short type name for error messages ("got dict", "got NoneType")."""
    return type(value).__name__
