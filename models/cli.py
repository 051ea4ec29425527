"""Model commands of the `recursolve` CLI: `eval-tokens` and `convert`.

`app/cli.py` registers them at the top level (`register(app)`); `python -m models.cli` runs them
on their own. The work is done by plain functions (models.eval_tokens, models.checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from models.checkpoint import CheckpointError, convert_official, load_model
from models.eval_tokens import eval_tokens_files


def eval_tokens_command(
    checkpoint: Annotated[Path, typer.Option(help="Official checkpoint file (all_config.yaml beside it) "
                                                  "or one of our model folders.")],
    inputs: Annotated[Path, typer.Option(help=r"int tokens \[B, seq_len] as .npy.")],
    out: Annotated[Path, typer.Option(help="Output .npz.")],
    puzzle_id: Annotated[int, typer.Option(help="Puzzle identifier for every row.")] = 0,
    steps: Annotated[int, typer.Option(help="ACT steps to run (no early halting).")] = 16,
    dtype: Annotated[str | None, typer.Option(help="float32 | bfloat16 (default: the checkpoint's).")] = None,
    start_carry: Annotated[Path | None, typer.Option(help=r".npz with z_H, z_L \[B, seq_len+P, hidden].")] = None,
    task: Annotated[str | None, typer.Option(help="sudoku | maze | arc, when the checkpoint cannot tell.")] = None,
) -> None:
    r"""Run a model on token arrays for a fixed number of ACT steps and save every step's outputs.

    Writes logits \[steps, B, seq_len, vocab], q_halt_logits and q_continue_logits \[steps, B],
    preds \[B, seq_len] (argmax of the last step) and the final z_H, z_L (float32).
    """
    try:
        result = eval_tokens_files(checkpoint, inputs, out, puzzle_id=puzzle_id, steps=steps, dtype=dtype,
                                   start_carry=start_carry, task=task)
    except (CheckpointError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    steps_run, batch = result["q_halt_logits"].shape
    typer.echo(f"wrote {out}: {steps_run} steps x {batch} rows; final q_halt {result['q_halt_logits'][-1].round(3)}")


def convert_command(
    checkpoint: Annotated[Path, typer.Option(help="Official checkpoint file (all_config.yaml beside it).")],
    out: Annotated[Path, typer.Option(help="Output folder (model.safetensors + config.json).")],
    task: Annotated[str | None, typer.Option(help="sudoku | maze | arc (default: inferred).")] = None,
) -> None:
    """Convert an official TRM/HRM checkpoint into our safetensors folder format."""
    try:
        version = convert_official(checkpoint, out, task=task)
        config = load_model(out).config
    except (CheckpointError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"wrote {out} ({config.arch}, task {config.task}, hidden {config.hidden_size}, "
               f"seq_len {config.seq_len}); version {version}")


def register(parent: typer.Typer) -> None:
    """Add the model commands to `parent` as top-level commands."""
    parent.command("eval-tokens")(eval_tokens_command)
    parent.command("convert")(convert_command)


app = typer.Typer(help="recursolve model tools", no_args_is_help=True, add_completion=False)
register(app)

if __name__ == "__main__":
    app()
