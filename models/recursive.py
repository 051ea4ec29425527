"""What TRM and HRM share: input embedding with the puzzle-embedding prefix, the fresh carry,
the output heads, and the step API the engine drives.

The step API is vectorised over the batch and stateless: the caller owns the carry
(z_H, z_L) and may run any subset of rows at any step count, which is what continuous
batching needs. Rows never interact, so a row's numbers do not depend on its neighbours.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import CastedEmbedding, CastedLinear, GridRotaryEmbedding, RotaryEmbedding, trunc_normal_init_


class StepOutput(NamedTuple):
    z_H: torch.Tensor  # [B, L+P, hidden]: the current answer (the paper's y)
    z_L: torch.Tensor  # [B, L+P, hidden]: the reasoning state (the paper's z)
    logits: torch.Tensor  # [B, L, vocab], float32
    q_halt: torch.Tensor  # [B], float32
    q_continue: torch.Tensor  # [B], float32


class RecursiveModel(nn.Module):
    """Base class: subclasses build `L_level` (and HRM's `H_level`) and implement `recurse`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.forward_dtype = c.dtype
        self.embed_scale = math.sqrt(c.hidden_size)
        std = 1.0 / self.embed_scale

        self.embed_tokens = CastedEmbedding(c.vocab_size, c.hidden_size, init_std=std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(c.hidden_size, c.vocab_size)
        self.q_head = CastedLinear(c.hidden_size, 2, bias=True)
        with torch.no_grad():  # Q-head starts near "never halt" (sigmoid(-5)), as in the official init
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

        # The puzzle table is a buffer in the official code (trained by a sparse SignSGD, not AdamW).
        if c.puzzle_emb_ndim > 0:
            self.register_buffer("puzzle_emb", torch.zeros(c.num_puzzle_identifiers, c.puzzle_emb_ndim))
        if c.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(c.hidden_size // c.num_heads, c.total_len, c.rope_theta)
        elif c.pos_encodings == "rope2d":
            side = math.isqrt(c.seq_len)
            if side * side != c.seq_len:
                raise ValueError(f"pos_encodings rope2d needs a square seq_len, got {c.seq_len}")
            self.rotary_emb = GridRotaryEmbedding(c.hidden_size // c.num_heads, c.P, side, c.rope_theta)
        elif c.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(c.total_len, c.hidden_size, init_std=std, cast_to=self.forward_dtype)

        self.register_buffer("H_init", trunc_normal_init_(torch.empty(c.hidden_size), std=1))
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(c.hidden_size), std=1))

    # -- step API -------------------------------------------------------------------------------

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """Tokens [B, L] and puzzle ids [B] -> x [B, L+P, hidden]; computed once per request."""
        c = self.config
        x = self.embed_tokens(inputs.to(torch.int32))
        if c.puzzle_emb_ndim > 0:
            pe = self.puzzle_emb[puzzle_identifiers.long()].to(self.forward_dtype)  # [B, ndim]
            pad = c.P * c.hidden_size - pe.shape[-1]
            if pad > 0:  # the puzzle vector fills prefix token 0 (and on); the rest is zeros
                pe = torch.nn.functional.pad(pe, (0, pad))
            x = torch.cat((pe.view(-1, c.P, c.hidden_size), x), dim=-2)
        if c.pos_encodings == "learned":
            x = 0.707106781 * (x + self.embed_pos.embedding_weight.to(self.forward_dtype))
        return self.embed_scale * x

    def initial_carry(self, batch: int, device: torch.device | str | None = None):
        """Fresh (z_H, z_L) for `batch` rows: H_init / L_init broadcast to every position."""
        shape = (batch, self.config.total_len, self.config.hidden_size)
        z_H = self.H_init.to(self.forward_dtype).expand(shape).to(device or self.H_init.device).clone()
        z_L = self.L_init.to(self.forward_dtype).expand(shape).to(device or self.L_init.device).clone()
        return z_H, z_L

    def reset_rows(self, z_H: torch.Tensor, z_L: torch.Tensor, rows: torch.Tensor):
        """Reset the rows where the bool mask `rows` [B] is set to a fresh carry."""
        m = rows.view(-1, 1, 1)
        return (torch.where(m, self.H_init.to(z_H.dtype), z_H), torch.where(m, self.L_init.to(z_L.dtype), z_L))

    def act_step(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
        """One ACT (deep-supervision) step: the full recursion, then the output and Q heads."""
        cos_sin = self.rotary_emb() if self.config.pos_encodings in ("rope", "rope2d") else None
        z_H, z_L = self.recurse(x, z_H, z_L, cos_sin)
        logits = self.lm_head(z_H)[:, self.config.P:].to(torch.float32)
        q = self.q_head(z_H[:, 0]).to(torch.float32)  # read from prefix position 0
        return StepOutput(z_H, z_L, logits, q[..., 0], q[..., 1])

    def recurse(self, x, z_H, z_L, cos_sin):  # pragma: no cover - abstract
        raise NotImplementedError

    def halted(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor) -> StepOutput:
        return self.act_step(x, z_H, z_L)

    def num_parameters(self) -> int:
        """Trainable parameters, as the official trainer logs them (the puzzle table is a buffer)."""
        return sum(p.numel() for p in self.parameters())
