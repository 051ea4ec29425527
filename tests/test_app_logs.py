"""app/logs.py: one JSON format for our loggers and uvicorn's, the request id on every line, and the limiter
that keeps a flood of identical errors (the 254,253 "Too many open files" tracebacks) out of the log."""

from __future__ import annotations

import errno
import io
import json
import logging

import pytest
import uvicorn

from app.logs import (
    CountedWarning,
    JsonLineFormatter,
    RepeatedRecordFilter,
    RequestIdFilter,
    configure_logging,
    current_request_id,
    request_id_var,
    uvicorn_log_config,
)

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@pytest.fixture
def restore_logging():
    """configure_logging replaces the root handlers (pytest's capture among them): put everything back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    saved_uv = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
                for n in UVICORN_LOGGERS}
    yield
    root.handlers[:], root.level = saved
    for n, (handlers, level, propagate) in saved_uv.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def emfile() -> tuple:
    try:
        raise OSError(errno.EMFILE, "Too many open files")
    except OSError as e:
        return (type(e), e, e.__traceback__)


def test_our_lines_and_uvicorns_share_one_json_format(restore_logging) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    logging.getLogger("app.runtime").info("model %s ready", "trm", extra={"model": "trm"})
    logging.getLogger("app.debugging").debug("not at info level")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1",
                                             200)
    ours, uv_error, access = lines(out)
    for line in (ours, uv_error, access):
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys()
        assert line["time"].endswith("Z") and line["time"][10] == "T"
        assert line["request_id"] is None  # logged outside any request
    assert ours["message"] == "model trm ready" and ours["level"] == "INFO" and ours["model"] == "trm"
    assert uv_error["logger"] == "uvicorn.error" and uv_error["level"] == "WARNING"
    assert access["message"] == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert (access["method"], access["path"], access["status"], access["client"]) == ("GET", "/healthz", 200,
                                                                                        "127.0.0.1:5000")


def test_every_line_carries_the_current_request_id_and_tracebacks_stay_in_the_line(restore_logging) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("app.api").error("solve failed", exc_info=emfile())
        assert current_request_id() == "req-7"
    finally:
        request_id_var.reset(token)
    logging.getLogger("app.api").info("after the request")
    (failed, after) = lines(out)
    assert failed["request_id"] == "req-7"
    assert "OSError: [Errno 24] Too many open files" in failed["exc_info"]
    assert after["request_id"] is None
    fresh = current_request_id()
    assert len(fresh) == 32 and int(fresh, 16) >= 0 and fresh != current_request_id()


def test_uvicorn_config_keeps_the_json_format(restore_logging) -> None:
    """uvicorn.Config runs dictConfig(log_config) itself and then sets its loggers' levels: after that,
    uvicorn's own lines must still be JSON, on our handler, at our level."""
    out = io.StringIO()
    uvicorn.Config(lambda *a: None, log_config=uvicorn_log_config("warning", stream=out), log_level="warning")
    logging.getLogger("uvicorn.error").info("dropped below warning")
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    logging.getLogger("app.cache").warning("redis down")
    assert [(line["logger"], line["message"]) for line in lines(out)] == [
        ("uvicorn.error", "Exception in ASGI application"), ("app.cache", "redis down")]


def test_a_flood_of_identical_errors_is_cut_to_a_few_lines(restore_logging) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = logging.getLogger("asyncio")
    exc = emfile()
    for _ in range(20_000):  # the stalled-connection flood, 20k accept() failures in well under 10 s
        log.error("socket.accept() out of system resource", exc_info=exc)
    got = lines(out)
    assert len(got) == 5 and all(line["message"] == "socket.accept() out of system resource" for line in got)
    assert len(out.getvalue()) < 10_000


def _record(msg: str = "accept failed on %s", args: tuple = ("fd 9",), level: int = logging.ERROR,
            exc_info: tuple | None = None, name: str = "uvicorn.error") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_repeat_filter_summarises_the_suppressed_count_with_the_next_line() -> None:
    clock = FakeClock()
    f = RepeatedRecordFilter(limit=3, window_s=10.0, clock=clock)
    passed = [f.filter(_record(args=(f"fd {i}",), exc_info=emfile())) for i in range(250)]
    assert passed[:3] == [True] * 3 and not any(passed[3:])  # other args: still the same kind
    clock.now += 9.9
    assert not f.filter(_record(exc_info=emfile()))
    clock.now += 0.2  # the window (10 s from the first line) is over
    summary = _record(exc_info=emfile())
    assert f.filter(summary)
    assert summary.suppressed == 248
    assert summary.getMessage() == "accept failed on fd 9 [suppressed 248 similar messages in the previous 10 s]"
    again = _record(exc_info=emfile())
    assert f.filter(again) and not hasattr(again, "suppressed")  # counted once, not repeated


def test_counted_warning_says_how_many_once_per_interval(caplog) -> None:
    clock = FakeClock()
    refused = CountedWarning(logging.getLogger("test.counted"), "refused %d connections", every_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.counted"):
        refused()  # the first event is told at once
        for _ in range(500):
            clock.now += 0.01
            refused()
        clock.now += 5.1  # 10 s after the first line: the next event tells the count since it
        refused()
    assert [r.getMessage() for r in caplog.records] == ["refused 1 connections", "refused 501 connections"]


def test_repeat_filter_kinds_and_levels() -> None:
    clock = FakeClock()
    f = RepeatedRecordFilter(limit=1, window_s=10.0, clock=clock)
    assert f.filter(_record(exc_info=emfile()))
    assert not f.filter(_record(exc_info=emfile()))
    assert f.filter(_record())  # no exception: another kind
    assert f.filter(_record(exc_info=(ValueError, ValueError("x"), None)))  # another exception type
    assert f.filter(_record(level=logging.WARNING, exc_info=emfile()))  # another level
    assert f.filter(_record(name="asyncio", exc_info=emfile()))  # another logger
    assert all(f.filter(_record(level=logging.INFO)) for _ in range(100))  # info (access lines) never limited
    with pytest.raises(ValueError, match="limit must be"):
        RepeatedRecordFilter(limit=0)


def test_repeat_filter_table_stays_bounded() -> None:
    clock = FakeClock()
    f = RepeatedRecordFilter(limit=1, window_s=10.0, max_kinds=50, clock=clock)
    for i in range(1000):  # 1000 distinct messages (templates), e.g. f-strings with an address in them
        assert f.filter(_record(msg=f"peer {i} reset"))
        clock.now += 0.001
    assert len(f._windows) <= 50


def test_formatter_and_filter_compose_on_any_handler() -> None:
    """The pieces work on a handler of one's own (for a test, or another sink), not only via dictConfig."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger("test_app_logs.own")
    log.propagate = False
    log.addHandler(handler)
    try:
        token = request_id_var.set("abc")
        log.warning("50%% done, %s", "ok", extra={"color_message": "\x1b[31mred\x1b[0m"})
        request_id_var.reset(token)
    finally:
        log.removeHandler(handler)
    (line,) = lines(out)
    assert line["message"] == "50% done, ok" and line["request_id"] == "abc" and "color_message" not in line
