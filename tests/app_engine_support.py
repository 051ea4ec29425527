"""Small real models and a running app for the engine and API tests (tests/test_app_*.py).

Three tiny TRMs (hidden 32, one layer, one cycle each: a few ms per ACT step on one core):
- `random`: random weights; the Q-head bias stays at the official -5, so it never halts on its own.
- `eager`: the same with the Q-head halt bias set to +10, so it halts after the first step.
- `copy`: weights set by hand so that every step outputs its input tokens (attention and MLP outputs
  zeroed, one-hot embeddings, identity output head): a complete Sudoku comes back verified and the
  answer never changes, which makes the verifier and convergence rules testable without training.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import torch
import uvicorn
from fastapi import FastAPI

from app.api.server_options import uvicorn_options
from app.main import create_app
from app.settings import ModelSpec, Settings
from models import ModelConfig, build_model, save_model

PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def variant(i: int) -> str:
    """PUZZLE with its i-th given blanked: a different, still valid puzzle (a distinct cache key)."""
    givens = [k for k, ch in enumerate(PUZZLE) if ch != "."]
    k = givens[i % len(givens)]
    return PUZZLE[:k] + "." + PUZZLE[k + 1:]


def tiny_config(**over: Any) -> ModelConfig:
    fields: dict[str, Any] = dict(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=32, num_heads=2,
                                  expansion=2, H_cycles=1, L_cycles=1, L_layers=1, puzzle_emb_len=0,
                                  forward_dtype="float32", halt_max_steps=16)
    return ModelConfig(**(fields | over))


def save_random(folder: Path, seed: int = 0, q_halt_bias: float | None = None, **config: Any) -> Path:
    """A random tiny TRM (tiny_config with `config` over it) saved to folder."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(**config))
    with torch.no_grad():
        # Small Q-head weights so the confidence depends on the state; the -5 bias still keeps q_halt < 0.
        model.q_head.weight.normal_(0.0, 0.05)
        if q_halt_bias is not None:
            model.q_head.bias[0] = q_halt_bias
    save_model(model, folder)
    return folder


def save_copy(folder: Path) -> Path:
    """A TRM whose every step maps z to rms_norm(x): logits peak at the input token."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    with torch.no_grad():
        for block in model.L_level.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.H_init.zero_()
        model.L_init.zero_()
        eye = torch.zeros(cfg.vocab_size, cfg.hidden_size)
        eye[:, : cfg.vocab_size] = torch.eye(cfg.vocab_size)
        model.embed_tokens.embedding_weight.copy_(eye)
        model.lm_head.weight.copy_(eye)
    save_model(model, folder)
    return folder


def make_specs(root: Path, **rows: Any) -> list[ModelSpec]:
    """random (default for sudoku: the first TRM), eager, copy; batch_rows/max_queue_rows per model."""
    base = {"batch_rows": 4, "max_queue_rows": 16}
    specs = [
        ModelSpec(name="random", task="sudoku", path=save_random(root / "random"), **(base | rows.get("random", {}))),
        ModelSpec(name="eager", task="sudoku", path=save_random(root / "eager", q_halt_bias=10.0),
                  **(base | rows.get("eager", {}))),
        ModelSpec(name="copy", task="sudoku", path=save_copy(root / "copy"), **(base | rows.get("copy", {}))),
    ]
    return specs


@contextlib.asynccontextmanager
async def lifespan_running(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan, entered and exited in one task of its own as a server does: it holds an anyio task
    group (the MCP transport's) that only the task that entered it may exit, and pytest-asyncio tears a
    module-scoped fixture down in another task than the one that set it up."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold(), name="test-app-lifespan")
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiter.cancel()
        task.result()  # the startup error
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def running_app(root: Path, settings: Settings | None = None, specs: list[ModelSpec] | None = None,
                      ready_timeout: float = 60) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its lifespan running, and an httpx client wired to it in-process."""
    # The tiny pools (1-4 rows) run whole-pool PTRM requests in these tests: no per-request share of the rows
    # (the share rule has its own tests in test_app_engine_scheduler.py and test_app_engine_batching.py).
    settings = settings or Settings(weights_dir=root, warmup=True, drain_grace_seconds=2, max_request_share=1.0)
    app = create_app(settings, specs if specs is not None else make_specs(root))
    async with lifespan_running(app):
        await app.state.runtime.wait_ready(ready_timeout)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield app, client


