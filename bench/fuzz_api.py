"""Bounded schemathesis pass against a real server on 127.0.0.1 serving tiny random models (sudoku, maze, arc).

    python bench/fuzz_api.py [--max-examples 50] [--time-limit 240] [--out bench/results/fuzz_api.txt]

Starts `uvicorn` with the same options `recursolve serve` uses (app/api/server_options.py), runs
`schemathesis run` over every operation of /openapi.json with every check (5xx, response schema conformance,
status codes, content types, headers, negative data rejected, undeclared methods) but positive_data_acceptance:
a schema-valid body is not always a valid puzzle (`"puzzle": {}`, neither task nor model), which no JSON
schema can say, so those 422s are right. Exits non-zero on any failure. Loopback only, bounded in examples per
operation and in wall time; needs `pip install schemathesis` (the `fuzz` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = """
import sys, uvicorn
sys.path.insert(0, {tests!r})
from app_engine_support import save_random, tiny_config
from models import build_model, save_model
from app.api.server_options import uvicorn_options
from app.main import create_app
from app.settings import ModelSpec, Settings
from pathlib import Path
root = Path({root!r})
for task, cfg in (("maze", tiny_config(task="maze", seq_len=100, vocab_size=6)),
                  ("arc", tiny_config(task="arc", seq_len=900, vocab_size=12))):
    save_model(build_model(cfg), root / task)
specs = [ModelSpec(name="sudoku", task="sudoku", path=save_random(root / "sudoku"), batch_rows=8),
         ModelSpec(name="maze", task="maze", path=root / "maze", batch_rows=4),
         ModelSpec(name="arc", task="arc", path=root / "arc", batch_rows=4)]
# Small caps and deadlines keep fuzzed requests cheap; they are what is being checked, not bypassed.
settings = Settings(weights_dir=root, log_level="warning", default_deadline_ms=2000, deadline_ms_cap=5000,
                    max_steps_cap=64, row_steps_cap=256, batch_row_steps_cap=1024, max_batch_items=8)
uvicorn.Server(uvicorn.Config(create_app(settings, specs), **uvicorn_options(settings, host="127.0.0.1",
                                                                           port={port}))).run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"server at {base} not ready within {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=50, help="examples per operation")
    ap.add_argument("--time-limit", type=float, default=240.0, help="seconds for the schemathesis run")
    # coverage: off by default, schemathesis 4.32.5 + hypothesis 6.170 crash in it (hypothesis lambda_sources)
    ap.add_argument("--phases", default="examples,fuzzing,stateful", help="schemathesis phases")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        server = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(REPO / "tests"), root=root,
                                                                       port=port)], env=env)
        try:
            wait_ready(base)
            cmd = [str(Path(sys.executable).parent / "schemathesis"), "--no-color", "run", f"{base}/openapi.json",
                   "--checks", "all", "--exclude-checks", "positive_data_acceptance",
                   "--max-examples", str(args.max_examples), "--workers", "2", "--phases", args.phases,
                   "--request-timeout", "10", "--generation-deterministic",
                   "--suppress-health-check", "all"]
            print("+", " ".join(cmd), flush=True)
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time_limit, cwd=root)
                report, rc = run.stdout + run.stderr, run.returncode
            except subprocess.TimeoutExpired as e:
                report, rc = f"{e.stdout or ''}\nTIMED OUT after {args.time_limit:.0f} s", 124
            print(report)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(report)
            return rc
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
