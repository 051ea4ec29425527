"""The API side of the engine boundary: submit plain requests, await plain outputs.

`EngineClient` talks to an engine core over ZMQ (a DEALER socket, msgpack messages) from an asyncio loop:
futures keyed by request id, one reader task resolving them. Submits made in the same event-loop tick go
out as one message. The engine core may live in another process (`recursolve serve`) or in a thread of this
one (`InprocEngine`, for tests and the CLI, as vLLM keeps an in-process client beside its multiprocess one);
the API code cannot tell which.

If the engine goes away (its process died), every request waiting on it fails with EngineUnavailable (HTTP
503, never a hang) and the client says it is not ready until the restarted engine answers Hello again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from app.engine.protocol import (
    Abort,
    Cut,
    Drain,
    EngineOutput,
    EngineRequest,
    Hello,
    ModelInfo,
    Outputs,
    Ready,
    Rejected,
    Shutdown,
    Stats,
    StatsQuery,
    StepUpdate,
    Submit,
    decode_from_engine,
    encode,
)

log = logging.getLogger(__name__)


class EngineRejected(Exception):
    """The engine refused a request (queue full, draining, too many rows, engine error)."""

    def __init__(self, rejected: Rejected) -> None:
        self.code, self.retry_after_s = rejected.code, rejected.retry_after_s
        self.message = rejected.message
        super().__init__(rejected.message)


class EngineUnavailable(Exception):
    """The engine core is not reachable (not started, restarting, or it died with this request in it)."""


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[EngineOutput]
    on_step: Callable[[StepUpdate], None] | None = None
    accepted: asyncio.Future[None] | None = None


class EngineClient:
    def __init__(self, address: str, ctx: zmq.asyncio.Context | None = None) -> None:
        self.address = address
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.ready: Ready | None = None  # the engine's last Ready (None while unreachable)
        self._sock: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None  # the DEALER's connection events (not for inproc://)
        self._pending: dict[str, _Pending] = {}
        self._outbox: list[EngineRequest] = []
        self._stats: dict[int, asyncio.Future[Stats]] = {}
        self._tokens = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._ready_event: asyncio.Event | None = None
        self._connected = False
        self._sending: set[asyncio.Future[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and say Hello; `wait_ready` waits for the engine's Ready."""
        self._ready_event = asyncio.Event()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # A name of its own: pyzmq's default (inproc://monitor.s-<fd>) stays bound in the context unless the monitor
        # is disabled (close does), and a later client in this process whose socket got the same fd could not start.
        monitor = (sock.get_monitor_socket(addr=f"inproc://recursolve-monitor-{uuid.uuid4().hex}")
                   if not self.address.startswith("inproc://") else None)
        sock.connect(self.address)
        self._sock, self._monitor = sock, monitor
        self._tasks.append(asyncio.create_task(self._read(), name="recursolve-engine-reader"))
        if monitor is not None:
            self._tasks.append(asyncio.create_task(self._watch(monitor), name="recursolve-engine-monitor"))
        else:
            self._connected = True
            await self._send(Hello())

    async def wait_ready(self, timeout: float | None = None) -> Ready:
        assert self._ready_event is not None, "start() first"
        await asyncio.wait_for(self._ready_event.wait(), timeout)
        assert self.ready is not None
        return self.ready

    async def close(self) -> None:
        if self._sock is not None and self._monitor is not None and not self._monitor.closed:
            # Unbinds the monitor's endpoint (closing the socket leaves it bound in the context). Only while the
            # monitor task's PAIR socket is open: the stop event is sent to it, and would block on a closed one.
            self._sock.disable_monitor()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._fail_all(EngineUnavailable("the server is shutting down"))
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    @property
    def models(self) -> dict[str, ModelInfo]:
        return {m.name: m for m in self.ready.models} if self.ready is not None else {}

    @property
    def is_ready(self) -> bool:
        return self.ready is not None and self.ready.error is None and self._connected

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- requests ----------------------------------------------------------------------------------

    def submit(self, request: EngineRequest, on_step: Callable[[StepUpdate], None] | None = None
               ) -> asyncio.Future[EngineOutput]:
        """Send a request; the future gets its EngineOutput, or EngineRejected / EngineUnavailable."""
        if not self.is_ready:
            raise EngineUnavailable("the engine core is not running (starting or restarting); retry shortly")
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), on_step, loop.create_future() if request.stream else None)
        self._pending[request.id] = pending
        if not self._outbox:
            loop.call_soon(self._flush)  # every submit of this tick goes out in one message
        self._outbox.append(request)
        return pending.future

    async def accepted(self, request_id: str) -> None:
        """For a streaming request: returns once it is queued (raises what the engine rejected it with)."""
        pending = self._pending.get(request_id)
        if pending is None or pending.accepted is None:
            return
        await asyncio.wait({pending.accepted, pending.future}, return_when=asyncio.FIRST_COMPLETED)
        if pending.future.done() and pending.future.exception() is not None:
            raise pending.future.exception()  # type: ignore[misc]

    def abort(self, ids: list[str]) -> None:
        for rid in ids:
            p = self._pending.pop(rid, None)
            if p is not None and not p.future.done():
                p.future.cancel()
        if ids and self._sock is not None:
            self._send_soon(Abort(ids))

    async def cut(self, ids: list[str]) -> None:
        if ids:
            await self._send(Cut(ids))

    async def drain(self) -> None:
        await self._send(Drain())

    async def stats(self, timeout: float = 2.0) -> dict[str, dict[str, object]]:
        """Each model's live engine state ({} when the engine does not answer within `timeout`)."""
        answer = await self.query_stats(timeout)
        return answer.models if answer is not None else {}

    async def query_stats(self, timeout: float = 2.0) -> Stats | None:
        """The engine's whole Stats answer (the models' state and the loop's seconds by phase), None when the
        engine does not answer within `timeout`."""
        token = next(self._tokens)
        fut: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._stats[token] = fut
        try:
            await self._send(StatsQuery(token))
            return await asyncio.wait_for(fut, timeout)
        except (TimeoutError, EngineUnavailable):
            return None
        finally:
            self._stats.pop(token, None)

    def pending_ids(self) -> list[str]:
        return list(self._pending)

    # -- plumbing ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        if batch:
            self._send_soon(Submit(batch))

    def _send_soon(self, msg: object) -> None:
        task = asyncio.ensure_future(self._send(msg))
        self._sending.add(task)  # keep a reference until it is sent
        task.add_done_callback(self._sending.discard)

    async def _send(self, msg: object) -> None:
        if self._sock is None:
            raise EngineUnavailable("the engine client is closed")
        await self._sock.send(encode(msg))  # type: ignore[arg-type]

    async def _read(self) -> None:
        assert self._sock is not None
        while True:
            raw = await self._sock.recv()
            msg = decode_from_engine(raw)
            if isinstance(msg, Outputs):
                self._dispatch(msg)
            elif isinstance(msg, Ready):
                self.ready = msg
                if msg.error is not None:
                    log.error("the engine core could not load its models: %s", msg.error)
                assert self._ready_event is not None
                self._ready_event.set()
            elif isinstance(msg, Stats):
                fut = self._stats.get(msg.token)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    def _dispatch(self, out: Outputs) -> None:
        for rid in out.accepted:
            p = self._pending.get(rid)
            if p is not None and p.accepted is not None and not p.accepted.done():
                p.accepted.set_result(None)
        for step in out.steps:
            p = self._pending.get(step.id)
            if p is not None and p.on_step is not None:
                p.on_step(step)
        for done in out.finished:
            p = self._pending.pop(done.id, None)
            if p is not None and not p.future.done():
                p.future.set_result(done)
        for rej in out.rejected:
            p = self._pending.pop(rej.id, None)
            if p is not None and not p.future.done():
                p.future.set_exception(EngineRejected(rej))

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Connection events of the DEALER: Hello on every (re)connect, fail everything on a disconnect."""
        try:
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED or (event == zmq.EVENT_CONNECTED and
                                                              not hasattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED")):
                    self._connected = True
                    await self._send(Hello())
                elif event == zmq.EVENT_DISCONNECTED:
                    self._connected = False
                    self.ready = None
                    log.error("lost the engine core; failing %d in-flight requests", len(self._pending))
                    self._fail_all(EngineUnavailable(
                        "the engine core process stopped while this request was in it; it is being restarted: "
                        "retry shortly"))
        finally:
            monitor.close(0)

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(error)
            if p.accepted is not None and not p.accepted.done():
                p.accepted.cancel()


class InprocEngine:
    """The engine core in a thread of this process (tests, `recursolve solve`), on an inproc:// socket."""

    def __init__(self, specs: list, *, warmup: bool = True, max_share: float = 1.0) -> None:
        self.ctx = zmq.asyncio.Context()
        self.address = f"inproc://recursolve-engine-{uuid.uuid4().hex[:8]}"
        self._specs, self._warmup, self._max_share = specs, warmup, max_share
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from app.engine.core_loop import run_engine_loop

        def run() -> None:
            run_engine_loop(self.address, self._specs, ctx=zmq.Context.shadow(self.ctx.underlying),
                            warmup=self._warmup, max_share=self._max_share)

        self._thread = threading.Thread(target=run, name="recursolve-engine-core", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(self.address)
        await sock.send(encode(Shutdown()))
        await asyncio.to_thread(self._thread.join, 30)
        sock.close(0)
        self._thread = None
