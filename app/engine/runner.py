"""The model runner: persistent device buffers for a fixed pool of batch rows, and the step that runs them.

Tensors only; it knows nothing of requests beyond the rows it is told to load and step.

- Buffers: x (the embedded puzzle), z_H, z_L and the input tokens (for the verifier) for `batch_rows` rows,
  plus one scratch row that padding points at, all allocated once.
- One step: gather the active rows, one ACT step, scatter the new carry back, then on the device: argmax
  tokens, the model's own halting rule, and the batched verifier; everything the scheduler needs is packed
  into one [n, seq_len + 3] float32 tensor, so a step costs one device-to-host copy.
- CUDA: active rows are padded up to a bucket (1, 2, 4, ... batch_rows) and each bucket's step is a CUDA
  graph captured at warm-up, so a step is one graph replay instead of hundreds of kernel launches (the step
  of a tiny model is launch-bound: 8 ms eager vs 1 ms replayed for one row on an H100).
- CPU: eager, gathering only the active rows (the whole pool as is when every row is busy).
- A step is `launch` then `collect`. On CUDA, `launch` only queues the work and an asynchronous copy of the
  packed results into pinned host memory, so the engine core can launch step t+1 and then, while the device
  runs it, collect step t and apply the halting rules to it (`overlap`: the engine's Python hides behind the
  device's step instead of following it). On a CPU the work is done in `launch`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import numpy as np
import torch

from app.engine.backends import Backend
from models.ptrm import noise_targets
from models.verify import prepare_batch, verify_batch

log = logging.getLogger(__name__)

BUCKET_STEP = 32


def batch_buckets(batch_rows: int) -> list[int]:
    """Powers of two up to 32, then every multiple of 32, then batch_rows itself.

    Why so many above 32: a GPU step of a tiny model is launch-bound below ~32 rows, but above that its time
    grows with the rows, so padding 170 active rows to 256 (powers of two) would cost a third of the step.
    Multiples of 32 pad by at most 31 rows (at most 2x below 64), for ceil(batch_rows / 32) + 5 graphs from
    batch_rows 32 up (13 for 256).
    """
    sizes, b = [], 1
    while b < min(batch_rows, BUCKET_STEP):
        sizes.append(b)
        b *= 2
    sizes += range(BUCKET_STEP, batch_rows, BUCKET_STEP)
    return [*sizes, batch_rows]


@dataclass
class Launched:
    """A step on its way: the rows it runs and the host tensor its packed results land in."""

    idx: np.ndarray  # int64 [n], the rows stepped
    packed: torch.Tensor  # float32 [n, seq_len + 3] on the host
    done: torch.cuda.Event | None  # recorded after the copy to `packed` (CUDA); None: `packed` is ready


@dataclass(frozen=True)
class NoiseRows:
    """One noisy request's part of a step's PTRM noise: its generator (`key`), K, sigma and latents, and the
    rows of its trajectories `trajs` that run this step."""

    key: str
    k: int
    sigma: float
    noise_on: str
    rows: list[int]
    trajs: list[int]


@dataclass
class StepArrays:
    """One step's results on the host, row-aligned with the rows that ran."""

    tokens: np.ndarray  # int32 [n, seq_len] (the wire's dtype)
    q_halt: np.ndarray  # float32 [n]
    model_halted: np.ndarray  # bool [n]
    verified: np.ndarray | None  # bool [n], or None when the model has no batched verifier

    def take(self, keep: np.ndarray) -> StepArrays:
        """The rows where `keep` (bool [n]) is true."""
        return StepArrays(self.tokens[keep], self.q_halt[keep], self.model_halted[keep],
                          None if self.verified is None else self.verified[keep])


