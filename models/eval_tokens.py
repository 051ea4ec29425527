"""Run a model on raw token arrays for a fixed number of ACT steps, with no halting.

This is the parity tool: the same loop as the official evaluation (`halt_max_steps` steps, every
row to the end), writing every step's heads so the output can be compared array by array with
the official code's (the fixtures' expected.npz uses the same names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_model
from models.recursive import RecursiveModel


@torch.inference_mode()
def eval_tokens(model: RecursiveModel, inputs: np.ndarray, *, puzzle_ids: int | np.ndarray = 0, steps: int = 16,
                start_carry: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run `steps` ACT steps on `inputs` [B, seq_len] and collect every step's outputs.

    Returns logits [steps, B, seq_len, vocab], q_halt_logits / q_continue_logits [steps, B] (float32),
    preds [B, seq_len] (argmax of the last step's logits), and the final carry z_H, z_L
    [B, seq_len+P, hidden] as float32. `start_carry` replaces the fresh carry (H_init / L_init).
    """
    c = model.config
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or inputs.shape[1] != c.seq_len or not np.issubdtype(inputs.dtype, np.integer):
        raise ValueError(f"inputs must be integer tokens [B, {c.seq_len}], got {inputs.dtype} {list(inputs.shape)}")
    if inputs.size and (inputs.min() < 0 or inputs.max() >= c.vocab_size):
        raise ValueError(f"tokens must lie in [0, {c.vocab_size}), got [{inputs.min()}, {inputs.max()}]")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    batch = inputs.shape[0]
    ids = np.broadcast_to(np.asarray(puzzle_ids, dtype=np.int64), (batch,))
    if ids.min() < 0 or ids.max() >= c.num_puzzle_identifiers:
        raise ValueError(f"puzzle id out of range [0, {c.num_puzzle_identifiers})")

    device = next(model.parameters()).device
    x = model.embed(torch.from_numpy(inputs.astype(np.int32)).to(device), torch.from_numpy(ids.copy()).to(device))
    if start_carry is None:
        z_H, z_L = model.initial_carry(batch, device=device)
    else:
        shape = (batch, c.total_len, c.hidden_size)
        for name, z in zip(("z_H", "z_L"), start_carry, strict=True):
            if tuple(z.shape) != shape:
                raise ValueError(f"start carry {name} must have shape {list(shape)}, got {list(z.shape)}")
        z_H, z_L = (torch.from_numpy(np.asarray(z, dtype=np.float32)).to(device, model.forward_dtype)
                    for z in start_carry)

    logits, q_halt, q_continue = [], [], []
    for _ in range(steps):
        out = model.act_step(x, z_H, z_L)
        z_H, z_L = out.z_H, out.z_L
        logits.append(out.logits.cpu())
        q_halt.append(out.q_halt.cpu())
        q_continue.append(out.q_continue.cpu())
    return {
        "logits": torch.stack(logits).float().numpy(),
        "q_halt_logits": torch.stack(q_halt).float().numpy(),
        "q_continue_logits": torch.stack(q_continue).float().numpy(),
        "preds": logits[-1].argmax(-1).numpy(),
        "z_H": z_H.float().cpu().numpy(),
        "z_L": z_L.float().cpu().numpy(),
        "puzzle_identifiers": ids.astype(np.int32),
    }


def eval_tokens_files(checkpoint: str | Path, inputs: str | Path, out: str | Path, *, puzzle_id: int = 0,
                      steps: int = 16, dtype: str | None = None, start_carry: str | Path | None = None,
                      task: str | None = None) -> dict[str, np.ndarray]:
    """File-level `recursolve eval-tokens`: load, run, write `out` (.npz); returns the arrays.

    `checkpoint` is an official checkpoint file (all_config.yaml beside it) or one of our model
    folders. `dtype` defaults to the checkpoint's own forward dtype (what the official evaluation
    uses), so parity checks compare like with like.
    """
    loaded = load_model(checkpoint, task=task, dtype=dtype)
    tokens = np.load(inputs, allow_pickle=False)
    carry = None
    if start_carry is not None:
        with np.load(start_carry, allow_pickle=False) as f:
            missing = {"z_H", "z_L"} - set(f.files)
            if missing:
                raise ValueError(f"{start_carry}: missing arrays {sorted(missing)} (need z_H and z_L)")
            carry = (f["z_H"], f["z_L"])
    result = eval_tokens(loaded.model, tokens, puzzle_ids=puzzle_id, steps=steps, start_carry=carry)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:  # a file object: np.savez would append ".npz" to a bare path
        np.savez(f, **result)
    return result
