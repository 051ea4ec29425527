"""Find the puzzle in text the way an LLM writes it: prose around it, code fences, markdown tables, JSON.

Shared by the grid codecs. Nothing here guesses: when the text holds two candidate puzzles (two code
blocks) or JSON that does not parse, it raises a PuzzleError naming the place; the codec attaches its
list of accepted forms. Line numbers in errors are always the caller's own (1-based, in the text sent).
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from puzzles.base import PuzzleError

__all__ = ["NULL_WORDS", "Block", "Line", "extract", "find_json", "has_words", "is_table_separator",
           "normalise_newlines", "render_table", "table_cells"]

NULL_WORDS = frozenset({"null", "none", "nil", "nan"})  # blank cells as JSON, Python and R print them
_FENCE = re.compile(r"^\s*(```|~~~)")
# Matched against the stripped line, with no two optional runs of white space side by side: the old pattern
# (`\s*` before and after `[|+]?`, at both ends) backtracked quadratically, 26 s for a 64 KB line of spaces that
# does not match, on the API's event loop.
_SEPARATOR = re.compile(r"[|+]?\s*:?[-=]{2,}:?(?:\s*[|+]\s*:?[-=]{2,}:?)*\s*[|+]?")


@dataclass(frozen=True)
class Line:
    """One candidate grid line: ``number`` is its 1-based line in the caller's text and ``offset`` how many
    characters were cut from its left (a ``Row 1:`` label), so a column can be reported as the caller sees it."""

    number: int
    offset: int
    text: str


@dataclass(frozen=True)
class Block:
    lines: tuple[Line, ...]
    table: bool = False        # every line is a markdown table row (| a | b |)
    header: str | None = None  # the table's header row, dropped from the data (kept to echo in the answer)
    trimmed: bool = False      # prose, labels or fences were removed


def has_words(text: str, letters: str = "", words: frozenset[str] = frozenset()) -> bool:
    """Whether ``text`` reads as prose: a run of 3+ letters that is neither made only of the grid's own
    marker ``letters`` (``XXXX`` walls, ``xxx`` blanks) nor one of ``words`` (``null``). A single stray letter
    is not prose: it stays in the grid so the codec can name it and its place."""
    return any(word.lower() not in words and set(word) - set(letters) for word in re.findall(r"[A-Za-z]{3,}", text))


def is_table_separator(text: str) -> bool:
    """``|---|:-:|`` (markdown) or ``------+-------`` (a drawn grid's rule line)."""
    return bool(_SEPARATOR.fullmatch(text.strip()))


def _fenced(lines: list[str]) -> tuple[list[tuple[int, str]], bool]:
    """The numbered lines inside the one code block, or all lines when there is none; two blocks is an error."""
    blocks = _code_blocks(lines)
    if not blocks:
        return list(enumerate(lines, 1)), False
    if len(blocks) > 1:
        where = ", ".join(f"line {a + 1}" for a, _ in blocks)
        raise PuzzleError(f"the text holds {len(blocks)} code blocks (at {where}); send one puzzle, in one block",
                          f"line {blocks[1][0] + 1}", code="ambiguous_input")
    a, b = blocks[0]
    return [(i + 1, lines[i]) for i in range(a + 1, b)], True


def _code_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(opening fence line, closing fence line) of each code block, 0-based; an unclosed one runs to the end."""
    fences = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    return [(fences[k], fences[k + 1] if k + 1 < len(fences) else len(lines)) for k in range(0, len(fences), 2)]


def normalise_newlines(text: str) -> str:
    """CRLF and a lone CR (old Mac files) as \\n, so lines are numbered as the caller's editor numbers them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def extract(text: str, is_grid: Callable[[str], bool]) -> Block:
    """The grid lines of ``text``: inside its code block if it has one, minus prose lines before and after the
    grid and ``label:`` prefixes; a markdown table's header row and rule lines are dropped.

    Prose *inside* the grid is kept, so the codec reports its bad character at its place instead of
    silently skipping a row.
    """
    text = normalise_newlines(text)
    stripped = text.strip()
    shift = 0  # characters cut from the left of the caller's text (inline code's white space and backticks)
    if "\n" not in stripped and stripped.startswith("`") and stripped.endswith("`") and len(stripped) > 1:
        shift = len(text) - len(text.lstrip()) + len(stripped) - len(stripped.lstrip("`"))
        text = stripped.strip("`")  # inline code: `53..7....`
    numbered, fenced = _fenced(text.split("\n"))
    lines: list[Line | None] = []  # None = prose
    for number, raw in numbered:
        if raw == "" or is_grid(raw):
            lines.append(Line(number, shift, raw))
            continue
        colon = raw.rfind(":")
        cut = colon + (2 if raw[colon + 1:colon + 2] == " " else 1)  # "label: value": one space separates
        rest = raw[cut:] if colon >= 0 else ""
        lines.append(Line(number, shift + cut, rest) if rest.strip() and is_grid(rest) else None)
    first = next((i for i, x in enumerate(lines) if x is not None and x.text != ""), len(lines))
    if 0 < first < len(lines) and lines[first - 1] is None and is_table_separator(numbered[first][1]) and \
            numbered[first - 1][1].lstrip().startswith("|"):
        first -= 1  # a header row of words (| Col 1 | ...) above the rule line: the table's own, not prose
    last = next((i for i in range(len(lines) - 1, -1, -1) if lines[i] is not None and lines[i].text != ""), -1)
    kept = [x if x is not None else Line(numbered[i][0], 0, numbered[i][1])
            for i, x in enumerate(lines[first:last + 1], first)]
    trimmed = fenced or len(kept) != len(numbered) or any(x.offset for x in kept)
    table = bool(kept) and all(x.text.lstrip().startswith("|") for x in kept if x.text.strip())
    header = None
    if table and len(kept) >= 2 and is_table_separator(kept[1].text):
        header, kept = kept[0].text, kept[2:]
    if table:
        kept = [x for x in kept if not is_table_separator(x.text)]
    return Block(tuple(kept), table=table, header=header, trimmed=trimmed or table)


def table_cells(text: str) -> list[tuple[int, str]]:
    """(1-based column of the cell's start, stripped content) for each cell of ``| a | b |``."""
    out = []
    parts = text.split("|")
    col = len(parts[0]) + 1  # the leading '|'
    inner = parts[1:-1] if text.rstrip().endswith("|") else parts[1:]
    for part in inner:
        lead = len(part) - len(part.lstrip())
        out.append((col + 1 + lead, part.strip()))
        col += len(part) + 1
    return out


def render_table(rows: Sequence[Sequence[str]], header: str | None) -> str:
    """Markdown table of ``rows``; the caller's own header row (and a rule line) first when there was one."""
    body = ["| " + " | ".join(r) + " |" for r in rows]
    if header is None:
        return "\n".join(body)
    return "\n".join([header.strip(), "|" + "|".join("---" for _ in rows[0]) + "|", *body])


def find_json(text: str) -> tuple[bool, Any]:
    """(True, value) when ``text`` holds a JSON (or Python literal) array/object, prose around it ignored.

    When the text has one code block, only the block is read, so a bracket in the prose around it (``Solve
    this [hard]:``) is prose. Otherwise the first ``[`` and the first ``{`` are each tried as the start, so
    ``Task [1 of 3]: {...}`` still finds the task. (False, None) when there is no ``[`` or ``{`` at all; one
    that does not parse is an error with its line and column (of the first start tried), since the caller
    clearly meant structured data.
    """
    lines = text.split("\n")
    blocks = _code_blocks(lines)
    base, region = 0, text
    if len(blocks) == 1:  # read the block alone
        (a, b), = blocks
        base = sum(len(line) + 1 for line in lines[:a + 1])
        region = "\n".join(lines[a + 1:b])
    starts = sorted(i for i in (region.find("["), region.find("{")) if i >= 0)
    if not starts:
        return False, None
    first_error: PuzzleError | None = None
    for start in starts:
        if first_error is not None and start < _bracketed_end(region, starts[0]):
            break  # inside the first one's brackets (`{[1]: 2}`): part of that, not a JSON value of its own
        try:
            return True, _json_at(region, start)
        except _JsonError as err:
            first_error = first_error or PuzzleError(err.message, _where(text, base + err.pos), code="bad_json")
    assert first_error is not None
    raise first_error


def _bracketed_end(text: str, start: int) -> int:
    """Where the brackets opened at ``start`` close (any kind counts, strings are not skipped: a guess for
    telling `[hard]: {...}` from `{[1]: 2}`), or the end of the text."""
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] in "[{"
        depth -= text[i] in "]}"
        if depth == 0:
            return i
    return len(text)


