"""The engine core's busy loop: messages in, one step, outputs out.

    loop:
        messages = everything waiting on the socket (Submit, Abort, Cut, Drain, Hello, StatsQuery)
        outputs  = core.step()            # every model with work: schedule -> launch -> collect -> update
        send each API process its outputs (one message per process per iteration)

It blocks on the socket only when no row is active and no step is in flight. The socket is a ZMQ ROUTER:
every API process connects a DEALER, and outputs go back to the process that sent the request. The same
loop runs in the engine-core process (ipc://) and, for tests and `recursolve solve`, in a thread of the API
process (inproc://, the ZMQ context shared).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import zmq

from app.engine.core import EngineCore
from app.engine.protocol import (
    Abort,
    Cut,
    Drain,
    Hello,
    Outputs,
    Ready,
    Shutdown,
    Stats,
    StatsQuery,
    Submit,
    decode_to_engine,
    encode,
)
from app.gc_pauses import flush_pauses, freeze_startup_heap, record_pauses
from app.settings import ModelSpec

log = logging.getLogger(__name__)

IDLE_POLL_MS = 100  # how long an idle loop waits on the socket before looking again


def run_engine_loop(address: str, specs: list[ModelSpec], *, ctx: zmq.Context | None = None, warmup: bool = True,
                    max_share: float = 1.0, cuda_graphs: bool | None = None, freeze_heap: bool = False) -> None:
    """Bind `address`, load the models, then serve until a Shutdown message arrives. `freeze_heap` (the
    engine-core process, not a thread of a test): what loading and warm-up left is frozen out of GC passes."""
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    try:
        core: EngineCore | None = EngineCore.load(specs, warmup=warmup, max_share=max_share, cuda_graphs=cuda_graphs)
        ready = Ready(models=core.infos(), pid=os.getpid())
    except Exception as e:  # stay up to tell every API process why nothing is served
        log.exception("loading models failed")
        core, ready = None, Ready(models=[], error=f"{type(e).__name__}: {e}", pid=os.getpid())
    if freeze_heap:
        freeze_startup_heap("engine core")
    try:
        _serve(sock, core, ready)
    finally:
        sock.close(0)


def _serve(sock: zmq.Socket, core: EngineCore | None, ready: Ready) -> None:
    owner: dict[str, bytes] = {}  # request id -> the API process (ZMQ identity) that sent it
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    ready_msg = encode(ready)
    while True:
        flush_pauses()  # GC passes timed since the last iteration (app/gc_pauses.py)
        busy = core is not None and core.has_work()
        pending: dict[bytes, Outputs] = {}
        t = time.perf_counter()
        polled = poller.poll(0 if busy else IDLE_POLL_MS)
        if core is not None:
            t = core.clock.lap("messages" if busy else "idle", t)
        if polled:
            while True:
                try:
                    ident, raw = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = decode_to_engine(raw)
                if isinstance(msg, Shutdown):
                    return
                if isinstance(msg, Hello):
                    sock.send_multipart([ident, ready_msg])
                elif core is None:
                    continue
                elif isinstance(msg, Submit):
                    for req in msg.requests:
                        owner[req.id] = ident
                    _route(core.add(msg.requests), owner, pending)
                elif isinstance(msg, Abort):
                    core.abort(msg.ids)
                    for rid in msg.ids:
                        owner.pop(rid, None)
                elif isinstance(msg, Cut):
                    _route(core.cut(msg.ids), owner, pending)
                elif isinstance(msg, Drain):
                    core.drain()
                elif isinstance(msg, StatsQuery):
                    sock.send_multipart([ident, encode(Stats(msg.token, core.stats(), dict(core.clock.seconds)))])
        if core is None:
            continue  # its models failed to load: it answers Hello alone, nothing is stepped or sent
        t = core.clock.lap("messages", t)
        if core.has_work():
            stepped = core.step()  # times its own phases
            t = time.perf_counter()
            _route(stepped, owner, pending)
        for ident, out in pending.items():
            sock.send_multipart([ident, encode(out)])
        core.clock.lap("send", t)
        core.clock.flush()


def _route(out: Outputs, owner: dict[str, bytes], pending: dict[bytes, Outputs]) -> None:
    """Sort outputs by the API process that asked; finished and rejected requests are forgotten."""
    if not out:
        return

    def box(rid: str) -> Outputs | None:
        ident = owner.get(rid)
        return None if ident is None else pending.setdefault(ident, Outputs())

    for rid in out.accepted:
        if (b := box(rid)) is not None:
            b.accepted.append(rid)
    for step in out.steps:
        if (b := box(step.id)) is not None:
            b.steps.append(step)
    for done in out.finished:
        if (b := box(done.id)) is not None:
            b.finished.append(done)
        owner.pop(done.id, None)
    for rej in out.rejected:
        if (b := box(rej.id)) is not None:
            b.rejected.append(rej)
        owner.pop(rej.id, None)


def engine_process_main(address: str, specs: list[ModelSpec], options: dict[str, Any]) -> None:
    """Entry point of the engine-core process (spawned by `recursolve serve`)."""
    from app.logs import configure_logging

    configure_logging(options.get("log_level", "info"))
    record_pauses("engine")
    # Ctrl-C reaches the whole process group: the supervisor decides when the engine stops (after the API
    # processes drained), so the engine ignores SIGINT and ends on SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threads = options.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    run_engine_loop(address, specs, warmup=options.get("warmup", True), max_share=options.get("max_share", 1.0),
                    cuda_graphs=options.get("cuda_graphs"), freeze_heap=True)
