"""Training run configuration (a JSON file or CLI flags): the model config plus the optimisation recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # run name: runs/<name>/ and, at export, weights/<name>/
    model: dict[str, Any]  # models.ModelConfig fields (seq_len / vocab_size default to the dataset's)
    data_dir: str  # official layout root with train/ (make-data writes it)
    runs_dir: str = "runs"

    batch_size: int = Field(default=64, gt=0)  # rows of the persistent batch
    lr: float = 1e-3
    lr_warmup_steps: int = 200
    lr_min_ratio: float = 1.0  # 1.0 = constant after warmup (every published config); < 1 = cosine to max_steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 = off; the official trainer does not clip, our LRs are ~10x larger
    ema_rate: float = 0.999  # 0 = no EMA
    loss: Literal["stablemax", "softmax"] = "stablemax"
    halt_exploration_prob: float = 0.1
    hrm_q_bootstrap: bool = True  # HRM: q_continue target from one extra no-grad step (official)
    augment: bool = True  # fresh official augmentation of every example drawn
    # learned position embeddings start as row / column (/ box) indicators (trainer.init_grid_positions)
    pos_init: Literal["default", "grid", "sudoku_grid"] = "default"
    # "zero": attention output projections start at zero (trainer.zero_attention_outputs); training init only
    attn_out_init: Literal["lecun", "zero"] = "lecun"
    grid_bias_lr_scale: float = Field(default=10.0, gt=0)  # lr of attention's grid-bias tables = lr x this

    max_steps: int = 100_000
    max_minutes: float | None = None  # stop cleanly (checkpoint + EMA model) at this wall-clock budget
    log_every: int = 10
    checkpoint_every_minutes: float = 5.0
    # every file of the checkpoint folder stays under this, so it can be carried between machines (16 MiB)
    checkpoint_shard_mib: float = Field(default=16.0, gt=0.07)
    eval_every_minutes: float = 10.0  # quick held-out check of the EMA model (0 = off)
    eval_dir: str | None = None  # official layout root with test/ for the quick check
    eval_size: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1  # torch intra-op threads on CPU (None = torch default)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)
