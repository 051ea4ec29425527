"""Model configuration: one pydantic model for TRM and HRM, readable from the official
`all_config.yaml` `arch:` block and from our own `config.json`."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    arch: Literal["trm", "hrm"]
    task: str | None = None  # "sudoku" | "maze" | "arc"; None for an official checkpoint with an unknown task
    seq_len: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    num_puzzle_identifiers: int = Field(default=1, ge=1)

    hidden_size: int = Field(gt=0)
    num_heads: int = Field(default=8, gt=0)
    expansion: float = 4.0
    H_cycles: int = Field(ge=1)
    L_cycles: int = Field(ge=1)
    H_layers: int = 0  # HRM only; TRM has a single network (L_level)
    L_layers: int = Field(ge=1)

    puzzle_emb_ndim: int = 0
    puzzle_emb_len: int = 16  # TRM: prefix length P (0 means ceil(ndim/hidden)); HRM always derives it
    pos_encodings: str = "rope"  # "rope" | "learned" | "rope2d" (ours, square grids) | anything else = none
    mlp_t: bool = False  # TRM-MLP: token mixing by an MLP over the sequence instead of attention
    grid_bias: bool = False  # ours: a learned 2D relative-position bias per attention head (square grids)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = Field(default=16, ge=1)
    forward_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"

    @model_validator(mode="after")
    def _prefix_has_an_embedding(self) -> ModelConfig:
        # The official defaults (puzzle_emb_ndim 0, puzzle_emb_len 16) size a 16-position prefix that nothing fills:
        # `embed` adds the prefix only from a puzzle embedding, so the first step would fail on mismatched shapes.
        if self.arch == "trm" and self.puzzle_emb_ndim == 0 and self.puzzle_emb_len > 0:
            raise ValueError(f"puzzle_emb_len={self.puzzle_emb_len} needs a puzzle embedding to fill that prefix, but "
                             "puzzle_emb_ndim is 0: set puzzle_emb_ndim > 0, or puzzle_emb_len 0 for no prefix")
        return self

    @property
    def P(self) -> int:
        """Number of puzzle-embedding prefix positions in front of the tokens."""
        if self.arch == "hrm" or self.puzzle_emb_len == 0:
            return math.ceil(self.puzzle_emb_ndim / self.hidden_size)
        return self.puzzle_emb_len

    @property
    def grid(self) -> tuple[int, int] | None:
        """(prefix, side) for attention's grid bias, or None when it is off."""
        if not self.grid_bias:
            return None
        side = math.isqrt(self.seq_len)
        if side * side != self.seq_len:
            raise ValueError(f"grid_bias needs a square seq_len, got {self.seq_len}")
        return self.P, side

    @property
    def total_len(self) -> int:
        return self.seq_len + self.P

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.forward_dtype]
