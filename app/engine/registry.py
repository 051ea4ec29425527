"""Served models: weights + backend + executor + codec for each entry of the models list."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.backends import Backend, make_backend
from app.engine.executor import Executor
from app.settings import ModelSpec
from models import ModelConfig
from puzzles import Codec, get_codec

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
IDENTIFIERS_FILE = "identifiers.json"


@dataclass
class ServedModel:
    name: str
    task: str
    spec: ModelSpec
    backend: Backend
    executor: Executor
    codec: Codec
    card: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, int] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.backend.loaded.config

    @property
    def version(self) -> str:
        return self.backend.loaded.version

    def puzzle_identifier(self, puzzle: Any) -> int:
        """The row of the model's puzzle-embedding table for this puzzle.

        Sudoku and maze models have one shared embedding (0). ARC models learn one per training
        task: the task `id` is looked up in the model's identifiers.json; an unknown task gets 0
        (the official "<blank>" identifier), which is what the official evaluator does too.
        """
        task_id = getattr(puzzle, "task_id", None)
        if task_id is None or not self.identifiers:
            return 0
        ident = self.identifiers.get(task_id, 0)
        return ident if ident < self.config.num_puzzle_identifiers else 0

    def info(self, *, default: bool) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": self.name,
            "task": self.task,
            "default_for_task": default,
            "architecture": cfg.arch,
            "parameters": self.backend.loaded.model.num_parameters(),
            "version": self.version,
            "source": self.backend.loaded.source,
            **self.backend.describe(),
            "config": {"hidden_size": cfg.hidden_size, "H_cycles": cfg.H_cycles, "L_cycles": cfg.L_cycles,
                       "L_layers": cfg.L_layers, "H_layers": cfg.H_layers, "mlp_t": cfg.mlp_t,
                       "seq_len": cfg.seq_len, "halt_max_steps": cfg.halt_max_steps},
            "accuracy": self.card.get("accuracy", self.card.get("metrics")),
            "card": self.card or None,
            "engine": self.executor.stats(),
        }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _identifiers(folder: Path) -> dict[str, int]:
    """identifiers.json is a list of names indexed by identifier (the official layout) or a name -> id map."""
    data = _read_json(folder / IDENTIFIERS_FILE) if folder.is_dir() else None
    if isinstance(data, list):
        return {str(name): i for i, name in enumerate(data)}
    if isinstance(data, dict):
        return {str(k): int(v) for k, v in data.items()}
    return {}


def load_served_model(spec: ModelSpec) -> ServedModel:
    backend = make_backend(spec.path, backend=spec.backend, device=spec.device, dtype=spec.dtype, task=spec.task)
    folder = Path(spec.path) if Path(spec.path).is_dir() else Path(spec.path).parent
    card = _read_json(folder / CARD_FILE)
    executor = Executor(spec.name, backend, batch_rows=spec.batch_rows, max_queue_rows=spec.max_queue_rows)
    return ServedModel(name=spec.name, task=spec.task, spec=spec, backend=backend, executor=executor,
                       codec=get_codec(spec.task), card=card if isinstance(card, dict) else {},
                       identifiers=_identifiers(folder))


def default_per_task(models: dict[str, ServedModel]) -> dict[str, str]:
    """Default model per task: the first TRM serving it (in spec order), else the first model."""
    defaults: dict[str, str] = {}
    for m in models.values():
        if m.task not in defaults or (m.config.arch == "trm" and models[defaults[m.task]].config.arch != "trm"):
            defaults[m.task] = m.name
    return defaults
