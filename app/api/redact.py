"""What the server says back must not leak its file layout nor echo a client's input at any length."""

from __future__ import annotations

import re
from pathlib import Path

ECHO_LIMIT = 64  # characters of a client-sent name or value repeated in an error message

# An absolute POSIX path: a "/" not inside a word, a relative path or a URL ("http://h/p" stays as it is).
_ABSOLUTE = re.compile(r"(?<![\w.~/:-])/(?:[^\s'\"():,;]+/)*[^\s'\"():,;]*")


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` cut to `limit` characters, with '…' marking the cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def redact_paths(text: str, base: Path | None = None) -> str:
    """Absolute paths in `text` made safe to show a client: relative to `base` (the weights dir) when under it,
    else only the last component (the folder or file name). The log keeps the full message."""
    root = str(Path(base).resolve()) if base is not None else None

    def shorten(m: re.Match[str]) -> str:
        path = m.group(0)
        if root is not None and (path == root or path.startswith(root.rstrip("/") + "/")):
            rel = path[len(root):].lstrip("/")
            return rel or "."
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return name or "/"

    return _ABSOLUTE.sub(shorten, text)
