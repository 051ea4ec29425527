"""Sudoku solver throughput on hard puzzles: ours against PyPI solver libraries.

Why: the issue asks for a solver that is fast, measured against a well-kept library, keeping the
faster one. The puzzles are our own seeded "hard" and "extreme" tiers (they need search; easy ones
say nothing about a solver). Each solver gets the same puzzles, one CPU thread, and every answer is
checked against the known solution. Libraries that are not installed are reported as skipped.

Run:  OMP_NUM_THREADS=1 .venv/bin/python bench/sudoku_solver.py [--hard 150 --extreme 60]
Writes bench/results/sudoku-solver-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from puzzles.sudoku import generate
from puzzles.sudoku_solver import solve_digits

Solver = Callable[[Sequence[int]], Sequence[int]]
TIME_CAP_S = 60.0  # a slow library stops after this long; its rate is over what it finished


def ours_first(givens: Sequence[int]) -> Sequence[int]:
    return solve_digits(givens, limit=1).solutions[0]


def ours_unique(givens: Sequence[int]) -> Sequence[int]:
    res = solve_digits(givens, limit=2)  # also proves there is no second solution
    return res.solutions[0]


def _libraries() -> dict[str, Solver | str]:
    libs: dict[str, Solver | str] = {}
    try:
        from sudoku import Sudoku  # py-sudoku

        def py_sudoku(givens: Sequence[int]) -> Sequence[int]:
            board = [[v or None for v in givens[r * 9:(r + 1) * 9]] for r in range(9)]
            solved = Sudoku(3, 3, board=board).solve()
            return [v for row in solved.board for v in row]

        libs["py-sudoku"] = py_sudoku
    except ImportError:
        libs["py-sudoku"] = "not installed (pip install py-sudoku)"
    try:
        import lib_sudoku

        def lib_sudoku_solve(givens: Sequence[int]) -> Sequence[int]:
            return list(lib_sudoku.solve(bytearray(givens)))

        libs["lib-sudoku"] = lib_sudoku_solve
    except ImportError:
        libs["lib-sudoku"] = "not installed (pip install lib-sudoku)"
    return libs


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def run_solver(solve: Solver, puzzles: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[str, float | int]:
    done = wrong = 0
    start = time.perf_counter()
    for givens, solution in puzzles:
        if tuple(solve(givens)) != solution:
            wrong += 1
        done += 1
        if time.perf_counter() - start > TIME_CAP_S:
            break
    elapsed = time.perf_counter() - start
    return {"puzzles": done, "wrong": wrong, "seconds": round(elapsed, 4),
            "puzzles_per_s": round(done / elapsed, 1), "ms_per_puzzle": round(1000 * elapsed / done, 3)}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hard", type=int, default=150)
    ap.add_argument("--extreme", type=int, default=60)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    sets: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    for tier, n in (("hard", args.hard), ("extreme", args.extreme)):
        ps = [generate(args.seed + i, tier) for i in range(n)]
        sets[tier] = [(p.givens, p.solution) for p in ps if p.solution is not None]
    gen_s = time.perf_counter() - t0

    solvers: dict[str, Solver | str] = {"ours (first solution)": ours_first,
                                        "ours (unique: count up to 2)": ours_unique, **_libraries()}
    results: dict[str, dict] = {}
    for name, solve in solvers.items():
        if isinstance(solve, str):
            results[name] = {"skipped": solve}
            continue
        results[name] = {tier: run_solver(solve, ps) for tier, ps in sets.items()}
        print(name, json.dumps(results[name]), flush=True)

    timed = {n: r for n, r in results.items() if "skipped" not in r}
    fastest = {tier: max(timed, key=lambda n: timed[n][tier]["puzzles_per_s"]) for tier in sets}
    report = {
        "benchmark": "sudoku-solver",
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "puzzles": {tier: len(ps) for tier, ps in sets.items()},
        "puzzle_source": f"puzzles.sudoku.generate(seed {args.seed}+i, tier)",
        "generation_seconds": round(gen_s, 2),
        "versions": {"py-sudoku": _version("py-sudoku"), "lib-sudoku": _version("lib-sudoku")},
        "results": results,
        "fastest": fastest,
        "note": "ours also counts solutions (uniqueness) and reports guesses; the libraries return one solution",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sudoku-solver-{socket.gethostname()}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}; fastest: {fastest}")
    return path


if __name__ == "__main__":
    main()
