"""`recursolve`: serve the API, solve a puzzle from the command line, and the models' own commands.

    recursolve serve [--host H] [--port P]
    recursolve solve PUZZLE|FILE|- [--task sudoku] [--url http://host:port | in-process] [--max-steps N] ...
    recursolve eval-tokens ... / recursolve convert ...   (from models/cli.py, when present)
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(name="recursolve", help="Tiny recursive reasoning models (TRM/HRM/PTRM) behind HTTP.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: RECURSOLVE_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: RECURSOLVE_PORT or 8000).")] = None,
    api_workers: Annotated[int | None, typer.Option(
        help="API processes in front of the engine core (default: RECURSOLVE_API_WORKERS, else half the cores, "
             "1 to 8, or three quarters, 1 to 32, when a GPU serves the models).")] = None,
    engines: Annotated[int | None, typer.Option(
        min=1, max=16, help="Engine-core processes, each with every model and its own batch rows; API process i "
                            "talks to engine core i mod N (default: RECURSOLVE_ENGINES, else 1).")] = None,
) -> None:
    """Start the server: engine-core processes running the models (one unless --engines), API processes in front."""
    from app.logs import configure_logging
    from app.serve import serve as run_server
    from app.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)  # JSON lines, one format for every process and uvicorn's loggers
    run_server(settings, host or settings.host, port if port is not None else settings.port, api_workers, engines)


def _read_puzzle(puzzle: str) -> Any:
    """A literal puzzle, a file path, or '-' for stdin; JSON text (ARC tasks, grids) is parsed as JSON."""
    if puzzle == "-":
        text = sys.stdin.read()
    elif len(puzzle) < 4096 and Path(puzzle).is_file():
        text = Path(puzzle).read_text()
    else:
        text = puzzle
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    return text if "\n" in stripped else stripped


async def _solve_in_process(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import httpx

    from app.main import create_app
    from app.settings import get_settings

    fastapi_app = create_app(get_settings())
    async with fastapi_app.router.lifespan_context(fastapi_app):
        try:
            await fastapi_app.state.runtime.wait_ready()
        except RuntimeError as e:  # no model loaded: an error (exit 2) said in one line, as a server says it
            return 503, {"error": {"code": "not_ready", "message": f"loading models failed: {e}"}}
        transport = httpx.ASGITransport(app=fastapi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process", timeout=None) as client:
            r = await client.post("/v1/solve", json=body)
            return r.status_code, r.json()


@app.command()
def solve(
    puzzle: Annotated[str, typer.Argument(help="The puzzle text, a file holding it (text or JSON), or '-' for stdin.")],
    task: Annotated[str | None, typer.Option(help="sudoku, maze or arc (default: sudoku, or the --model's task).")
                    ] = None,
    model: Annotated[str | None, typer.Option(help="Served model name (default: the task's default).")] = None,
    url: Annotated[str | None, typer.Option(
        envvar="RECURSOLVE_URL", help="A running server, e.g. http://127.0.0.1:8000. Without it the models are "
                                      "loaded in this process (from RECURSOLVE_* settings / weights/).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="ACT step limit.")] = None,
    halting: Annotated[str | None, typer.Option(
        help="auto (the default for Sudoku and mazes), q_head, max_steps or verifier.")] = None,
    trajectories: Annotated[int | None, typer.Option("--trajectories", "-k", help="PTRM trajectories K.")] = None,
    noise: Annotated[float | None, typer.Option(help="PTRM noise scale.")] = None,
    selection: Annotated[str | None, typer.Option(help="best_q, vote or verifier_first.")] = None,
    seed: Annotated[int | None, typer.Option(help="PTRM noise seed.")] = None,
    deadline_ms: Annotated[int | None, typer.Option(help="Time budget in ms.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Skip the result cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole JSON response.")] = False,
) -> None:
    """Solve one puzzle and print the answer (exit status 0 verified, 1 unverified, 2 error)."""
    options = {"max_steps": max_steps, "halting": halting, "trajectories": trajectories, "noise": noise,
               "selection": selection, "seed": seed, "deadline_ms": deadline_ms, "cache": False if no_cache else None}
    if task is None and model is None:
        task = "sudoku"
    body: dict[str, Any] = {"task": task, "model": model, "puzzle": _read_puzzle(puzzle),
                            "options": {k: v for k, v in options.items() if v is not None}}
    body = {k: v for k, v in body.items() if v is not None}
    if url:
        import httpx

        try:
            r = httpx.post(url.rstrip("/") + "/v1/solve", json=body, timeout=None)
        except httpx.HTTPError as e:
            typer.echo(f"cannot reach {url}: {e}", err=True)
            raise typer.Exit(2) from e
        try:
            status, data = r.status_code, r.json()
        except ValueError:  # a proxy's HTML page, a plain-text 500: an error (exit 2), not an unverified answer
            status = r.status_code if r.status_code != 200 else 502
            data = {"error": {"code": "bad_response", "message": f"{url} answered {r.status_code} with a body "
                                                                 f"that is not JSON: {r.text[:200]!r}"}}
    else:
        os.environ.setdefault("RECURSOLVE_LOG_LEVEL", "warning")
        # One puzzle: a compile of every model (a minute or more on CUDA) would cost more than it saves.
        os.environ.setdefault("RECURSOLVE_COMPILE", "false")
        status, data = asyncio.run(_solve_in_process(body))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif status != 200:
        err = data.get("error", {})
        where = f" (at {err['location']})" if err.get("location") else ""
        typer.echo(f"error {status} {err.get('code')}: {err.get('message')}{where}", err=True)
    else:
        typer.echo(data["answer_text"] if data["answer_text"] is not None else "(no answer)")
        typer.echo(f"verified={data['verified']} confidence={data['confidence']} steps={data['steps']} "
                   f"halted_by={data['halted_by']} model={data['model']['name']} "
                   f"total_ms={data['timings']['total_ms']}", err=True)
    if status != 200:
        raise typer.Exit(2)
    if not data["verified"]:
        raise typer.Exit(1)


def _register_model_commands() -> None:
    """models/cli.py's commands (eval-tokens, convert) become top-level `recursolve` commands.

    Only when the command line runs, never at import: `recursolve serve` spawns its API processes, and a spawned
    child imports the parent's main module (this one) again; registering here would load torch into every API
    process (~0.4 GB each, and seconds of start-up) though none of them runs a model."""
    if importlib.util.find_spec("models.cli") is None:
        return
    importlib.import_module("models.cli").register(app)


def main() -> None:
    _register_model_commands()
    app()


if __name__ == "__main__":
    main()
