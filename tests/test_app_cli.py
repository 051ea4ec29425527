"""`recursolve solve`: exit status 0 verified, 1 unverified, 2 error; an error is never read as an unverified
answer, whether the models cannot load in-process or a server (or a proxy before it) answers something else."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app as cli_app
from app_engine_support import SOLUTION


def test_models_that_cannot_load_are_an_error_not_an_unverified_answer(tmp_path: Path, monkeypatch) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: broken\n    task: sudoku\n    path: {tmp_path / 'missing'}\n")
    monkeypatch.setenv("RECURSOLVE_MODELS_FILE", str(models))
    result = CliRunner().invoke(cli_app, ["solve", SOLUTION])
    assert result.exit_code == 2, result.output
    assert "not_ready" in result.output and "loading models failed" in result.output


def test_a_body_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    class Proxy(http.server.BaseHTTPRequestHandler):  # a proxy's error page
        def do_POST(self) -> None:  # the handler API names it
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(cli_app, ["solve", SOLUTION, "--url", url])
    finally:
        server.shutdown()
    assert result.exit_code == 2, result.output
    assert "bad_response" in result.output and "502" in result.output
