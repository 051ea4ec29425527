"""Save a nested training state (dicts / lists / tuples of tensors and plain values) as a folder of files,
none larger than `max_bytes`, and load it back.

Why: GPU runs go in chunks of under 10 minutes on machines that come and go, and the checkpoint is carried
between them in files of at most 16 MiB each. At hidden 512 the AdamW state alone is ~2x the weights (~55 MB
for a 7M-parameter TRM), so one torch.save file does not fit. Layout:

    <folder>/skeleton.pt        the state with every tensor replaced by {"__shard_tensor__": i}
    <folder>/index.json         per tensor: shape, dtype and which pieces (file, key) hold it
    <folder>/shard-00000.pt ... dicts of 1-D tensor pieces, each file <= max_bytes

Tensors larger than a shard are flattened and cut into pieces. Every file loads with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

MAX_SHARD_BYTES = 16 * 1024 * 1024
_REF = "__shard_tensor__"
_HEADROOM = 64 * 1024  # torch.save's zip container adds a few KiB per file and per record


def _strip(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return {_REF: len(tensors) - 1}
    if isinstance(obj, dict):
        return {k: _strip(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_strip(v, tensors) for v in obj)
    return obj


def _fill(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_REF}:
            return tensors[obj[_REF]]
        return {k: _fill(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_fill(v, tensors) for v in obj)
    return obj


def save_sharded(state: Any, folder: str | Path, max_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write `state` into `folder` (replaced atomically: a run killed mid-save keeps the previous one)."""
    folder = Path(folder)
    budget = max_bytes - _HEADROOM
    if budget <= 0:
        raise ValueError(f"max_bytes {max_bytes} is too small for a shard")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: list[torch.Tensor] = []
    skeleton = _strip(state, tensors)
    index: list[dict[str, Any]] = []
    shard: dict[str, torch.Tensor] = {}
    used, files = 0, 0

    def flush() -> None:
        nonlocal shard, used, files
        if shard:
            torch.save(shard, tmp / f"shard-{files:05d}.pt")
            files += 1
        shard, used = {}, 0

    for i, t in enumerate(tensors):
        flat = t.detach().cpu().reshape(-1)
        per = max(1, flat.element_size())
        if flat.numel() * per > budget - used:
            flush()  # a tensor that fits one file is never cut; a bigger one starts on a fresh file
        pieces = []
        step = budget // per
        for start in range(0, max(1, flat.numel()), step):
            if pieces:
                flush()
            key = f"{i}.{len(pieces)}"
            shard[key] = flat[start:start + step].clone()  # clone: a view would save the whole storage
            used += shard[key].numel() * per
            pieces.append([files, key])
        index.append({"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "pieces": pieces})
    flush()
    torch.save(skeleton, tmp / "skeleton.pt")
    (tmp / "index.json").write_text(json.dumps({"max_bytes": max_bytes, "files": files, "tensors": index}))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_sharded(folder: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The state `save_sharded` wrote, tensors on `map_location`."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    shards = [torch.load(folder / f"shard-{i:05d}.pt", map_location="cpu", weights_only=True)
              for i in range(index["files"])]
    tensors = []
    for entry in index["tensors"]:
        parts = [shards[f][key] for f, key in entry["pieces"]]
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        tensors.append(flat.reshape(entry["shape"]).to(map_location))
    skeleton = torch.load(folder / "skeleton.pt", map_location="cpu", weights_only=True)
    return _fill(skeleton, tensors)
