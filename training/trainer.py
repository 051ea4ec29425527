"""Deep-supervision trainer for TRM and HRM, in the official style (official-trm-hrm.md §2).

A persistent batch of rows: every training step runs ONE ACT step for all rows with gradient,
computes the loss and takes an optimiser step. The carry (z_H, z_L) is detached and kept across
steps, so a row is refined over several supervision steps. Rows that halt (the Q-head says halt,
subject to random exploration, or they reach halt_max_steps) are replaced by fresh examples with a
fresh carry. The Q-head learns "the current answer is exactly right" (BCE); HRM also learns
q_continue from the official one-step bootstrap target.

Everything the next step depends on (weights, AdamW, EMA, the persistent batch and its carry, the
data stream and every RNG) is in the checkpoint, so a resumed run continues with the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import ModelConfig, RecursiveModel, build_model, save_model
from models.layers import Attention
from training.config import TrainConfig
from training.data import TrainStream, load_examples
from training.losses import answer_correct, token_loss_per_row
from training.shards import load_sharded, save_sharded

CHECKPOINT = "checkpoint"  # a folder of files <= checkpoint_shard_mib each (training/shards.py)
LEGACY_CHECKPOINT = "checkpoint.pt"  # one torch.save file, written before checkpoints were sharded


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if cfg.threads and cfg.device == "cpu":
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.examples = load_examples(cfg.data_dir, "train")
        meta = self.examples.metadata
        model_fields = {"seq_len": int(meta["seq_len"]), "vocab_size": int(meta["vocab_size"]),
                        "num_puzzle_identifiers": int(meta["num_puzzle_identifiers"])} | cfg.model
        self.model_config = ModelConfig.model_validate(model_fields)
        self.task = self.model_config.task or "sudoku"
        self.model: RecursiveModel = build_model(self.model_config).to(self.device)
        if cfg.pos_init != "default":
            init_grid_positions(self.model, boxes=cfg.pos_init == "sudoku_grid")
        if cfg.attn_out_init == "zero":
            zero_attention_outputs(self.model)
        # The puzzle table is a buffer (officially trained by sparse SignSGD); with our few identifiers it is
        # simply trained by AdamW with the rest, so it is one more trainable tensor.
        self.trainable: dict[str, torch.Tensor] = dict(self.model.named_parameters())
        if self.model_config.puzzle_emb_ndim > 0:
            self.model.puzzle_emb.requires_grad_(True)
            self.trainable["puzzle_emb"] = self.model.puzzle_emb
        # Matrices are decayed, vectors are not. The grid-bias tables (models/layers.py GridRelativeBias) are a
        # prior, never decayed, with their own lr scale: Adam moves a weight ~lr per step, and a bias must
        # travel O(1) in logit units to reshape an attention pattern (the official code gives its puzzle
        # embeddings a separate, larger lr for the same reason).
        grid = {n for n in self.trainable if n.endswith("grid_bias.table")}
        groups = [{"params": [t for n, t in self.trainable.items() if n not in grid and t.ndim >= 2],
                   "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                  {"params": [t for n, t in self.trainable.items() if n not in grid and t.ndim < 2],
                   "weight_decay": 0.0, "lr_scale": 1.0}]
        if grid:
            groups.append({"params": [self.trainable[n] for n in sorted(grid)], "weight_decay": 0.0,
                           "lr_scale": cfg.grid_bias_lr_scale})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        self.ema = {n: t.detach().clone() for n, t in self.trainable.items()} if cfg.ema_rate > 0 else None
        self.stream = TrainStream(self.examples, self.task, cfg.seed, cfg.augment)
        self.explore = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)

        B, L = cfg.batch_size, self.examples.seq_len
        self.inputs = torch.zeros(B, L, dtype=torch.long, device=self.device)
        self.labels = torch.zeros(B, L, dtype=torch.long, device=self.device)
        self.ids = torch.zeros(B, dtype=torch.long, device=self.device)
        self.z_H, self.z_L = self.model.initial_carry(B, device=self.device)
        self.steps = torch.zeros(B, dtype=torch.long, device=self.device)
        self.halted = torch.ones(B, dtype=torch.bool, device=self.device)  # all rows start empty
        self.step = 0
        self.elapsed = 0.0  # training seconds over every invocation of this run
        self.best_eval = -1.0
        self.eval_set = None
        if cfg.eval_dir and cfg.eval_every_minutes > 0:
            ev = load_examples(cfg.eval_dir, "test")
            n = min(cfg.eval_size, len(ev))
            self.eval_set = (ev.inputs[:n], ev.labels[:n], ev.puzzle_identifiers[:n])

    # -- one step -------------------------------------------------------------------------------

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _lr(self) -> float:
        c = self.cfg
        if self.step < c.lr_warmup_steps:
            return c.lr * (self.step + 1) / c.lr_warmup_steps
        if c.lr_min_ratio >= 1.0:
            return c.lr
        progress = min(1.0, (self.step - c.lr_warmup_steps) / max(1, c.max_steps - c.lr_warmup_steps))
        return c.lr * (c.lr_min_ratio + (1 - c.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def _refill(self) -> None:
        rows = self.halted.nonzero().flatten()
        if rows.numel() == 0:
            return
        inputs, labels, ids = self.stream.take(int(rows.numel()))
        self.inputs[rows] = torch.from_numpy(inputs).to(self.device)
        self.labels[rows] = torch.from_numpy(labels).to(self.device)
        self.ids[rows] = torch.from_numpy(ids).to(self.device)
        self.z_H, self.z_L = self.model.reset_rows(self.z_H, self.z_L, self.halted)
        self.steps[rows] = 0

    def train_step(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.train()
        self._refill()
        lr = self._lr()
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

        with self._autocast():
            x = model.embed(self.inputs, self.ids)
            out = model.act_step(x, self.z_H, self.z_L)
        lm = token_loss_per_row(out.logits, self.labels, cfg.loss)
        correct, tok_acc = answer_correct(out.logits.detach(), self.labels)
        q_halt_loss = F.binary_cross_entropy_with_logits(out.q_halt, correct.float())
        self.steps += 1
        is_last = self.steps >= model.config.halt_max_steps

        q_cont_loss = torch.zeros((), device=self.device)
        if model.config.arch == "hrm" and cfg.hrm_q_bootstrap and model.config.halt_max_steps > 1:
            with torch.no_grad(), self._autocast():
                nxt = model.act_step(x.detach(), out.z_H.detach(), out.z_L.detach())
            target = torch.sigmoid(torch.where(is_last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))
            q_cont_loss = F.binary_cross_entropy_with_logits(out.q_continue, target)

        loss = lm.mean() + 0.5 * (q_halt_loss + q_cont_loss)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = 0.0
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.grad_clip))
        self.opt.step()
        if self.ema is not None:
            with torch.no_grad():
                for n, t in self.trainable.items():
                    self.ema[n].lerp_(t.detach(), 1 - cfg.ema_rate)

        with torch.no_grad():
            self.z_H, self.z_L = out.z_H.detach(), out.z_L.detach()
            halted = is_last.clone()
            if model.config.halt_max_steps > 1:
                halted |= model.halted(out.q_halt.detach(), out.q_continue.detach())
                # official exploration: some rows must run at least a random number of steps
                explore = torch.rand(len(halted), generator=self.explore) < cfg.halt_exploration_prob
                lo = torch.randint(2, model.config.halt_max_steps + 1, (len(halted),), generator=self.explore)
                min_halt = (explore.long() * lo).to(self.device)
                halted &= self.steps >= min_halt
            done = halted
            self.halted = halted
        self.step += 1
        n_done = int(done.sum())
        return {
            "step": self.step, "lr": lr, "loss": loss.item(), "lm_loss": lm.mean().item(),
            "q_halt_loss": q_halt_loss.item(), "q_continue_loss": q_cont_loss.item(),
            "token_acc": float(tok_acc.mean()), "exact_acc": float(correct.float().mean()),
            "q_halt_acc": float(((out.q_halt.detach() >= 0) == correct).float().mean()),
            "halted_rows": n_done,
            "halted_exact": float(correct[done].float().mean()) if n_done else float("nan"),
            "halted_steps": float(self.steps[done].float().mean()) if n_done else float("nan"),
            "grad_norm": grad_norm,
        }

    # -- EMA model, checkpoints ------------------------------------------------------------------

    def ema_model(self) -> RecursiveModel:
        """A copy of the model carrying the EMA weights (the weights we evaluate and ship)."""
        m = build_model(self.model_config).to(self.device)
        state = self.model.state_dict()
        if self.ema is not None:
            state = state | {n: t.detach().clone() for n, t in self.ema.items()}
        m.load_state_dict(state)
        return m.eval()

    def save_ema(self, folder: Path) -> str:
        extra = {"training": {"run": self.cfg.name, "step": self.step, "elapsed_seconds": round(self.elapsed, 1),
                              "ema_rate": self.cfg.ema_rate}}
        return save_model(self.ema_model(), folder, extra)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.model_dump_json(),
            "step": self.step, "elapsed": self.elapsed, "best_eval": self.best_eval,
            "model": self.model.state_dict(),
            "ema": self.ema,
            "optimizer": self.opt.state_dict(),
            "stream": self.stream.state_dict(),
            "batch": {"inputs": self.inputs, "labels": self.labels, "ids": self.ids, "z_H": self.z_H,
                      "z_L": self.z_L, "steps": self.steps, "halted": self.halted},
            "rng": {"torch": torch.get_rng_state(), "explore": self.explore.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
        }

    def save_checkpoint(self, path: Path | None = None) -> Path:
        path = path or self.cfg.run_dir / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic folder swap: a run killed mid-save keeps its previous checkpoint
        return save_sharded(self.state_dict(), path, max_bytes=int(self.cfg.checkpoint_shard_mib * 2**20))

    def load_checkpoint(self, path: Path) -> None:
        """Resume from a sharded checkpoint folder (or a legacy single checkpoint.pt file)."""
        path = Path(path)
        if path.is_dir():
            state = load_sharded(path, map_location=self.device)
        else:
            state = torch.load(path, map_location=self.device, weights_only=True)
        self.step, self.elapsed, self.best_eval = int(state["step"]), float(state["elapsed"]), state["best_eval"]
        self.model.load_state_dict(state["model"])
        if self.model_config.puzzle_emb_ndim > 0:
            self.model.puzzle_emb.requires_grad_(True)
        if self.ema is not None and state["ema"] is not None:
            self.ema = {n: t.to(self.device) for n, t in state["ema"].items()}
        self.opt.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        b = state["batch"]
        self.inputs, self.labels, self.ids = b["inputs"], b["labels"], b["ids"]
        self.z_H, self.z_L, self.steps, self.halted = b["z_H"], b["z_L"], b["steps"], b["halted"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.explore.set_state(state["rng"]["explore"].cpu())
        if state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])

    # -- the loop --------------------------------------------------------------------------------

    def quick_eval(self) -> dict[str, float]:
        from training.evaluate import exact_rows, run_plain

        inputs, labels, ids = self.eval_set
        res = run_plain(self.ema_model(), inputs, ids, batch_size=64)
        exact_max = float(np.mean(exact_rows(res.final_tokens, labels)))
        exact_q = float(np.mean(exact_rows(res.halt_tokens, labels)))
        return {"eval_exact_max_steps": exact_max, "eval_exact_q_halt": exact_q,
                "eval_mean_steps_q_halt": float(res.halt_steps.mean())}

    def fit(self, max_minutes: float | None = None, progress: bool = True) -> dict[str, float]:
        cfg = self.cfg
        run_dir = cfg.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
        log = (run_dir / "log.jsonl").open("a")
        start = time.monotonic()
        deadline = start + 60 * max_minutes if max_minutes else None
        last_ckpt = last_eval = start
        last: dict[str, float] = {}
        window: list[dict[str, float]] = []
        win_start = self.elapsed
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not progress, dynamic_ncols=True)
        t_prev = time.monotonic()
        try:
            while self.step < cfg.max_steps:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                m = self.train_step()
                now = time.monotonic()
                self.elapsed += now - t_prev
                t_prev = now
                window.append(m)
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    last = _average(window) | {"step": self.step, "elapsed_s": round(self.elapsed, 1),
                                               "epoch": self.stream.epoch}
                    span = max(1e-9, self.elapsed - win_start)
                    last["sample_steps_per_s"] = round(cfg.batch_size * len(window) / span, 2)
                    window, win_start = [], self.elapsed
                    log.write(json.dumps(last) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{last['loss']:.3f}", tok=f"{last['token_acc']:.3f}",
                                    exact=f"{last['exact_acc']:.3f}", halt_exact=f"{last['halted_exact']:.3f}")
                if self.eval_set is not None and now - last_eval >= 60 * cfg.eval_every_minutes:
                    self._eval_and_keep_best(log)
                    last_eval = t_prev = time.monotonic()
                if now - last_ckpt >= 60 * cfg.checkpoint_every_minutes:
                    self.save_checkpoint()
                    self.save_ema(run_dir / "model_ema")
                    last_ckpt = t_prev = time.monotonic()
        finally:
            bar.close()
            self.save_checkpoint()
            self.save_ema(run_dir / "model_ema")
            log.write(json.dumps({"event": "stopped", "step": self.step, "elapsed_s": round(self.elapsed, 1)}) + "\n")
            log.close()
        return last

    def _eval_and_keep_best(self, log) -> None:
        res = self.quick_eval() | {"step": self.step, "elapsed_s": round(self.elapsed, 1)}
        score = res["eval_exact_max_steps"]
        if score >= self.best_eval:  # the EMA weights with the best quick held-out score so far
            self.best_eval = score
            self.save_ema(self.cfg.run_dir / "model_best")
            res["best"] = True
        log.write(json.dumps(res) + "\n")
        log.flush()
        tqdm.write(json.dumps(res))


def zero_attention_outputs(model: RecursiveModel) -> int:
    """Start every attention block's output projection at zero; returns how many were zeroed.

    Why: at initialisation attention is near uniform, so each attention branch adds about the same vector
    (the sequence mean) to every position, and the post-norm then shrinks what distinguishes positions.
    Stacked over every L/H call and ACT step this washes out the token-specific signal (training/ATTENTION.md).
    A zero output projection makes each block start as its MLP alone; o_proj gets gradient at once and the
    attention pattern from the second step on. Training init only: loaded checkpoints are unaffected.
    """
    n = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Attention):
                module.o_proj.weight.zero_()
                n += 1
    return n


def init_grid_positions(model: RecursiveModel, boxes: bool) -> None:
    """Start learned position embeddings as 2D grid geometry: one-hot row and column indicators (and, for
    Sudoku, box indicators), norm ~1 like a token embedding, on top of the usual small random part.

    Why: with 1D positions, attention must discover from scratch which cells are peers (Sudoku) or
    neighbours (mazes: offsets +-1 and +-side); in our CPU-sized runs attention models sat on the
    "copy the input" plateau for the whole budget. With indicators, a linear shift in the query projection
    reaches a neighbour (row r, column c+1), so the geometry is visible from step 0. Training init only.
    """
    c = model.config
    side = math.isqrt(c.seq_len)
    parts = 3 if boxes else 2
    if c.pos_encodings != "learned" or side * side != c.seq_len or c.hidden_size < parts * side:
        raise ValueError("grid position init needs learned positions, a square seq_len and hidden >= 2-3 x side")
    with torch.no_grad():
        w = model.embed_pos.embedding_weight
        v = math.sqrt(c.hidden_size / parts) * w.std().item()  # `parts` unit entries ~ one token's norm
        for cell in range(c.seq_len):
            r, col = divmod(cell, side)
            row = w[c.P + cell]
            row[: parts * side] = 0
            row[r] = row[side + col] = v
            if boxes:
                b = math.isqrt(side)
                row[2 * side + (r // b) * b + col // b] = v


def _average(window: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in window[0]:
        vals = [w[k] for w in window if not (isinstance(w[k], float) and math.isnan(w[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out
