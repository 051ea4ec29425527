"""One log format for the whole process: a JSON object per line, with the request id on every line.

`configure_logging(level)` routes our loggers and uvicorn's (`uvicorn.error`, `uvicorn.access`) through one
stderr handler; `uvicorn_log_config(level)` is the same set-up as a dictConfig for `uvicorn.Config(log_config=)`,
so uvicorn's own reconfiguration at start-up does not bring back its plain-text formatters.

Every line: {"time", "level", "logger", "message", "request_id", ...extra fields, "exc_info" (traceback)}.
`request_id` comes from `request_id_var`, which app/api/request_id.py sets for each HTTP request; lines
logged outside a request carry null. uvicorn access lines also get `client`, `method`, `path`, `status`.

Repeated identical warnings and errors are rate-limited (RepeatedRecordFilter): a stalled-connection flood once
wrote 254,253 "Too many open files" tracebacks (113 MB in 25 s); now each kind is logged a few times per window
and the next one after the window says how many were suppressed.
"""

from __future__ import annotations

import logging
import logging.config
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

# The current request's id (set per HTTP request by RequestIdMiddleware; None outside requests).
request_id_var: ContextVar[str | None] = ContextVar("recursolve_request_id", default=None)

# Defaults of the repeat limiter: per kind of record, this many lines per window, then one summary.
REPEAT_LIMIT = 5
REPEAT_WINDOW_S = 10.0


def new_request_id() -> str:
    """A fresh id: 32 hex digits, the shape of a W3C trace-id, so it can seed a trace."""
    return secrets.token_hex(16)  # uuid4().hex without building a UUID: 0.8 us against 2


def current_request_id() -> str:
    """The current request's id; a fresh one where no middleware set it (an app used without it)."""
    rid = request_id_var.get()
    return rid if rid is not None else new_request_id()


class RequestIdFilter(logging.Filter):
    """Stamps `record.request_id` from the contextvar (on the handler, so records of every logger get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class RepeatedRecordFilter(logging.Filter):
    """Lets at most `limit` records of one kind through per `window_s`; the first record of the kind after a
    window in which some were dropped carries `suppressed` (the count) and says so in its message.

    A kind is (logger, level, message template, exception type): the same failure with different arguments
    (another client address, another fd) is still the same kind. Only WARNING and above are limited; access
    lines and info messages pass untouched. Thread-safe (engine worker threads log too); the table of kinds
    is bounded by `max_kinds`, expired windows being pruned first.
    """

    def __init__(self, limit: int = REPEAT_LIMIT, window_s: float = REPEAT_WINDOW_S, *,
                 min_level: int = logging.WARNING, max_kinds: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if limit < 1 or window_s <= 0:
            raise ValueError(f"RepeatedRecordFilter: limit must be >= 1 and window_s > 0 (got {limit}, {window_s})")
        self.limit = limit
        self.window_s = window_s
        self.min_level = min_level
        self.max_kinds = max_kinds
        self._clock = clock
        self._windows: dict[tuple[str, int, str, str], _Window] = {}
        self._lock = threading.Lock()

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple[str, int, str, str]:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] is not None else ""
        return record.name, record.levelno, str(record.msg)[:300], exc

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = self.kind(record)
        now = self._clock()
        with self._lock:
            win = self._windows.get(key)
            if win is None or now - win.start >= self.window_s:
                suppressed = win.suppressed if win is not None else 0
                if win is None and len(self._windows) >= self.max_kinds:
                    self._prune(now)
                self._windows[key] = _Window(start=now, count=1)
                if suppressed:
                    record.suppressed = suppressed
                    # Appended to the template: getMessage() applies the args to it only when there are
                    # args, and the suffix has no '%' of its own.
                    record.msg = (f"{record.msg} [suppressed {suppressed} similar messages in the previous "
                                  f"{self.window_s:g} s]")
                return True
            win.count += 1
            if win.count <= self.limit:
                return True
            win.suppressed += 1
            return False

    def _prune(self, now: float) -> None:
        expired = [k for k, w in self._windows.items() if now - w.start >= self.window_s]
        for k in expired:
            del self._windows[k]
        while len(self._windows) >= self.max_kinds:  # all live: forget the oldest window
            del self._windows[next(iter(self._windows))]


class CountedWarning:
    """For events that come in floods (refused connections, refused requests): calling it counts one event, and
    at most one warning per `every_s` says how many came since the last, rather than one line per event.
    `message` has one %d, the count."""

    def __init__(self, logger: logging.Logger, message: str, every_s: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.message, self.every_s, self._clock = logger, message, every_s, clock
        self.count, self.last = 0, -math.inf

    def __call__(self) -> None:
        self.count += 1
        now = self._clock()
        if now - self.last >= self.every_s:
            self.logger.warning(self.message, self.count)
            self.count, self.last = 0, now


class JsonLineFormatter(JsonFormatter):
    """python-json-logger with our field names; uvicorn access records get their parts as fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            # uvicorn adds an ANSI-coloured copy of some messages; it is noise in JSON.
            reserved_attrs=[*_STD_ATTRS, "color_message"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # ISO 8601 in UTC with milliseconds: sortable, and unambiguous across hosts.
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            log_data.update(client=client, method=method, path=path, http_version=http_version, status=status)


# LogRecord attributes that are not "extra" fields (python-json-logger's own list, plus taskName of 3.12+).
_STD_ATTRS = ("args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
              "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process", "processName",
              "relativeCreated", "stack_info", "thread", "threadName", "taskName")


def uvicorn_log_config(level: str | int = "info", stream: IO[str] | None = None) -> dict[str, Any]:
    """The logging dictConfig for this process: one JSON handler on the root logger; uvicorn's loggers have no
    handler of their own and propagate to it. Pass it to `uvicorn.Config(log_config=...)`."""
    level_name = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "repeats": {"()": RepeatedRecordFilter},
        },
        "formatters": {"json": {"()": JsonLineFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                # request_id before repeats: a suppressed record costs only the stamp.
                "filters": ["request_id", "repeats"],
                "stream": stream if stream is not None else sys.stderr,
            },
        },
        "root": {"level": level_name, "handlers": ["default"]},
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level_name}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def configure_logging(level: str | int = "info", stream: IO[str] | None = None) -> None:
    """JSON lines on stderr (or `stream`) for every logger of the process, ours and uvicorn's."""
    logging.config.dictConfig(uvicorn_log_config(level, stream))
