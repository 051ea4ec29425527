"""Seeded maze generator with a path-length (hardness) control.

Why this construction: a randomised depth-first "recursive backtracker" carves a perfect maze on the
odd lattice (long winding corridors, like Maze-Hard), then a ``loops`` fraction of the remaining inner
walls is knocked out so several routes exist and "shortest" actually matters. S is a random open cell,
or, when paths longer than the side are asked for (min_path_len > size), the far end of a BFS sweep;
G is drawn among the open cells whose shortest distance from S lies in [min_path_len, max_path_len].
Even sizes keep an extra wall row and column at the bottom and right.
Path length = steps along a shortest path = number of 'o' cells + 1.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from puzzles.maze import MAX_SIDE, MIN_SIDE, MazePuzzle, bfs_distances, solve
from puzzles.sudoku_gen import as_random

MAX_TRIES = 200


def carve(rng: random.Random, size: int, loops: float) -> list[list[str]]:
    """A ``size`` x ``size`` grid of '#' and ' ' with every open cell reachable from every other."""
    odd = size if size % 2 else size - 1  # lattice span; even sizes get one extra wall row/column
    cells = (odd - 1) // 2
    grid = [["#"] * size for _ in range(size)]
    visited = [[False] * cells for _ in range(cells)]
    stack = [(rng.randrange(cells), rng.randrange(cells))]
    visited[stack[0][0]][stack[0][1]] = True
    grid[2 * stack[0][0] + 1][2 * stack[0][1] + 1] = " "
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if 0 <= r + dr < cells and 0 <= c + dc < cells and not visited[r + dr][c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = rng.choice(options)
        visited[nr][nc] = True
        grid[r + nr + 1][c + nc + 1] = " "  # the wall between (2r+1, 2c+1) and (2nr+1, 2nc+1)
        grid[2 * nr + 1][2 * nc + 1] = " "
        stack.append((nr, nc))
    if loops > 0:
        for r in range(1, odd - 1):
            for c in range(1, odd - 1):
                between = (r % 2 == 1 and c % 2 == 0) or (r % 2 == 0 and c % 2 == 1)
                if between and grid[r][c] == "#" and rng.random() < loops:
                    grid[r][c] = " "
    return grid


def generate(seed: int | random.Random | np.random.Generator | Any, size: int = 30, *, min_path_len: int = 0,
             max_path_len: int | None = None, loops: float = 0.1) -> MazePuzzle:
    """A solvable ``size`` x ``size`` maze whose shortest S->G path has min..max steps, with ``.solution``."""
    if not MIN_SIDE <= size <= MAX_SIDE:
        raise ValueError(f"maze size must be {MIN_SIDE}..{MAX_SIDE}, got {size}")
    if max_path_len is not None and max_path_len < max(min_path_len, 1):
        raise ValueError("max_path_len must be >= max(min_path_len, 1)")
    if not 0.0 <= loops <= 1.0:
        raise ValueError("loops must be in [0, 1]")
    rng = as_random(seed)
    hi = max_path_len if max_path_len is not None else size * size
    lo = max(min_path_len, 1)
    longest = 0
    for _ in range(MAX_TRIES):
        grid = carve(rng, size, loops)
        rows = ["".join(r) for r in grid]
        opened = [(r, c) for r in range(size) for c in range(size) if grid[r][c] == " "]
        # far end of a BFS sweep from a random cell: the start of a long path, when one is wanted
        probe = bfs_distances(rows, rng.choice(opened))
        far = [cell for cell in opened if probe[cell] == probe.max()]
        start = rng.choice(far) if lo > size else rng.choice(opened)
        dist = bfs_distances(rows, start)
        longest = max(longest, int(dist.max()))
        goals = [cell for cell in opened if lo <= dist[cell] <= hi]
        if not goals:
            continue
        goal = rng.choice(goals)
        grid[start[0]][start[1]] = "S"
        grid[goal[0]][goal[1]] = "G"
        rows = ["".join(r) for r in grid]
        puzzle = MazePuzzle(tuple(rows), start, goal, form="text")
        return MazePuzzle(puzzle.rows, start, goal, "text", solve(puzzle).rows)
    raise ValueError(f"no {size}x{size} maze with a shortest path of {lo}..{hi} steps in {MAX_TRIES} tries "
                     f"(longest seen: {longest})")
