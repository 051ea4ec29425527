"""Batched answer verifiers on the model's own tokens, for verifier halting inside the engine loop.

Why: the per-row codec verifiers (``puzzles.sudoku``, ``puzzles.maze``) decode to Python objects, so
checking every active row after every ACT step costs Python per row. These verifiers take the
``[n, seq_len]`` input and answer token tensors as they sit on the device and return ``BoolTensor[n]``
with the same verdict as ``codec.verify(puzzle, codec.decode(tokens, puzzle)).valid``. They are pure
tensor ops with shapes fixed by the input shapes (no ``.item()``, no data-dependent shapes), so they
can run inside a captured CUDA graph; the one exception is the optional early exit of
``maze_shortest_distance``, which is switched off automatically while a graph is being captured or
compiled.

Token vocabularies are written out here rather than imported from ``puzzles`` so that ``models``
stays independent of the codecs; tests/test_models_verify.py checks them against the codecs' encoders.

Sudoku (official §4.1): 0 PAD, 1 blank, 2..10 digits 1..9, seq_len 81, row-major. Valid: every row,
column and box holds each digit 1..9 exactly once (so no blank, no PAD) and every given kept.

Maze (official §4.2): 0 PAD, 1 '#', 2 ' ', 3 'S', 4 'G', 5 'o'; a side x side maze sits in the top-left
corner of a canvas x canvas grid (seq_len = canvas^2) with PAD around it, and answer tokens outside the
maze are ignored (the codec's decode crops them away). Valid (``MazeCodec.verify``): inside the maze the
answer equals the input except that open cells may become 'o', and the 'o' cells with S and G connect S
to G in exactly shortest-distance - 1 'o' cells. Connectivity needs a flood fill, which does not fit a
fixed small number of tensor ops, so it is replaced by an equivalent local test:

    A = 'o' cells + S + G. A holds exactly one shortest S-G path and nothing else
    <=> S and G each have exactly one 4-neighbour in A, every 'o' cell has exactly two,
        and |'o'| = d(S, G) - 1.
    (=>) a shortest path is an induced path (an extra adjacency would be a shortcut), so its degrees
    are 1 at the ends and 2 inside. (<=) with those degrees A is one path whose only ends are S and G,
    plus possibly disjoint cycles; that path walks open cells, so it has >= d + 1 cells = |A| cells,
    hence it is all of A and has length d.

The only global quantity left is d(S, G), which depends on the input alone: compute it once per
request (``prepare_batch`` on the device, or ``MazePuzzle.path_len`` in the API process) and pass it
as ``maze_distance``, and the per-step check is O(1) tensor ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "MAZE_TOKENS",
    "SUDOKU_TOKENS",
    "NoTokenVerifier",
    "has_token_verifier",
    "maze_shortest_distance",
    "maze_verify",
    "prepare_batch",
    "sudoku_verify",
    "token_verifier",
    "verify_batch",
]

SUDOKU_TOKENS = {"pad": 0, "blank": 1, "digit_1": 2, "digit_9": 10}
MAZE_TOKENS = {"pad": 0, "wall": 1, "open": 2, "start": 3, "goal": 4, "path": 5}
_S_D1, _S_D9 = SUDOKU_TOKENS["digit_1"], SUDOKU_TOKENS["digit_9"]
_M_PAD, _M_WALL, _M_OPEN, _M_START, _M_GOAL, _M_PATH = (MAZE_TOKENS[k] for k in
                                                        ("pad", "wall", "open", "start", "goal", "path"))
_ALL_DIGITS = (1 << 9) - 1  # bits 0..8 set: a unit holding each digit once
_MAX_PACKED_SIDE = 62  # the flood fill packs a maze row into one int64; shifts stay clear of the sign bit


class NoTokenVerifier(ValueError):
    """The task's answers cannot be checked from tokens alone (ARC needs the known test output)."""


def _check_pair(inputs: torch.Tensor, tokens: torch.Tensor) -> None:
    if inputs.dim() != 2 or tokens.shape != inputs.shape:
        raise ValueError(f"inputs and tokens must both be [n, seq_len]; got inputs {tuple(inputs.shape)}, "
                         f"tokens {tuple(tokens.shape)}")
    if inputs.dtype.is_floating_point or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"inputs and tokens must be integer token ids (argmax taken); got {inputs.dtype}, "
                         f"{tokens.dtype}")


# --------------------------------------------------------------------------------------------- sudoku


