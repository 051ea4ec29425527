"""Loading and saving weights.

Two formats:
- official: a raw state_dict written by the official trainer (`step_N`, `checkpoint`), keys
  prefixed `_orig_mod.` and/or `model.`, with `all_config.yaml` beside it. Loaded with
  `torch.load(weights_only=True)`, so a file carrying pickled code is refused.
- ours: a folder with `model.safetensors` + `config.json`; the content hash is the model version.

Sizes the official config does not record (vocab, puzzle-table size, seq_len) are read off the
tensor shapes or the task.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from models.config import DTYPES, ModelConfig
from models.hrm import HRM
from models.recursive import RecursiveModel
from models.trm import TRM

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OFFICIAL_CONFIG_FILE = "all_config.yaml"

# Official task facts (reference §4): vocab size and sequence length per task.
TASK_VOCAB = {"sudoku": 11, "maze": 6, "arc": 12}
TASK_SEQ_LEN = {"sudoku": 81, "maze": 900, "arc": 900}

# Official `arch.name` values we implement -> our arch. The TRM repo's HRM copy is the same HRM.
OFFICIAL_ARCHS = {
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": "trm",
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": "hrm",
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": "hrm",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the problem and the file."""


@dataclass
class LoadedModel:
    model: RecursiveModel
    config: ModelConfig
    version: str  # content hash (first 16 hex digits of sha256)
    source: str  # "official" | "recursolve"
    path: Path