@contextlib.asynccontextmanager
async def uvicorn_serving(root: Path, send_buffer: int | None = None, **settings: Any) -> AsyncIterator[int]:
    """A real uvicorn server built from `uvicorn_options` (what `recursolve serve` runs) on 127.0.0.1, yielding its
    port; the models are make_specs's (random with 2 batch rows). `send_buffer` fixes the sockets' SO_SNDBUF
    (accepted sockets take the listening socket's), so a test fills a socket with kilobytes, not megabytes."""
    s = Settings(weights_dir=root, drain_grace_seconds=1, log_level="warning", **settings)
    app = create_app(s, make_specs(root, random={"batch_rows": 2}))
    srv = uvicorn.Server(uvicorn.Config(app, lifespan="on", **uvicorn_options(s, host="127.0.0.1", port=0)))
    sockets = None
    if send_buffer is not None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        listener.bind(("127.0.0.1", 0))
        sockets = [listener]
    task = asyncio.create_task(srv.serve(sockets=sockets))
    while not srv.started:
        await asyncio.sleep(0.01)
    await app.state.runtime.wait_ready(60)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        srv.should_exit = True
        await task


async def engine_stats(client: httpx.AsyncClient, model: str) -> dict[str, Any]:
    r = await client.get(f"/v1/models/{model}")
    assert r.status_code == 200, r.text
    return r.json()["engine"]


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll an async predicate until it is true (fails the test after `timeout`)."""
    end = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def solve_body(puzzle: str = PUZZLE, model: str | None = "random", **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "sudoku", "puzzle": puzzle, "options": options}
    if model is not None:
        body["model"] = model
    return body


async def solve_ok(client: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    """POST /v1/solve with solve_body(**kw); the 200 body (fails the test on any other status)."""
    r = await client.post("/v1/solve", json=solve_body(**kw))
    assert r.status_code == 200, r.text
    return r.json()


def make_all_task_specs(root: Path) -> list[ModelSpec]:
    """make_specs plus one random tiny model each for mazes (a 7x7 canvas) and ARC (the 30x30 canvas)."""
    maze = root / "maze"
    torch.manual_seed(1)
    save_model(build_model(tiny_config(task="maze", seq_len=49, vocab_size=6)), maze)
    arc = root / "arc"
    torch.manual_seed(2)
    save_model(build_model(tiny_config(task="arc", seq_len=900, vocab_size=12, halt_max_steps=4)), arc)
    return [*make_specs(root), ModelSpec(name="maze", task="maze", path=maze, batch_rows=4, max_queue_rows=16),
            ModelSpec(name="arc", task="arc", path=arc, batch_rows=2, max_queue_rows=8)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(models_file: Path, env: dict[str, str] | None = None, ready_timeout: float = 120.0,
           log_path: Path | None = None, own_group: bool = False) -> Any:
    """`recursolve serve` (supervisor, engine-core process, API processes) as a subprocess on a free loopback
    port with this models file; yields (base URL, process) once /readyz is 200, and stops it afterwards.
    `own_group`: in a process group of its own (the supervisor's pid), as a terminal's Ctrl-C reaches it."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    env = os.environ | {"RECURSOLVE_MODELS_FILE": str(models_file), "RECURSOLVE_LOG_LEVEL": "warning",
                        "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                        **(env or {})}
    log_path = log_path or models_file.with_suffix(".log")
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=own_group)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
