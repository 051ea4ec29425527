"""TRM: Tiny Recursive Model (Jolicoeur-Martineau, 2025).

One small network (`L_level`) is reused for both updates. z_H is the current answer, z_L the
reasoning state. One ACT step runs H_cycles x (L_cycles updates of z_L, then one of z_H):

    z_L <- net(z_L, z_H + x)     (L_cycles times)
    z_H <- net(z_H, z_L)         (x is not injected)

Only the last H-cycle carries gradient during training (deep supervision with a 1-step
gradient), so the first H_cycles-1 run under no_grad, as the official code does.
"""

from __future__ import annotations

import torch

from models.config import ModelConfig
from models.layers import Block, ReasoningModule
from models.recursive import RecursiveModel


class TRM(RecursiveModel):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.L_level = ReasoningModule([
            Block(c.hidden_size, c.num_heads, c.expansion, c.rms_norm_eps, mlp_t=c.mlp_t, total_len=c.total_len,
                  grid=c.grid)
            for _ in range(c.L_layers)
        ])

    def recurse(self, x, z_H, z_L, cos_sin):
        c = self.config
        with torch.no_grad():
            for _ in range(c.H_cycles - 1):
                for _ in range(c.L_cycles):
                    z_L = self.L_level(z_L, z_H + x, cos_sin)  # (z_H + x) first: bf16 association matters
                z_H = self.L_level(z_H, z_L, cos_sin)
        for _ in range(c.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.L_level(z_H, z_L, cos_sin)
        return z_H, z_L

    def halted(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """TRM halts when sigmoid(q_halt) > 0.5 (no_ACT_continue, every published config)."""
        return q_halt > 0