class ModelRunner:
    def __init__(self, backend: Backend, batch_rows: int, verify_task: str | None = None,
                 cuda_graphs: bool | None = None, pad_to_buckets: bool = False, compile_step: bool = False,
                 overlap: bool | None = None, blocking_wait: bool = True) -> None:
        """verify_task: the task whose batched token verifier (models.verify) runs on every step, or None.
        pad_to_buckets: run the CUDA-graph path's padding eagerly (tests check the padding on a CPU).
        compile_step: torch.compile the step (inductor fuses its many small elementwise kernels); on CUDA each
        bucket's graph captures the compiled step. The compile runs at warm-up, tens of seconds.
        overlap: the engine core collects step t after launching step t+1 (default: on CUDA, where the launch
        returns at once; on a CPU it would only cost each request one wasted step). Tests turn it on on a CPU.
        blocking_wait: `collect` sleeps until the device signals the step's event (cudaEventBlockingSync) instead
        of spinning on it, which holds a whole core for the wait (CUDA's default)."""
        self.backend = backend
        self.model = backend.loaded.model
        cfg = backend.loaded.config
        self.seq_len, self.total_len, self.hidden = cfg.seq_len, cfg.total_len, cfg.hidden_size
        self.batch_rows = batch_rows
        self.device = backend.device
        self.verify_task = verify_task
        self.scratch = batch_rows  # the extra row that padded slots read from and write to
        n = batch_rows + 1
        self.x = torch.zeros(n, self.total_len, self.hidden, dtype=backend.dtype, device=self.device)
        self.z_H, self.z_L = backend.fresh_carry(n)
        self.inputs = torch.zeros(n, self.seq_len, dtype=torch.int64, device=self.device)
        # What the verifier needs from the inputs alone (a maze's shortest S-G distance), computed once per request.
        self.prepared = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.generators: dict[str, torch.Generator] = {}  # request id -> its noise stream
        use_graphs = self.device.type == "cuda" and backend.name == "torch"
        self.cuda_graphs = use_graphs if cuda_graphs is None else (cuda_graphs and use_graphs)
        self.buckets = batch_buckets(batch_rows)
        self.pad_to_buckets = pad_to_buckets or self.cuda_graphs
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.compiled = compile_step and backend.name == "torch"
        # dynamic: one compile serves every row count (the CPU path's n varies per step; CUDA has a bucket each).
        self._step = torch.compile(self._step_rows, dynamic=True) if self.compiled else self._step_rows
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        self.blocking_wait = blocking_wait
        # Two pinned buffers the packed results are copied into, taken in turn: step t+1's copy is queued while
        # step t's is still being read.
        self._host: list[torch.Tensor] = []
        self._turn = 0

    def describe(self) -> dict[str, object]:
        return {**self.backend.describe(), "cuda_graphs": self.cuda_graphs, "compiled": self.compiled,
                "overlap": self.overlap, "wait": "block" if self.blocking_wait else "spin",
                "buckets": self.buckets if self.cuda_graphs else None}

    # -- rows in -----------------------------------------------------------------------------------

    def load_rows(self, inputs: np.ndarray, puzzle_ids: np.ndarray, rows_per_request: list[list[int]],
                  verify_facts: list[int | None] | None = None) -> None:
        """Embed each admitted request's inputs into its rows (a PTRM request's K rows get the same); fresh carry.

        inputs [m, seq_len] int32, puzzle_ids [m], rows_per_request: the rows of each of the m requests;
        verify_facts [m]: what the verifier needs beyond the tokens, as the API worked it out (EngineRequest's
        verify_fact), or None where it did not (then this computes it for every row, `prepare_batch`).
        Nothing here waits for the device: with the step overlapped, a step is running while rows are loaded
        (a blocking host-to-device copy would sync the stream and wait for it).
        """
        counts = [len(r) for r in rows_per_request]
        rows = self._to_device(np.fromiter((r for rs in rows_per_request for r in rs), np.int64))
        tokens = self._to_device(np.repeat(np.asarray(inputs, np.int32), counts, axis=0))
        ids = self._to_device(np.repeat(np.asarray(puzzle_ids, np.int32), counts))
        self.x.index_copy_(0, rows, self.backend.embed(tokens, ids).to(self.x.dtype))
        row_inputs = tokens.long()
        self.inputs.index_copy_(0, rows, row_inputs)
        if self.verify_task is not None:
            if verify_facts and all(f is not None for f in verify_facts):
                prepared = self._to_device(np.repeat(np.asarray(verify_facts, np.int64), counts))
            else:  # maze: a flood fill on the device, a few kernels per layer and a host sync every 32 layers
                prepared = prepare_batch(self.verify_task, row_inputs)
            if prepared is not None:
                self.prepared.index_copy_(0, rows, prepared.to(self.device, torch.int64))
        z_H, z_L = self.backend.fresh_carry(len(rows))
        self.z_H.index_copy_(0, rows, z_H.to(self.z_H.dtype))
        self.z_L.index_copy_(0, rows, z_L.to(self.z_L.dtype))

    def _from_host(self, a: np.ndarray) -> torch.Tensor:
        """A host array as a tensor to copy from without waiting: pinned on CUDA (the caching host allocator keeps
        the pinned block until the copy is done)."""
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.pin_memory() if self.device.type == "cuda" else t

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        """A host array on the runner's device; on CUDA asynchronously."""
        return self._from_host(a).to(self.device, non_blocking=True)

    def start_noise(self, key: str, seed: int | None) -> None:
        """A noisy request's generator (seeded fresh when the request gave no seed)."""
        seed = seed if seed is not None else secrets.randbits(63)
        self.generators[key] = torch.Generator(device=self.device).manual_seed(seed)

    def end_noise(self, key: str) -> None:
        self.generators.pop(key, None)

    def add_noise(self, requests: list[NoiseRows]) -> None:
        """PTRM: sigma * N(0, I) for the trajectories of a step's noisy requests, added to their running rows.

        Each request draws the noise of all its K trajectories from its own generator (z_H's before z_L's with
        "both"), halted ones included, so its random stream does not depend on when its rows halt (same seed ->
        same answer, and the draws of `models.ptrm.inject_noise`).

        The draws of all requests land in one buffer per latent, scaled in place, and one add per latent puts them
        on the rows: one launch per request and latent plus about four per step, where each request used to cost
        five (on a GPU each is host time in the engine's step, and with hedged escalation a step of an H100 under
        /v1/solve runs about ten noisy requests). 16 requests (K=8) in one step: 80 -> 21 torch ops, and on the
        VM's CPU 0.82-0.93 ms against 1.15 for the requests one by one.
        """
        for name in ("z_H", "z_L"):
            todo = [r for r in requests if name in noise_targets(r.noise_on, r.sigma)]
            if todo:
                self._add_draws(self.z_H if name == "z_H" else self.z_L, todo)

    def _add_draws(self, z: torch.Tensor, requests: list[NoiseRows]) -> None:
        eps = torch.empty((sum(r.k for r in requests), self.total_len, self.hidden), dtype=torch.float32,
                          device=self.device)
        rows: list[int] = []
        picks: list[int] = []  # each row's draw in `eps`: its request's offset + its trajectory
        offset = 0
        for r in requests:
            torch.randn((r.k, self.total_len, self.hidden), generator=self.generators[r.key],
                        out=eps[offset:offset + r.k])
            rows += r.rows
            picks += [offset + t for t in r.trajs]
            offset += r.k
        sigmas = {r.sigma for r in requests}
        if len(sigmas) == 1:  # one scale (the usual case): in place, no per-row tensor
            eps.mul_(sigmas.pop())
        else:
            scale = [r.sigma for r in requests for _ in range(r.k)]
            eps.mul_(self._to_device(np.asarray(scale, np.float32))[:, None, None])
        noise = eps.to(z.dtype)
        if picks != list(range(offset)):  # not every trajectory runs, in order: take the rows' draws
            where = self._to_device(np.asarray([rows, picks], np.int64))  # [2, n]
            z.index_add_(0, where[0], noise.index_select(0, where[1]))
        else:
            z.index_add_(0, self._to_device(np.asarray(rows, np.int64)), noise)

    # -- the step ----------------------------------------------------------------------------------

    def _step_rows(self, idx: torch.Tensor | None) -> torch.Tensor:
        """One ACT step of the rows `idx` (None: the whole pool), carry written back in place.

        Returns [n, seq_len + 3] float32: tokens, q_halt, the model's halting rule, the verifier's verdict.
        Pure tensor work with static shapes, so it can be captured as a CUDA graph.
        """
        if idx is None:
            x, z_H, z_L = self.x[:-1], self.z_H[:-1], self.z_L[:-1]
        else:
            x, z_H, z_L = self.x.index_select(0, idx), self.z_H.index_select(0, idx), self.z_L.index_select(0, idx)
        out = self.backend.act_step(x, z_H, z_L)
        if idx is None:
            self.z_H[:-1].copy_(out.z_H)
            self.z_L[:-1].copy_(out.z_L)
        else:
            self.z_H.index_copy_(0, idx, out.z_H.to(self.z_H.dtype))
            self.z_L.index_copy_(0, idx, out.z_L.to(self.z_L.dtype))
        tokens = out.logits.argmax(-1)
        halted = self.backend.model_halted(out.q_halt, out.q_continue)
        if self.verify_task is not None:
            inputs = self.inputs[:-1] if idx is None else self.inputs.index_select(0, idx)
            prepared = self.prepared[:-1] if idx is None else self.prepared.index_select(0, idx)
            verified = verify_batch(self.verify_task, inputs, tokens, prepared)
        else:
            verified = torch.zeros_like(halted)
        return torch.cat([tokens.float(), out.q_halt.float()[:, None], halted.float()[:, None],
                          verified.float()[:, None]], dim=1)

    def execute(self, idx: np.ndarray) -> StepArrays:
        """One ACT step of the active rows `idx` (sorted row numbers), waited for."""
        return self.collect(self.launch(idx))

    def launch(self, idx: np.ndarray) -> Launched:
        """Start one ACT step of the rows `idx` (sorted row numbers); on CUDA it returns before the device is done.
        The rows' buffers may be rewritten (load_rows) before it is collected: the device runs both in order."""
        n = len(idx)
        if self.pad_to_buckets:  # the active rows, then the scratch row up to the bucket size
            bucket = next(b for b in self.buckets if b >= n)
            padded = np.full(bucket, self.scratch, np.int64)
            padded[:n] = idx
            if self.cuda_graphs:
                graph, static_idx, static_out = self._graphs[bucket]
                static_idx.copy_(self._from_host(padded), non_blocking=True)  # queued, like the replay
                graph.replay()
                out = static_out[:n]
            else:
                out = self._step(self._to_device(padded))[:n]
        elif n == self.batch_rows:
            out = self._step(None)
        else:
            out = self._step(self._to_device(idx))
        if self.device.type != "cuda":  # the work is done (a CPU), or waited for here (MPS): no copy in flight
            return Launched(idx, out.cpu(), None)
        if not self._host:
            self._host = [torch.empty(self.batch_rows, self.seq_len + 3, pin_memory=True) for _ in range(2)]
        host = self._host[self._turn][:n]
        self._turn ^= 1
        host.copy_(out, non_blocking=True)  # the step's one device-to-host copy
        done = torch.cuda.Event(blocking=self.blocking_wait)  # not torch.Event: it ignores blocking on CUDA
        done.record()
        return Launched(idx, host, done)

    def collect(self, launched: Launched) -> StepArrays:
        """Wait for a launched step (the GIL is released while waiting) and unpack its results (copies, so the
        pinned buffer can take a later step's)."""
        if launched.done is not None:
            launched.done.synchronize()
        arr = launched.packed.numpy()
        s = self.seq_len
        return StepArrays(tokens=arr[:, :s].astype(np.int32), q_halt=arr[:, s].copy(), model_halted=arr[:, s + 1] > 0.5,
                          verified=arr[:, s + 2] > 0.5 if self.verify_task is not None else None)

    # -- warm-up -----------------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run every shape once so the first caller pays no lazy initialisation; on CUDA, capture the graphs.

        Warm-up steps touch only the scratch row (a compiled CPU step also the idle pool, which admission
        overwrites), so it is safe while no request runs. The compile happens here: if it fails (a compiler
        missing or broken on this machine), the runner says so in the log and serves the eager step instead."""
        try:
            self._warmup()
        except Exception:
            if not self.compiled:
                raise
            log.exception("torch.compile of the ACT step failed; serving the eager step instead")
            self.compiled, self._step, self._graphs = False, self._step_rows, {}
            self._warmup()

    def _warmup(self) -> None:
        with torch.inference_mode():
            if not self.cuda_graphs:
                for n in sorted({1, 2, self.batch_rows}):  # 1 and 2: a dynamic compile specialises on size 1
                    self._step(torch.full((n,), self.scratch, device=self.device))
                if self.compiled:  # the whole-pool path (idx None) is a graph of its own for the compiler
                    self._step(None)
                return
            pool = torch.cuda.graph_pool_handle()
            for b in reversed(self.buckets):  # largest first, so smaller graphs reuse its memory
                static_idx = torch.full((b,), self.scratch, dtype=torch.int64, device=self.device)
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._step(static_idx)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    static_out = self._step(static_idx)
                self._graphs[b] = (graph, static_idx, static_out)
            torch.cuda.synchronize()
            log.info("captured %d CUDA graphs (buckets %s)", len(self._graphs), self.buckets)