def confidence_temperature(folder: str | Path) -> float:
    """The temperature T fitted for a model folder (config.json `confidence_temperature`, training/calibrate.py):
    confidence = sigmoid(q_halt / T). 1.0 when absent, not a positive number, or not one of our folders."""
    try:
        config = json.loads((Path(folder) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return 1.0
    value = config.get("confidence_temperature", 1.0) if isinstance(config, dict) else 1.0
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


def build_model(config: ModelConfig) -> RecursiveModel:
    return {"trm": TRM, "hrm": HRM}[config.arch](config)


def load_model(path: str | Path, *, task: str | None = None, dtype: str | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load our folder format or an official checkpoint file; `dtype` overrides the forward dtype."""
    path = Path(path)
    if task is not None and task not in TASK_VOCAB:
        raise CheckpointError(f"unknown task {task!r}; use one of {sorted(TASK_VOCAB)}")
    if path.is_dir() and (path / WEIGHTS_FILE).exists():
        loaded = _load_ours(path)
    elif path.is_dir():
        raise CheckpointError(f"{path}: folder has no {WEIGHTS_FILE}; pass the official checkpoint file itself "
                              "(e.g. .../step_N) or one of our model folders")
    elif path.is_file():
        loaded = _load_official(path, task)
    else:
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if task is not None and loaded.config.task not in (None, task):
        raise CheckpointError(f"{path}: model was trained for task {loaded.config.task!r}, not {task!r}")
    if dtype is not None:
        if dtype not in DTYPES:
            raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        loaded = _with_dtype(loaded, dtype)
    loaded.model.to(device).eval()
    return loaded


# Config fields added after models were shipped, left out of config.json at their default: the version hashes
# config.json, so a model saved again by later code keeps the version its card cites (a shipped folder re-exported
# gained "grid_bias": false and a new version, with byte-identical weights).
LATER_FIELDS = ("grid_bias",)


def _omitted_at_default(config: ModelConfig) -> set[str]:
    fields = type(config).model_fields
    return {name for name in LATER_FIELDS if getattr(config, name) == fields[name].default}


def save_model(model: RecursiveModel, folder: str | Path, extra_config: dict | None = None) -> str:
    """Write `model.safetensors` + `config.json`; returns the version hash."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    cfg = model.config.model_dump(exclude=_omitted_at_default(model.config)) | (extra_config or {})
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return content_version(folder)


def content_version(folder: Path) -> str:
    h = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def convert_official(checkpoint: str | Path, out_folder: str | Path, task: str | None = None) -> str:
    """Convert an official checkpoint into our folder format; returns the new version hash."""
    loaded = _load_official(Path(checkpoint), task)
    # The source's content hash rather than its path: the same checkpoint converted from
    # anywhere gets the same version.
    return save_model(loaded.model, out_folder, {"converted_from": Path(checkpoint).name,
                                                 "source_version": loaded.version})


# -- ours --------------------------------------------------------------------------------------

def _load_ours(folder: Path) -> LoadedModel:
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.exists():
        raise CheckpointError(f"{folder}: missing {CONFIG_FILE} beside {WEIGHTS_FILE}")
    try:
        config = ModelConfig.model_validate_json(cfg_path.read_text())
    except ValidationError as e:
        raise CheckpointError(f"{cfg_path}: invalid model config: {e}") from e
    model = build_model(config)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as e:  # SafetensorError: truncated or not a safetensors file
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file: {e}") from e
    _load_state(model, state, folder / WEIGHTS_FILE)
    return LoadedModel(model, config, content_version(folder), "recursolve", folder)


# -- official ----------------------------------------------------------------------------------

def read_official_state(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict with `_orig_mod.` / `model.` / `inner.` prefixes stripped. Refuses pickled code."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: the file carries pickled objects other than tensors "
                              f"(weights_only=True): {str(e).splitlines()[0]}") from e
    except Exception as e:  # zip/format errors: not a torch checkpoint at all
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {e}") from e
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: expected a plain state_dict of tensors")
    state = {}
    for key, value in raw.items():
        while key.startswith("_orig_mod."):
            key = key.removeprefix("_orig_mod.")
        key = key.removeprefix("model.").removeprefix("inner.")
        state["puzzle_emb" if key == "puzzle_emb.weights" else key] = value
    return state


def _load_official(path: Path, task: str | None) -> LoadedModel:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    cfg_path = path.parent / OFFICIAL_CONFIG_FILE
    if not cfg_path.exists():
        raise CheckpointError(f"{path}: missing {OFFICIAL_CONFIG_FILE} beside the checkpoint (the official "
                              "trainer writes it only when wandb is on; recreate it from the run's arch config)")
    try:
        full_cfg = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_path}: not valid YAML: {e}") from e
    arch_cfg = full_cfg.get("arch") if isinstance(full_cfg, dict) else None
    if not isinstance(arch_cfg, dict):
        raise CheckpointError(f"{cfg_path}: no `arch:` block")
    name = arch_cfg.get("name")
    if name not in OFFICIAL_ARCHS:
        raise CheckpointError(f"{cfg_path}: unknown arch name {name!r}; supported: {sorted(OFFICIAL_ARCHS)}")
    state = read_official_state(path)
    for required in ("embed_tokens.embedding_weight", "lm_head.weight"):
        if required not in state:
            raise CheckpointError(f"{path}: missing key {required!r}: not a TRM/HRM checkpoint")

    vocab = state["embed_tokens.embedding_weight"].shape[0]
    # The task: named in a dataset folder name (e.g. sudoku-extreme-1k-aug-1000) and consistent with
    # the vocab, else from the vocab alone. Folder names only: a parent like /home/marc/ is no ARC hint.
    data_names = " ".join(Path(str(p)).name.lower() for p in full_cfg.get("data_paths") or [])
    inferred = next((t for t, v in TASK_VOCAB.items() if t in data_names and v == vocab), None)
    inferred = inferred or next((t for t, v in TASK_VOCAB.items() if v == vocab), None)
    if task is not None and TASK_VOCAB.get(task) not in (None, vocab):
        raise CheckpointError(f"{path}: vocab size {vocab} does not fit task {task!r} "
                              f"(expects {TASK_VOCAB[task]}); this checkpoint looks like a {inferred!r} model")
    task = task or inferred

    fields = {k: v for k, v in arch_cfg.items() if k not in ("name", "loss")}
    fields.update(arch=OFFICIAL_ARCHS[name], task=task, vocab_size=vocab,
                  num_puzzle_identifiers=state["puzzle_emb"].shape[0] if "puzzle_emb" in state else 1)
    fields["seq_len"] = _official_seq_len(state, fields, task, path)
    try:
        config = ModelConfig.model_validate(fields)
    except ValidationError as e:
        raise CheckpointError(f"{cfg_path}: arch config does not describe a valid model: {e}") from e
    model = build_model(config)
    _load_state(model, state, path)
    return LoadedModel(model, config, _file_hash(path), "official", path)


def _official_seq_len(state: dict, fields: dict, task: str | None, path: Path) -> int:
    mlp_t = state.get("L_level.layers.0.mlp_t.down_proj.weight")
    if mlp_t is not None:  # [seq_len + P, inter_t]
        probe = ModelConfig.model_validate(fields | {"seq_len": 1})
        return mlp_t.shape[0] - probe.P
    if task in TASK_SEQ_LEN:
        return TASK_SEQ_LEN[task]
    raise CheckpointError(f"{path}: cannot tell the sequence length: pass the task (sudoku, maze, arc)")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update((path.parent / OFFICIAL_CONFIG_FILE).read_bytes())
    return h.hexdigest()[:16]


def _load_state(model: RecursiveModel, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: state_dict does not match the {model.config.arch.upper()} config: "
                              f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                              f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{where}: shape mismatch for {key!r}: checkpoint {tuple(value.shape)}, "
                                  f"config expects {tuple(expected[key].shape)}")
    # Parameters stay float32 (cast per call); H_init/L_init keep their stored dtype until use.
    for key, value in state.items():
        if key in ("H_init", "L_init"):
            setattr(model, key, value.clone())
        else:
            expected[key].copy_(value.to(expected[key].dtype))


def _with_dtype(loaded: LoadedModel, dtype: str) -> LoadedModel:
    if loaded.config.forward_dtype == dtype:
        return loaded
    config = loaded.config.model_copy(update={"forward_dtype": dtype})
    model = build_model(config)
    model.load_state_dict(loaded.model.state_dict())
    return LoadedModel(model, config, loaded.version, loaded.source, loaded.path)
