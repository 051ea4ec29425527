"""Checkpoint loading is safe and says what is wrong; our format round-trips with a stable version."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from models import CheckpointError, ModelConfig, convert_official, load_model, save_model
from models_support import FIXTURES, random_inputs, random_model, require_fixture, write_official

CONFIG = ModelConfig(arch="trm", task="sudoku", seq_len=81, vocab_size=11, hidden_size=32, num_heads=2,
                     H_cycles=2, L_cycles=2, L_layers=1, puzzle_emb_ndim=32, puzzle_emb_len=4,
                     num_puzzle_identifiers=3, forward_dtype="float32")


@pytest.fixture
def official(tmp_path: Path) -> Path:
    """A small valid official checkpoint (keys `_orig_mod.model.inner.`, all_config.yaml beside)."""
    return write_official(random_model(CONFIG), tmp_path / "run")


def _outputs(model, steps: int = 2):
    inputs, ids = random_inputs(model.config, 3)
    with torch.inference_mode():
        x = model.embed(inputs, ids)
        z_H, z_L = model.initial_carry(3)
        for _ in range(steps):
            out = model.act_step(x, z_H, z_L)
            z_H, z_L = out.z_H, out.z_L
    return out


# -- unsafe files -------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle"])
def test_pickled_code_payload_is_refused_and_not_run(official: Path, tmp_path: Path, container: str):
    marker = tmp_path / "pwned"
    state = torch.load(official, weights_only=True)
    state["_orig_mod.model.inner.extra"] = _Payload(marker)
    if container == "torch_zip":
        torch.save(state, official)
    else:  # a raw pickle stream, as very old torch.save wrote
        with official.open("wb") as f:
            pickle.dump(state, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused|not a readable"):
        load_model(official)
    assert not marker.exists(), "the pickled payload was executed"


def test_not_a_checkpoint_is_refused(official: Path):
    official.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model(official)


def test_pickled_non_tensor_values_are_refused(official: Path):
    torch.save({"_orig_mod.model.inner.H_init": [1, 2, 3]}, official)
    with pytest.raises(CheckpointError, match="plain state_dict of tensors"):
        load_model(official)


# -- clear errors -------------------------------------------------------------------------------

def test_missing_all_config_yaml(official: Path):
    (official.parent / "all_config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"missing all_config\.yaml"):
        load_model(official)


def test_unknown_arch_name(official: Path):
    cfg_path = official.parent / "all_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["arch"]["name"] = "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1"
    cfg_path.write_text(yaml.dump(cfg))
    with pytest.raises(CheckpointError, match=r"unknown arch name 'recursive_reasoning\.trm_singlez@"):
        load_model(official)


def test_config_without_arch_block(official: Path):
    (official.parent / "all_config.yaml").write_text("lr: 0.0001\n")
    with pytest.raises(CheckpointError, match="no `arch:` block"):
        load_model(official)


def test_missing_keys_are_named(official: Path):
    state = torch.load(official, weights_only=True)
    del state["_orig_mod.model.inner.L_level.layers.0.mlp.down_proj.weight"]
    torch.save(state, official)
    with pytest.raises(CheckpointError, match=r"missing keys \['L_level\.layers\.0\.mlp\.down_proj\.weight'\]"):
        load_model(official)


def test_unexpected_keys_are_named(official: Path):
    state = torch.load(official, weights_only=True)
    state["_orig_mod.model.inner.H_level.layers.0.mlp.down_proj.weight"] = torch.zeros(32, 256)
    torch.save(state, official)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['H_level\.layers\.0\.mlp\.down_proj\.weight'\]"):
        load_model(official)


def test_shape_mismatch_is_named(official: Path):
    cfg_path = official.parent / "all_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["arch"]["expansion"] = 16  # SwiGLU width 256 -> 512: no longer the weights' shape
    cfg_path.write_text(yaml.dump(cfg))
    expected = r"shape mismatch for '.*gate_up_proj\.weight': checkpoint \(512, 32\), config expects \(1024, 32\)"
    with pytest.raises(CheckpointError, match=expected):
        load_model(official)


def test_wrong_task(official: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match=r"vocab size 11 does not fit task 'maze'.*'sudoku'"):
        load_model(official, task="maze")
    with pytest.raises(CheckpointError, match="unknown task 'chess'"):
        load_model(official, task="chess")
    ours = tmp_path / "ours"
    save_model(load_model(official).model, ours)
    with pytest.raises(CheckpointError, match="trained for task 'sudoku', not 'arc'"):
        load_model(ours, task="arc")
    assert load_model(ours, task="sudoku").config.task == "sudoku"


def test_attention_model_without_task_needs_one(tmp_path: Path):
    """Without mlp_t weights the sequence length comes from the task; an unknown task is an error."""
    config = CONFIG.model_copy(update={"task": None, "vocab_size": 7, "seq_len": 20})
    path = write_official(random_model(config), tmp_path / "run", data_path="data/my-own-puzzles")
    with pytest.raises(CheckpointError, match="cannot tell the sequence length"):
        load_model(path)


def test_missing_paths_and_folders(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"folder has no model\.safetensors"):
        load_model(tmp_path / "empty")


def test_our_format_errors(official: Path, tmp_path: Path):
    folder = tmp_path / "ours"
    save_model(load_model(official).model, folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_model(folder)
    save_model(load_model(official).model, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(folder)
    save_model(load_model(official).model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_size"] = 48
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(folder)


# -- our format ---------------------------------------------------------------------------------

def test_our_format_round_trip_and_stable_version(official: Path, tmp_path: Path):
    model = load_model(official).model
    v1 = save_model(model, tmp_path / "a")
    v2 = save_model(model, tmp_path / "b")
    assert v1 == v2 and len(v1) == 16, "the version is a content hash: same content, same version"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors"]

    loaded = load_model(tmp_path / "a")
    assert (loaded.source, loaded.version, loaded.config) == ("recursolve", v1, model.config)
    for got, want in zip(_outputs(loaded.model), _outputs(model), strict=True):
        assert torch.equal(got, want)
    assert load_model(tmp_path / "a").version == v1  # reading does not change it

    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-3
    assert save_model(model, tmp_path / "c") != v1, "different weights must give a different version"
    assert save_model(load_model(official).model, tmp_path / "d", extra_config={"note": "x"}) != v1


def test_dtype_override_keeps_weights(official: Path):
    bf16 = load_model(official, dtype="bfloat16")
    assert bf16.model.forward_dtype == torch.bfloat16 and bf16.config.forward_dtype == "bfloat16"
    assert bf16.version == load_model(official).version
    assert _outputs(bf16.model).logits.dtype == torch.float32
    with pytest.raises(CheckpointError, match="unknown dtype"):
        load_model(official, dtype="float8")


def test_convert_official(official: Path, tmp_path: Path):
    v1 = convert_official(official, tmp_path / "conv1")
    # The same checkpoint converted from another place gets the same version.
    other = tmp_path / "elsewhere" / "run"
    shutil.copytree(official.parent, other)
    assert convert_official(other / official.name, tmp_path / "conv2") == v1
    converted = load_model(tmp_path / "conv1")
    original = load_model(official)
    assert converted.config == original.config
    cfg = json.loads((tmp_path / "conv1" / "config.json").read_text())
    assert cfg["source_version"] == original.version and cfg["converted_from"] == official.name
    for got, want in zip(_outputs(converted.model), _outputs(original.model), strict=True):
        assert torch.equal(got, want)


def test_convert_fixture_keeps_outputs(tmp_path: Path):
    require_fixture("hrm_sudoku_fp32")
    src = FIXTURES / "hrm_sudoku_fp32" / "step_0"
    convert_official(src, tmp_path / "hrm", task="sudoku")
    a, b = load_model(tmp_path / "hrm"), load_model(src)
    assert a.config == b.config and a.config.task == "sudoku"
    for got, want in zip(_outputs(a.model, 1), _outputs(b.model, 1), strict=True):
        assert torch.equal(got, want)


def test_task_inference_from_dataset_name_and_vocab(tmp_path: Path):
    model = random_model(CONFIG)
    # a parent folder that happens to contain "arc" is no hint; the vocab (11) says Sudoku
    path = write_official(model, tmp_path / "a", data_path="/home/marc/data/my-set")
    assert load_model(path).config.task == "sudoku"
    path = write_official(model, tmp_path / "b", data_path="data/sudoku-extreme-1k-aug-1000")
    assert load_model(path).config.task == "sudoku"


@pytest.mark.parametrize("name", ["trm-mlp-sudoku", "hrm-sudoku", "trm-att-maze", "trm-mlp-maze"])
def test_a_shipped_model_saved_again_keeps_its_version(name, tmp_path):
    """What the cards' export commands do: save the loaded model (and config.json's extra keys) again. A config field
    added later (grid_bias) used to appear in config.json at its default and change the version the card cites."""
    folder = Path(__file__).resolve().parent.parent / "weights" / name
    loaded = load_model(folder)
    extra = {k: v for k, v in json.loads((folder / "config.json").read_text()).items()
             if k not in loaded.config.model_dump()}
    assert save_model(loaded.model, tmp_path, extra) == loaded.version