def sudoku_verify(inputs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``BoolTensor[n]``: each answer row is a solved grid that keeps the row's givens."""
    _check_pair(inputs, tokens)
    if inputs.shape[1] != 81:
        raise ValueError(f"sudoku tokens must be [n, 81]; got seq_len {inputs.shape[1]}")
    n = tokens.shape[0]
    t = _small_ints(tokens).to(torch.int16)  # digit bits and unit sums (<= 9 * 256) fit int16
    is_digit = (t >= _S_D1) & (t <= _S_D9)
    # One bit per digit, 0 for blank/PAD/out-of-vocabulary (the codec decodes those to an empty cell).
    # Nine powers of two sum to 511 only when they are all different, so a unit sum of 511 <=> the
    # unit is a permutation of 1..9 (an empty cell leaves eight terms, which cannot reach 511).
    bits = torch.where(is_digit, torch.bitwise_left_shift(torch.ones_like(t), (t - _S_D1).clamp(0, 8)),
                       torch.zeros_like(t))
    grid = bits.view(n, 9, 9)
    rows = grid.sum(2)
    cols = grid.sum(1)
    boxes = grid.view(n, 3, 3, 3, 3).sum((2, 4))  # (band, row-in-band, stack, col-in-stack)
    units_ok = (rows == _ALL_DIGITS).all(1) & (cols == _ALL_DIGITS).all(1) & (boxes == _ALL_DIGITS).flatten(1).all(1)
    x = _small_ints(inputs).to(torch.int16)
    given = (x >= _S_D1) & (x <= _S_D9)
    givens_ok = (~given | (t == x)).all(1)
    return units_ok & givens_ok


# ----------------------------------------------------------------------------------------------- maze


def _maze_side(seq_len: int) -> int:
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(f"maze seq_len must be a square (canvas x canvas); got {seq_len}")
    return side


def _small_ints(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens as int8 (every vocabulary here is < 12): the per-cell comparisons then move 8x fewer bytes
    than int64. Clamping first keeps an out-of-range id out of range (300 must not wrap to 44)."""
    if tokens.dtype in (torch.int8, torch.uint8):
        return tokens
    return tokens.clamp(-1, 127).to(torch.int8)


def _neighbour_count(on: torch.Tensor) -> torch.Tensor:
    """4-neighbour count of ``on`` cells ([n, s, s] bool -> int8), without wrapping at the edges."""
    x = on.to(torch.int8)
    c = torch.zeros_like(x)
    c[:, 1:, :] += x[:, :-1, :]
    c[:, :-1, :] += x[:, 1:, :]
    c[:, :, 1:] += x[:, :, :-1]
    c[:, :, :-1] += x[:, :, 1:]
    return c


def _pack_rows(cells: torch.Tensor) -> torch.Tensor:
    """[n, s, s] bool -> [n, s] int64 with bit c of row r = cell (r, c): 30x fewer elements per flood step."""
    weights = torch.bitwise_left_shift(torch.ones(cells.shape[2], dtype=torch.long, device=cells.device),
                                       torch.arange(cells.shape[2], device=cells.device))
    return (cells.long() * weights).sum(2)


def _grow(reach: torch.Tensor) -> torch.Tensor:
    """Packed ``reach`` ([n, s] int64 bit rows) plus its 4-neighbours; bits past the maze are masked later."""
    g = reach | torch.bitwise_left_shift(reach, 1) | torch.bitwise_right_shift(reach, 1)
    g[:, 1:] |= reach[:, :-1]
    g[:, :-1] |= reach[:, 1:]
    return g


def _graph_safe_context() -> bool:
    """True while tracing for torch.compile or capturing a CUDA graph: no host syncs allowed then."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def maze_shortest_distance(inputs: torch.Tensor, max_steps: int | None = None,
                           early_exit: bool | None = None) -> torch.Tensor:
    """``LongTensor[n]``: BFS steps from S to G through non-wall maze cells, -1 when G is unreachable.

    A breadth-first flood fill, one tensor step per BFS layer. ``max_steps`` (default canvas^2, more than
    any shortest path can have) bounds the layers; a row whose distance exceeds it reads -1, which only
    ever makes ``maze_verify`` stricter (a false "not verified", never a false "verified").
    ``early_exit`` (default: on, except while compiling or capturing a CUDA graph) stops once every row
    has reached G or stopped growing, checking every 32 layers (one host sync per check).
    """
    if inputs.dim() != 2:
        raise ValueError(f"inputs must be [n, seq_len]; got {tuple(inputs.shape)}")
    n, s = inputs.shape[0], _maze_side(inputs.shape[1])
    steps_cap = s * s if max_steps is None else max_steps
    exit_early = (not _graph_safe_context()) if early_exit is None else early_exit
    if s > _MAX_PACKED_SIDE:
        raise ValueError(f"maze canvas side {s} is over {_MAX_PACKED_SIDE} (one int64 bit row per maze row)")
    x = _small_ints(inputs).reshape(n, s, s)
    open_cells = _pack_rows((x != _M_PAD) & (x != _M_WALL))
    goal = _pack_rows(x == _M_GOAL)
    reach = _pack_rows(x == _M_START)
    steps = torch.zeros(n, dtype=torch.long, device=inputs.device)
    for k in range(steps_cap):
        hit = (reach & goal).ne(0).any(1)
        steps += (~hit).long()
        grown = _grow(reach) & open_cells
        if exit_early and k % 32 == 31:
            stalled = (grown == reach).all(1)
            if bool((hit | stalled).all()):
                reach = grown
                break
        reach = grown
    hit = (reach & goal).ne(0).any(1)
    return torch.where(hit, steps, torch.full_like(steps, -1))


def maze_verify(inputs: torch.Tensor, tokens: torch.Tensor, distance: torch.Tensor | None = None) -> torch.Tensor:
    """``BoolTensor[n]``: each answer marks exactly one shortest S-G path with 'o' and changes nothing else.

    ``distance`` is ``maze_shortest_distance(inputs)`` (or each puzzle's ``path_len``), computed once per
    request; without it it is computed here (a flood fill of up to canvas^2 steps).
    """
    _check_pair(inputs, tokens)
    n, s = inputs.shape[0], _maze_side(inputs.shape[1])
    x, t = _small_ints(inputs).reshape(n, s, s), _small_ints(tokens).reshape(n, s, s)
    maze = x != _M_PAD  # the maze's own cells; the PAD margin of the canvas is ignored, as decode crops it
    path = (t == _M_PATH) & (x == _M_OPEN)
    changed = maze & (t != x) & ~path
    ends = (x == _M_START) | (x == _M_GOAL)
    degree = _neighbour_count(path | ends)
    bad_degree = (ends & (degree != 1)) | (path & (degree != 2))
    ok = ~(changed | bad_degree).flatten(1).any(1)
    if distance is None:
        distance = maze_shortest_distance(inputs)
    d = distance.to(device=inputs.device, dtype=torch.long).reshape(n)
    count = path.flatten(1).sum(1)
    return ok & (d >= 1) & (count == d - 1)


# ---------------------------------------------------------------------------------------------- entry

_VERIFIERS: dict[str, Callable[..., torch.Tensor]] = {"sudoku": sudoku_verify, "maze": maze_verify}


def has_token_verifier(task: str) -> bool:
    return task in _VERIFIERS


def token_verifier(task: str) -> Callable[..., torch.Tensor] | None:
    """The batched verifier for ``task``, or None when answers cannot be checked from tokens (ARC)."""
    return _VERIFIERS.get(task)


def prepare_batch(task: str, inputs: torch.Tensor) -> torch.Tensor | None:
    """Per-row facts the verifier needs that depend on the inputs alone, computed once per request.

    Maze: ``LongTensor[n]`` shortest S-G distance (``maze_shortest_distance``). Sudoku: None (nothing to
    prepare). Raises ``NoTokenVerifier`` for tasks without a token verifier.
    """
    if not has_token_verifier(task):
        raise NoTokenVerifier(f"task {task!r} has no token verifier (only {', '.join(_VERIFIERS)})")
    return maze_shortest_distance(inputs) if task == "maze" else None


def verify_batch(task: str, inputs: torch.Tensor, tokens: torch.Tensor,
                 prepared: torch.Tensor | None = None) -> torch.Tensor:
    """``BoolTensor[n]`` on the tokens' device: row i equals
    ``codec.verify(puzzle_i, codec.decode(tokens[i], puzzle_i)).valid`` for codec-encoded ``inputs[i]``.

    ``prepared`` is ``prepare_batch(task, inputs)`` (maze distances) to skip recomputing it every step.
    Raises ``NoTokenVerifier`` for ARC (its answers are checked against a known output by the codec).
    """
    if task == "sudoku":
        return sudoku_verify(inputs, tokens)
    if task == "maze":
        return maze_verify(inputs, tokens, prepared)
    raise NoTokenVerifier(f"task {task!r} has no token verifier (only {', '.join(_VERIFIERS)}); "
                          "verify its answers with the codec")
