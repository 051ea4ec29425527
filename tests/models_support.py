"""Shared helpers for the models tests: the official fixtures, writing checkpoints in the official
layout, and small random models."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import LoadedModel, ModelConfig, RecursiveModel, build_model, load_model

# ../shared relative to the repository root.
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"
FIXTURE_NAMES = ("trm_mlp_sudoku_fp32", "trm_mlp_sudoku_bf16", "trm_att_maze_fp32", "hrm_sudoku_fp32")

OFFICIAL_NAMES = {"trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                  "hrm": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"}
TASK_DATA = {"sudoku": "data/sudoku-extreme-1k-aug-1000", "maze": "data/maze-30x30-hard-1k",
             "arc": "data/arc1concept-aug-1000"}


def fixture_available(name: str) -> bool:
    return (FIXTURES / name / "step_0").exists() and (FIXTURES / name / "expected.npz").exists()


def require_fixture(name: str) -> None:
    if not fixture_available(name):
        pytest.skip(f"official fixture {name!r} not found under {FIXTURES} (the shared read-only fixtures "
                    "live in ../shared/fixtures/official beside the repository)")


@functools.cache
def load_fixture(name: str) -> tuple[LoadedModel, dict[str, np.ndarray]]:
    """The fixture's model (its own forward dtype) and expected.npz as a dict; cached per session."""
    require_fixture(name)
    loaded = load_model(FIXTURES / name / "step_0")
    with np.load(FIXTURES / name / "expected.npz", allow_pickle=False) as f:
        expected = {k: f[k] for k in f.files}
    expected["trace_levels"] = json.loads(str(expected["trace_levels"]))
    expected["meta"] = json.loads(str(expected["meta"]))
    return loaded, expected


def official_state_dict(model: RecursiveModel, prefix: str = "_orig_mod.model.inner.") -> dict[str, torch.Tensor]:
    """Our state_dict renamed and typed as the official trainer saves it."""
    out = {}
    for key, value in model.state_dict().items():
        if key in ("H_init", "L_init"):  # official: buffers in the forward dtype
            value = value.to(model.forward_dtype)
        out[prefix + ("puzzle_emb.weights" if key == "puzzle_emb" else key)] = value.detach().clone()
    return out


def official_arch_block(config: ModelConfig) -> dict:
    """The `arch:` block of all_config.yaml: no seq_len, vocab_size or num_puzzle_identifiers."""
    c = config
    loss = {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}
    arch = {"name": OFFICIAL_NAMES[c.arch], "loss": loss,
            "H_cycles": c.H_cycles, "L_cycles": c.L_cycles, "H_layers": c.H_layers, "L_layers": c.L_layers,
            "hidden_size": c.hidden_size, "num_heads": c.num_heads, "expansion": c.expansion,
            "puzzle_emb_ndim": c.puzzle_emb_ndim, "pos_encodings": c.pos_encodings,
            "halt_max_steps": c.halt_max_steps, "halt_exploration_prob": 0.1, "forward_dtype": c.forward_dtype}
    if c.arch == "trm":
        arch.update(mlp_t=c.mlp_t, puzzle_emb_len=c.puzzle_emb_len, no_ACT_continue=True)
    elif c.mlp_t:  # only the TRM repository's HRM copy has the MLP token-mixing option
        arch.update(name="recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1", mlp_t=True)
    return arch


def write_official(model: RecursiveModel, folder: Path, *, prefix: str = "_orig_mod.model.inner.",
                   name: str = "step_1234", data_path: str | None = None) -> Path:
    """Save `model` as the official trainer would: a raw torch.save'd state_dict + all_config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    c = model.config
    config = {"arch": official_arch_block(c), "data_paths": [data_path or TASK_DATA.get(c.task or "", "data/custom")],
              "global_batch_size": 768, "lr": 1e-4, "ema": True, "project_name": "test", "run_name": "test"}
    (folder / "all_config.yaml").write_text(yaml.dump(config))
    torch.save(official_state_dict(model, prefix), folder / name)
    return folder / name


def random_model(config: ModelConfig, seed: int = 0) -> RecursiveModel:
    """A model with random weights everywhere, including the parts the official init zeroes
    (Q-head, puzzle table), so that every parameter reaches the outputs."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        model.q_head.weight.normal_(0, 0.5)
        model.q_head.bias.normal_(0, 0.5)
        if config.puzzle_emb_ndim > 0:
            model.puzzle_emb.normal_(0, 1)
    return model


def random_inputs(config: ModelConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, config.vocab_size, (batch, config.seq_len), generator=g, dtype=torch.int32)
    ids = torch.arange(batch, dtype=torch.int32) % config.num_puzzle_identifiers
    return inputs, ids