class _JsonError(ValueError):
    """Why the JSON at a start does not parse, and at which offset of the text searched (find_json locates it)."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message, self.pos = message, pos


def _json_at(text: str, start: int) -> Any:
    """The JSON value (or Python literal) that starts at ``start``, read up to its own end (``raw_decode``: prose
    after it is ignored) or else up to the last matching closer; a _JsonError at the offset where it fails."""
    with contextlib.suppress(json.JSONDecodeError, ValueError, RecursionError):
        return json.JSONDecoder().raw_decode(text, start)[0]
    closer = "]" if text[start] == "[" else "}"
    end = text.rfind(closer)
    if end < start:
        raise _JsonError(f"unclosed {text[start]!r}: the text looks like JSON but has no matching {closer!r}", start)
    snippet = text[start:end + 1]
    try:
        return json.loads(snippet)
    except json.JSONDecodeError as err:
        try:  # Python reprs: None, single quotes, tuples
            return ast.literal_eval(snippet)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
            raise _JsonError(f"the text looks like JSON but does not parse: {err.msg}", start + err.pos) from None
    except (ValueError, RecursionError) as err:  # well-formed, but an integer of thousands of digits or nesting
        # deeper than the parser goes
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise _JsonError(f"the text looks like JSON but cannot be read: {reason}", start) from None


def _where(text: str, pos: int) -> str:
    """Where offset `pos` of `text` is, as "line L, char C" (both from 1)."""
    return f"line {text.count(chr(10), 0, pos) + 1}, char {pos - text.rfind(chr(10), 0, pos)}"
