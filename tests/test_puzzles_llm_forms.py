"""Puzzles as LLMs write them: prose, code fences, markdown tables, odd blanks and maze markers, int grids.

Each accepted form parses to the same puzzle as its plain form and is answered in the caller's own form;
each ambiguous or broken one is a PuzzleError naming the problem, its place, and every accepted form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.errors import classify
from app.api.schemas import SolveRequest
from puzzles import PuzzleError, get_codec
from puzzles import arc as arc_mod
from puzzles import maze as maze_mod
from puzzles import sudoku as sudoku_mod
from puzzles.maze import generate as maze_generate
from puzzles.maze import solve as maze_solve
from puzzles.sudoku import SudokuAnswer
from puzzles.sudoku import generate as sudoku_generate

SUDOKU, MAZE, ARC = get_codec("sudoku"), get_codec("maze"), get_codec("arc")
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
S = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
ROWS = [S[i * 9:(i + 1) * 9] for i in range(9)]
M = ["#####", "#S  #", "### #", "#G  #", "#####"]
M_INTS = [[1, 1, 1, 1, 1], [1, 2, 0, 0, 1], [1, 1, 1, 0, 1], [1, 3, 0, 0, 1], [1, 1, 1, 1, 1]]
M_TOKENS = [[1, 1, 1, 1, 1], [1, 3, 2, 2, 1], [1, 1, 1, 2, 1], [1, 4, 2, 2, 1], [1, 1, 1, 1, 1]]
M_SOLVED = ["#####", "#Soo#", "###o#", "#Goo#", "#####"]


def table(rows: list[list[str]], header: list[str] | None = None) -> str:
    lines = [] if header is None else ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def wrap(text: str, how: str) -> str:
    return {"plain": text, "fence": f"```\n{text}\n```", "fence_lang": f"Sure! Here it is:\n\n```text\n{text}\n```\n",
            "prose": f"Here is the puzzle I need solved:\n{text}\nThanks, let me know.",
            "prose_fence": f"Solve this.\n```\n{text}\n```\nIt is hard."}[how]


# ------------------------------------------------------------------------------------------- sudoku


@pytest.mark.parametrize("blank", [".", "0", "_", "*", "x", "X", "?", " "])
def test_sudoku_every_blank_character(blank: str) -> None:
    assert SUDOKU.canonical(SUDOKU.parse(S.replace(".", blank))) == S
    assert SUDOKU.canonical(SUDOKU.parse("\n".join(r.replace(".", blank) for r in ROWS))) == S
    assert SUDOKU.canonical(SUDOKU.parse([r.replace(".", blank) for r in ROWS])) == S


@pytest.mark.parametrize("blank", [None, 0, "", " ", ".", "x", "*", "?", "null", "None"])
def test_sudoku_grid_cells_accept_blank_values(blank: Any) -> None:
    grid = [[int(c) if c != "." else blank for c in r] for r in ROWS]
    assert SUDOKU.canonical(SUDOKU.parse(grid)) == S
    flat = [int(c) if c != "." else blank for c in S]
    assert SUDOKU.canonical(SUDOKU.parse(flat)) == S


@pytest.mark.parametrize("how", ["plain", "fence", "fence_lang", "prose", "prose_fence"])
def test_sudoku_prose_and_fences_are_stripped(how: str) -> None:
    for text in ("\n".join(ROWS), SUDOKU.render(SUDOKU.parse(S)), "\n".join(" ".join(r) for r in ROWS)):
        p = SUDOKU.parse(wrap(text, how))
        assert SUDOKU.canonical(p) == S and p.form == "string"


def test_sudoku_labels_null_words_and_inline_code() -> None:
    assert SUDOKU.canonical(SUDOKU.parse(f"Solve this sudoku: {S}")) == S
    assert SUDOKU.canonical(SUDOKU.parse(f"`{S}`")) == S
    labelled = "\n".join(f"Row {i + 1}: " + " ".join(c if c != "." else "null" for c in r) for i, r in enumerate(ROWS))
    assert SUDOKU.canonical(SUDOKU.parse(labelled)) == S


@pytest.mark.parametrize("header", [None, ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"],
                                    [str(i) for i in range(1, 10)]])
@pytest.mark.parametrize("blank", ["", " ", ".", "x"])
def test_sudoku_markdown_table_answers_as_a_table(header: list[str] | None, blank: str) -> None:
    text = table([[c if c != "." else blank for c in r] for r in ROWS], header)
    p = SUDOKU.parse(wrap(text, "prose_fence"))
    assert SUDOKU.canonical(p) == S and p.form == "table"
    solution = sudoku_mod.solve(p).solutions[0]
    out = SUDOKU.answer_payload(SudokuAnswer(solution), p)
    assert isinstance(out, str) and out.count("\n") == (8 if header is None else 10)
    if header is not None:
        assert out.splitlines()[0] == "| " + " | ".join(header) + " |"
    assert SUDOKU.parse(out).givens == solution  # the answer table parses back


def test_sudoku_table_with_box_groups_in_cells() -> None:
    text = "\n".join("| " + " | ".join(" ".join(r[b:b + 3]) for b in (0, 3, 6)) + " |" for r in ROWS)
    assert SUDOKU.canonical(SUDOKU.parse(text)) == S


@pytest.mark.parametrize("how", ["plain", "fence", "prose"])
def test_sudoku_json_text_answers_in_its_structure(how: str) -> None:
    grid = [[int(c) if c != "." else None for c in r] for r in ROWS]
    p = SUDOKU.parse(wrap(json.dumps(grid), how))
    assert SUDOKU.canonical(p) == S and p.form == "grid"
    assert SUDOKU.canonical(SUDOKU.parse(wrap(json.dumps({"grid": S}), how))) == S
    assert SUDOKU.canonical(SUDOKU.parse(str(grid))) == S  # a Python repr: None, not null


@FAST
@given(seed=st.integers(0, 19), blank=st.sampled_from([".", "0", "_", "*", "x", "?"]),
       how=st.sampled_from(["plain", "fence", "fence_lang", "prose", "prose_fence"]),
       shape=st.sampled_from(["line", "rows", "spaced", "table", "render"]))
def test_sudoku_any_llm_rendering_round_trips(seed: int, blank: str, how: str, shape: str) -> None:
    p = sudoku_generate(seed, "easy")
    text = SUDOKU.canonical(p)
    rows = [text[i * 9:(i + 1) * 9].replace(".", blank) for i in range(9)]
    body = {"line": "".join(rows), "rows": "\n".join(rows), "spaced": "\n".join(" ".join(r) for r in rows),
            "table": table([list(r) for r in rows], [f"c{i}" for i in range(1, 10)]),
            "render": SUDOKU.render(p).replace(".", blank)}[shape]
    q = SUDOKU.parse(wrap(body, how))
    assert q.givens == p.givens
    out = SUDOKU.answer_payload(SudokuAnswer(p.solution), q)
    assert SUDOKU.parse(out).givens == p.solution and SUDOKU.verify(q, out).valid


# (payload, code, location, words in the message)
SUDOKU_ERRORS: list[tuple[Any, str, str | None, str]] = [
    ("```\n" + S + "\n```\n```\n" + S + "\n```", "ambiguous_input", "line 4", "2 code blocks"),
    ("[[5, 3, 0,", "bad_json", "line 1, char 1", "no matching ']'"),
    ("Grid: [[5, 3 0]]", "bad_json", "line 1, char 14", "does not parse"),
    ('"53..7"', "bad_character", "char 1", "bad character '\"'"),
    ("Here it is\n" + "\n".join(ROWS[:4]) + "\n....k....\n" + "\n".join(ROWS[5:]) + "\nThanks",
     "bad_character", "line 6, char 5", "bad character 'k'"),
    (f"Puzzle: {S[:-1]}", "wrong_size", None, "80 cells"),
    ("\n".join(r.replace(".", " ") for r in ROWS[:8]) + "\n" + ROWS[8][:5], "wrong_size", None, "cells, expected 81"),
    (table([list(r) for r in ROWS[:8]] + [list(ROWS[8][:8])]), "wrong_size", "line 9", "row has 8 cells"),
    (table([list(r) for r in ROWS]).replace("| 5 | 3 |", "| 5 | k |", 1), "bad_character", "line 1, char 7",
     "bad character 'k'"),
    ([[int(c) if c != "." else "blank" for c in r] for r in ROWS], "bad_character", "r1c3", "got 'blank'"),
    (table([list(r) for r in ROWS], [str(i) for i in range(1, 10)]).replace("\n|" + "---|" * 9, ""),
     "wrong_size", None, "a header row needs a |---| line"),
    ("hello there", "bad_character", "char 1", "bad character 'h'"),
]


@pytest.mark.parametrize(("payload", "code", "location", "words"), SUDOKU_ERRORS)
def test_sudoku_ambiguous_or_broken_text_is_named_with_the_accepted_forms(payload: Any, code: str,
                                                                         location: str | None, words: str) -> None:
    with pytest.raises(PuzzleError) as info:
        SUDOKU.parse(payload)
    err = info.value
    assert (err.code, err.location) == (code, location) and words in err.message
    assert err.accepted == sudoku_mod.ACCEPTED_FORMS
    assert err.describe().endswith("\n".join(f"- {f}" for f in sudoku_mod.ACCEPTED_FORMS))


# --------------------------------------------------------------------------------------------- maze


@pytest.mark.parametrize(("wall", "open_", "start", "goal"),
                         [("#", " ", "S", "G"), ("X", ".", "@", "E"), ("#", ".", "S", "E"), ("X", " ", "@", "G")])
@pytest.mark.parametrize("how", ["plain", "fence", "prose", "prose_fence"])
def test_maze_marker_conventions_answer_in_the_callers_markers(wall: str, open_: str, start: str, goal: str,
                                                               how: str) -> None:
    table_ = str.maketrans({"#": wall, " ": open_, "S": start, "G": goal})
    text = "\n".join(r.translate(table_) for r in M)
    p = MAZE.parse(wrap(text, how))
    assert p.rows == tuple(M) and p.form == "text"
    out = MAZE.answer_payload(maze_solve(p), p)
    assert out == "\n".join(r.translate(table_) for r in M_SOLVED)
    assert MAZE.verify(p, out).valid


def test_maze_int_grids_both_conventions_answer_with_their_path_code() -> None:
    p = MAZE.parse(M_INTS)
    assert p.rows == tuple(M) and p.form == "ints"
    assert MAZE.answer_payload(maze_solve(p), p) == [[4 if ch == "o" else v for v, ch in zip(row, solved, strict=True)]
                                                     for row, solved in zip(M_INTS, M_SOLVED, strict=True)]
    q = MAZE.parse(M_TOKENS)
    assert q.rows == tuple(M) and q.form == "tokens"
    assert MAZE.answer_payload(maze_solve(q), q)[1] == [1, 3, 5, 5, 1]
    assert MAZE.parse(json.dumps(M_INTS)).rows == tuple(M)
    assert MAZE.parse("```json\n" + json.dumps({"maze": M_TOKENS}) + "\n```").rows == tuple(M)


def test_maze_start_and_goal_fields_on_an_unmarked_grid() -> None:
    open_grid = [[1 if v == 1 else 0 for v in row] for row in M_INTS]
    p = MAZE.parse({"maze": open_grid, "start": [1, 1], "goal": [3, 1]})
    assert p.rows == tuple(M) and (p.start, p.goal) == ((1, 1), (3, 1))
    assert MAZE.answer_payload(maze_solve(p), p)[1] == [1, 0, 4, 4, 1]  # the start stays as sent
    text = "\n".join(r.replace("S", " ").replace("G", " ") for r in M)
    assert MAZE.parse({"maze": text, "start": (1, 1), "goal": [3, 1]}).rows == tuple(M)


def test_maze_char_grid_table_labels_and_flat_line() -> None:
    p = MAZE.parse([list(r) for r in M])
    assert p.form == "chars" and MAZE.answer_payload(maze_solve(p), p) == [list(r) for r in M_SOLVED]
    t = MAZE.parse("Maze:\n" + table([[c if c != " " else "" for c in r] for r in M], list("abcde")))
    assert t.rows == tuple(M) and t.form == "table"
    out = MAZE.answer_payload(maze_solve(t), t)
    assert out.splitlines()[0] == "| a | b | c | d | e |" and "| # | S | o | o | # |" in out
    assert MAZE.parse("\n".join(f"Row {i + 1}: {r}" for i, r in enumerate(M))).rows == tuple(M)
    flat = MAZE.parse("The maze: " + "".join(M))
    assert flat.form == "flat" and MAZE.answer_payload(maze_solve(flat), flat) == "".join(M_SOLVED)


@FAST
@given(seed=st.integers(0, 2**31), size=st.integers(5, 30),
       form=st.sampled_from(["x_dot", "at_e", "ints", "tokens", "chars", "table", "json"]),
       how=st.sampled_from(["plain", "fence", "prose"]))
def test_maze_any_llm_rendering_round_trips(seed: int, size: int, form: str, how: str) -> None:
    m = maze_generate(seed, size)
    codes = {"ints": {"#": 1, " ": 0, "S": 2, "G": 3}, "tokens": {"#": 1, " ": 2, "S": 3, "G": 4}}
    trans = {"x_dot": str.maketrans("# ", "X."), "at_e": str.maketrans("SG", "@E")}
    if form in trans:
        payload: Any = wrap("\n".join(r.translate(trans[form]) for r in m.rows), how)
    elif form in codes:
        payload = [[codes[form][c] for c in r] for r in m.rows]
    elif form == "chars":
        payload = [list(r) for r in m.rows]
    elif form == "table":
        payload = wrap(table([list(r) for r in m.rows], [str(i) for i in range(size)]), how)
    else:
        payload = wrap(json.dumps([[codes["ints"][c] for c in r] for r in m.rows]), how)
    p = MAZE.parse(payload)
    assert p.rows == m.rows and (p.start, p.goal) == (m.start, m.goal)
    out = MAZE.answer_payload(maze_solve(p), p)
    if isinstance(out, str):
        assert MAZE.verify(p, out if form != "table" else maze_solve(p)).valid
    else:
        assert len(out) == size and all(len(r) == size for r in out)
        path = {"ints": 4, "tokens": 5, "json": 4}.get(form, "o")
        assert sum(v == path for r in out for v in r) == m.path_len - 1


MAZE_ERRORS: list[tuple[Any, str, str | None, str]] = [
    ("\n".join(M).replace("G", "o"), "bad_character", "row 4, col 2", "'o' (a path mark)"),
    ("\n".join(M).replace("G", "X"), "missing_goal", None, "'X' a wall"),
    ("\n".join(M).replace("G", "E").replace("#G", "#E").replace("  #\n###", "G #\n###", 1), "multiple_goals",
     "row 4, col 2", "2 goals"),
    ("\n".join(M).replace("S ", "S@"), "multiple_starts", "row 2, col 3", "2 starts"),
    ([[1 if v in (0, 1) else v for v in row] for row in M_INTS], "ambiguous_codes", None, "reads two ways"),
    ([[4 if v == 3 else v for v in row] for row in M_INTS], "ambiguous_codes", "row 4, col 2", "mixes 0"),
    ([[5 if (r, c) == (1, 2) else v for c, v in enumerate(row)] for r, row in enumerate(M_TOKENS)],
     "bad_character", "row 2, col 3", "path mark"),
    ([[7 if (r, c) == (2, 3) else v for c, v in enumerate(row)] for r, row in enumerate(M_INTS)],
     "bad_character", "row 3, col 4", "maze cell 7 is not a code"),
    ([[1.5] * 5] * 5, "bad_character", "row 1, col 1", "got 1.5"),
    ([[1] * 5, "#S  #", [1] * 5, [1] * 5, [1] * 5], "bad_type", "row 2", "must be a list of cells"),
    ({"maze": M_INTS, "start": [1, 2]}, "multiple_starts", "start", "already marks its start"),
    ({"maze": [[1 if v == 1 else 0 for v in row] for row in M_INTS], "start": [0, 0], "goal": [3, 1]}, "bad_point",
     "start", "not an open cell"),
    ({"maze": M_INTS, "goal": [5, 1]}, "bad_point", "goal", "outside the 5x5 maze"),
    ({"maze": M_INTS, "goal": "r4c2"}, "bad_point", "goal", "must be [row, col]"),
    ({"maze": [[1 if v == 1 else 0 for v in row] for row in M_INTS]}, "missing_start", None, "code 2"),
    ("```\n" + "\n".join(M) + "\n```\nor\n```\n" + "\n".join(M) + "\n```", "ambiguous_input", "line 9",
     "2 code blocks"),
    ("{'maze': [[1, 1]", "bad_json", "line 1, char 1", "no matching '}'"),
    (table([list(r) for r in M]).replace("| S |", "| S@ |"), "bad_character", "line 2, char 7", "holds 2 characters"),
]


@pytest.mark.parametrize(("payload", "code", "location", "words"), MAZE_ERRORS)
def test_maze_ambiguous_or_broken_input_is_named_with_the_accepted_forms(payload: Any, code: str,
                                                                        location: str | None, words: str) -> None:
    with pytest.raises(PuzzleError) as info:
        MAZE.parse(payload)
    err = info.value
    assert (err.code, err.location) == (code, location) and words in err.message, err
    assert err.accepted == maze_mod.ACCEPTED_FORMS


# ---------------------------------------------------------------------------------------------- arc


def test_arc_task_json_as_text_in_prose_or_fence() -> None:
    task = {"train": [{"input": [[1, 0]], "output": [[0, 1]]}], "test": [{"input": [[1, 1]]}]}
    for how in ("plain", "fence", "prose_fence"):
        assert ARC.parse(wrap(json.dumps(task), how)).input == ((1, 1),)
    with pytest.raises(PuzzleError) as info:
        ARC.parse("```\n{'train': [}\n```")
    assert info.value.code == "bad_json" and info.value.location == "line 2, char 2"
    assert info.value.accepted == arc_mod.ACCEPTED_FORMS


@pytest.mark.parametrize("task", ["sudoku", "maze", "arc"])
@pytest.mark.parametrize(("text", "says"), [
    ("{[1]: 2}", "does not parse"),  # a Python literal that cannot be built (unhashable key)
    ("{{}}", "does not parse"),
    ("[" + "1" * 5000 + "]", "cannot be read: Exceeds the limit"),  # an integer past Python's digit limit
    ("[" * 3000 + "]" * 3000, "cannot be read: nested too deeply"),
])
def test_json_that_cannot_be_read_is_a_puzzle_error_not_a_crash(task: str, text: str, says: str) -> None:
    """Each of these raised TypeError, ValueError or RecursionError (a 500 in the server) before."""
    with pytest.raises(PuzzleError) as info:
        get_codec(task).parse(text)
    assert info.value.code == "bad_json" and says in info.value.message and info.value.location


# ------------------------------------------------------------------------------------- API and docs


def test_api_error_body_lists_the_accepted_forms() -> None:
    with pytest.raises(PuzzleError) as info:
        MAZE.parse("\n".join(M).replace("G", "o"))
    body = classify(info.value).body()["error"]
    assert body["code"] == "bad_character" and body["location"] == "row 4, col 2"
    assert body["accepted_forms"] == list(maze_mod.ACCEPTED_FORMS)


@pytest.mark.parametrize("forms", [sudoku_mod.ACCEPTED_FORMS, maze_mod.ACCEPTED_FORMS, arc_mod.ACCEPTED_FORMS])
def test_every_accepted_form_has_an_example(forms: tuple[str, ...]) -> None:
    assert len(set(forms)) == len(forms) >= 3
    assert all(":" in f or "'" in f or "```" in f for f in forms)


def test_every_openapi_example_is_accepted() -> None:
    examples = SolveRequest.model_config["json_schema_extra"]["examples"]  # type: ignore[index]
    assert {e["task"] for e in examples} >= {"sudoku", "maze"}
    for example in examples:
        req = SolveRequest.model_validate(example)
        get_codec(req.task).parse(req.puzzle)


@pytest.mark.parametrize("task", ["sudoku", "maze"])
def test_a_long_line_that_is_almost_a_table_rule_is_refused_without_hanging(task):
    """A rule-line look-alike with a long run of spaces (`|--      x`): the rule-line pattern used to backtrack
    quadratically (26 s at 64 KB, about an hour at the 1 MB body limit) on the API's event loop. Run in a child
    process with a limit a thousand times what the parse takes, so a regression fails here instead of hanging."""
    import subprocess
    import sys

    code = ("from puzzles import PuzzleError, get_codec\n"
            f"text = '| 1 | 2 |\\n|--' + ' ' * 256_000 + 'x'\n"
            f"try:\n    get_codec({task!r}).parse(text)\nexcept PuzzleError as e:\n    print(e.code)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() in ("wrong_size", "bad_character")


@pytest.mark.parametrize("line", ["|---|---|", "------+-------", " | :--: | --- | ", "+==+==+", "--- | ---"])
def test_table_rules_still_read_as_rules(line):
    from puzzles.llm_text import is_table_separator

    assert is_table_separator(line) and not is_table_separator(line + " x")


ARC_TASK = {"train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]}], "test": [{"input": [[2, 0], [0, 0]]}]}


@pytest.mark.parametrize(("task", "text", "expected"), [
    ("sudoku", "Solve this sudoku [hard]:\n```\n" + "\n".join(ROWS) + "\n```", S),
    ("sudoku", "\n".join(ROWS) + "\n[blank cells are dots]", S),
    ("sudoku", "Puzzle [2 of 5]:\n" + "\n".join(ROWS), S),
    ("maze", "Find the path [5x5]:\n```\n" + "\n".join(M) + "\n```", "\n".join(M)),
    ("arc", "Task [1 of 3]:\n```json\n" + json.dumps(ARC_TASK) + "\n```", ARC_TASK),
    ("arc", "Task [1 of 3]: " + json.dumps(ARC_TASK), ARC_TASK),
])
def test_a_bracket_in_the_prose_is_prose(task, text, expected):
    """A bracket outside the puzzle (`[hard]`, `[2 of 5]`, a note after the grid) used to be read as the start of
    JSON, and a valid puzzle in a code block or after a sentence failed with bad_json."""
    codec = get_codec(task)
    if task == "arc":
        assert codec.parse(text) == codec.parse(expected)
    else:
        assert codec.canonical(codec.parse(text)) == codec.canonical(codec.parse(expected))


@pytest.mark.parametrize(("text", "location"), [
    ("Grid: [[5, 3 0]]", "line 1, char 14"),  # a JSON typo is still reported as one, at its place
    ("Note [hard]:\n```\n[[5, 3 0]]\n```", "line 3, char 8"),  # inside the block, located in the caller's text
])
def test_json_that_does_not_parse_is_still_a_located_bad_json(text, location):
    with pytest.raises(PuzzleError) as info:
        SUDOKU.parse(text)
    assert (info.value.code, info.value.location) == ("bad_json", location)


@pytest.mark.parametrize(("text", "location"), [
    ("\r".join([*ROWS[:3], "8...k...3", *ROWS[4:]]), "line 4, char 5"),  # lone CRs (old Mac files) end lines too
    ("`" + S[:4] + "k" + S[5:] + "`", "char 6"),  # inline code: the backtick counts, as in the text sent
    ("  ``" + S[:4] + "k" + S[5:] + "``", "char 9"),
])
def test_a_bad_character_is_located_in_the_text_as_sent(text, location):
    with pytest.raises(PuzzleError) as info:
        SUDOKU.parse(text)
    assert (info.value.code, info.value.location) == ("bad_character", location)


def test_a_table_header_of_words_is_kept_and_echoed():
    """`| Col 1 | ... |` above the rule line was trimmed as prose, and the answer table came back without it."""
    header = "| " + " | ".join(f"Col {i}" for i in range(1, 10)) + " |"
    body = "\n".join("| " + " | ".join(c if c != "." else " " for c in row) + " |" for row in ROWS)
    puzzle = SUDOKU.parse("Here is the puzzle:\n" + header + "\n" + "|---" * 9 + "|\n" + body)
    assert (puzzle.form, puzzle.header) == ("table", header)
    answer = SUDOKU.answer_payload(SudokuAnswer(tuple(int(c) if c != "." else 1 for c in S)), puzzle)
    assert answer.splitlines()[0] == header
