"""HRM: Hierarchical Reasoning Model (Wang et al., 2025).

Two networks: a slow high-level module (H_level, state z_H) and a fast low-level one
(L_level, state z_L). One ACT step runs H_cycles x (L_cycles z_L updates + one z_H update):

    z_L <- L_level(z_L, z_H + x)
    z_H <- H_level(z_H, z_L)

Everything but the final L and H update runs under no_grad (the 1-step gradient).
`mlp_t` (token mixing by an MLP over the sequence, as in the TRM repository's HRM copy) is
supported; sapientinc's HRM always uses attention.
"""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.layers import Block, ReasoningModule
from models.recursive import RecursiveModel


class HRM(RecursiveModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config

        def level(n: int) -> ReasoningModule:
            return ReasoningModule([Block(c.hidden_size, c.num_heads, c.expansion, c.rms_norm_eps,
                                          mlp_t=c.mlp_t, total_len=c.total_len, grid=c.grid) for _ in range(n)])

        self.H_level = level(c.H_layers)
        self.L_level = level(c.L_layers)

    def recurse(self, x, z_H, z_L, cos_sin):
        c = self.config
        with torch.no_grad():
            for h in range(c.H_cycles):
                last_h = h == c.H_cycles - 1
                for l in range(c.L_cycles):
                    if not (last_h and l == c.L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin)
                if not last_h:
                    z_H = self.H_level(z_H, z_L, cos_sin)
        z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin)
        return z_H, z_L

    def halted(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """HRM halts when the Q-head values halting above continuing."""
        return q_halt > q_continue
