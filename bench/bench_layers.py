"""`--layers` for the benchmarks that measure in named layers (api_layers.py, engine_overhead.py): run a subset."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_layers_argument(ap: argparse.ArgumentParser, layers: Sequence[str]) -> None:
    ap.add_argument("--layers", default=",".join(layers), help=f"comma-separated, of {','.join(layers)}")


def chosen_layers(ap: argparse.ArgumentParser, args: argparse.Namespace, layers: Sequence[str]) -> set[str]:
    """The layers `--layers` names; an unknown one ends the run with argparse's usage error."""
    chosen = set(args.layers.split(","))
    if not chosen <= set(layers):
        ap.error(f"--layers: unknown {', '.join(sorted(chosen - set(layers)))}")
    return chosen
