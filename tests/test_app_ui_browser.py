"""The playground and the docs in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python
package) against a real `recursolve serve` with the shipped weights: enter a Sudoku, watch it solve, get the
badge; every request the pages make goes to this server (offline pages). Screenshots land in the test's tmp
dir and in bench/results/ (playground.png, playground-maze.png, docs.png)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app_engine_support import served

sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` Python package is not installed "
                                                             "(pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# A hard one (17 givens): one TRM trajectory does not solve it, so the PTRM run has something to show.
PUZZLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"
TIMEOUT_MS = 90_000  # two shared CPU cores: loading, warm-up and a K=4 solve can be slow


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`recursolve serve` in a subprocess with the two small shipped models."""
    tmp = tmp_path_factory.mktemp("ui-server")
    models = tmp / "models.yaml"
    models.write_text("models:\n"
                      f"  - name: trm-mlp-sudoku\n    path: {ROOT / 'weights' / 'trm-mlp-sudoku'}\n    batch_rows: 16\n"
                      f"  - name: trm-att-maze\n    path: {ROOT / 'weights' / 'trm-att-maze'}\n    batch_rows: 4\n")
    with served(models, log_path=tmp / "server.log") as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server) -> Iterator[tuple[sync_api.Page, list[str]]]:
    """A page whose requests to anywhere but the server are refused and recorded."""
    outside: list[str] = []
    host = urlsplit(server).netloc

    def route(r: sync_api.Route) -> None:
        url = r.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == host:
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    context = browser.new_context(viewport={"width": 1440, "height": 960}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.route("**/*", route)
    yield pg, outside
    context.close()


def shoot(pg: sync_api.Page, tmp_path: Path, name: str) -> None:
    pg.screenshot(path=str(tmp_path / name), full_page=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / name, RESULTS / name)


def test_sudoku_solve_streams_steps_to_a_verdict(page, server, tmp_path):
    pg, outside = page
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # CSP violations too
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    assert pg.input_value("#model") == "trm-mlp-sudoku"

    # Enter the puzzle: clear the board, type the first given into a cell, paste the rest as text.
    pg.click("#tools-sudoku button[data-act=clear]")
    cells = pg.locator("#board-sudoku input")
    assert cells.count() == 81 and all(v == "" for v in cells.evaluate_all("els => els.map(e => e.value)"))
    cells.nth(0).click()
    pg.keyboard.type(PUZZLE[0])
    assert cells.nth(0).input_value() == PUZZLE[0] and "given" in (cells.nth(0).get_attribute("class") or "")
    pg.click("#paste-summary")
    pg.fill("#paste", PUZZLE)
    pg.click("#paste-load")
    values = cells.evaluate_all("els => els.map(e => e.value || '.')")
    assert "".join(values) == PUZZLE

    pg.fill("#opt-trajectories", "8")
    pg.fill("#opt-seed", "7")
    pg.select_option("#opt-selection", "verifier_first")
    pg.select_option("#pace", "80")
    assert '"trajectories": 8' in pg.text_content("#request-body")
    pg.click("#solve")
    pg.wait_for_selector("#badge[data-state=verified], #badge[data-state=unverified]")

    badge = pg.locator("#badge")
    assert badge.text_content() in ("Verified", "Not verified")
    values = cells.evaluate_all("els => els.map(e => e.value)")
    assert all(v in "123456789" and v for v in values), values  # every cell shows a digit
    assert all(values[i] == ch for i, ch in enumerate(PUZZLE) if ch != ".")  # givens kept
    steps = pg.locator("#log-body tr").count()
    assert steps >= 1
    assert pg.locator("#traj-strip span").count() == steps
    assert "K = 8 trajectories" in pg.text_content("#traj-summary")
    assert "chosen" in pg.text_content("#traj-summary")
    assert pg.locator("#chart circle").count() == steps
    assert pg.text_content("#halted").startswith("halted_by: ")
    # The confidence shown is the final result's, a percentage.
    assert pg.text_content("#conf-value").endswith("%")
    shoot(pg, tmp_path, "playground.png")

    # Scrubbing back shows the first step again.
    first_step = pg.locator("#log-body tr").first.locator("td").first.text_content()
    pg.locator("#scrub").fill("0")
    assert pg.text_content("#scrub-label") == f"step {first_step}" and pg.text_content("#stat-step") == first_step
    assert not errors and not outside, (errors, outside)


def test_bad_puzzle_shows_the_servers_error(page, server):
    pg, outside = page
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    pg.click("#paste-summary")
    pg.fill("#paste", "55" + "." * 79)  # two 5s in row 1
    pg.click("#paste-load")
    pg.click("#solve")
    pg.wait_for_selector("#badge[data-state=error]")
    assert pg.text_content("#badge") == "Error 422"
    assert pg.locator("#error code").text_content()  # the server's error code
    assert not outside


def test_an_error_inside_the_stream_shows_its_own_status(page, server):
    """The stream's in-band `error` event carries the status the error would have had (here the engine going
    away mid-solve, a 503), and the badge shows it, not the stream's 200."""
    pg, outside = page
    body = ('event: error\ndata: {"status": 503, "error": {"code": "engine_unavailable", '
            '"message": "the engine core went away"}}\n\n')
    pg.route("**/v1/solve/stream", lambda r: r.fulfill(status=200, content_type="text/event-stream", body=body))
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    pg.click("#solve")
    pg.wait_for_selector("#badge[data-state=error]")
    assert pg.text_content("#badge") == "Error 503"
    assert pg.locator("#error code").text_content() == "engine_unavailable"
    assert not outside


def test_a_server_that_wants_an_api_key_is_said_so_not_polled_forever(page, server):
    pg, outside = page
    calls: list[str] = []

    def unauthorized(r) -> None:  # what a server with RECURSOLVE_API_KEYS answers the keyless playground
        calls.append(r.request.url)
        r.fulfill(status=401, content_type="application/json",
                  body='{"error": {"code": "unauthorized", "message": "this server needs an API key"}}')

    pg.route("**/v1/models", unauthorized)
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=down]")
    assert pg.text_content("#server-state") == "401 unauthorized: this server needs an API key"
    pg.wait_for_timeout(2000)
    assert len(calls) == 1 and not outside


def test_maze_drawn_and_solved(page, server, tmp_path):
    pg, outside = page
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    pg.click("#task-tabs button[data-task=maze]")
    assert pg.input_value("#model") == "trm-att-maze"
    cells = pg.locator("#board-maze .maze > div")
    assert cells.count() == 81  # the model's 9x9 canvas (seq_len 81)

    # Draw one: an empty walled box, S and G by click, a wall by dragging across row 4.
    pg.click("#tools-maze button[data-act=clear]")
    pg.click("#maze-brush button[data-brush=S]")
    cells.nth(1 * 9 + 1).click()
    pg.click("#maze-brush button[data-brush=G]")
    cells.nth(7 * 9 + 7).click()
    pg.click("#maze-brush button[data-brush='#']")
    box_a, box_b = cells.nth(4 * 9 + 1).bounding_box(), cells.nth(4 * 9 + 6).bounding_box()
    pg.mouse.move(box_a["x"] + 5, box_a["y"] + 5)
    pg.mouse.down()
    pg.mouse.move(box_b["x"] + 5, box_b["y"] + 5, steps=12)
    pg.mouse.up()
    body = pg.text_content("#request-body")
    rows = ["#########", "#S      #", "#       #", "#       #", "#######.#", "#       #", "#       #", "#      G#",
            "#########"]
    expected = "\\n".join(rows).replace(".", " ")
    assert expected in body, body

    # Solve a random maze of the kind the model was trained on.
    pg.click("#tools-maze button[data-act=random]")
    assert pg.locator("#board-maze .start").count() == 1 and pg.locator("#board-maze .goal").count() == 1
    pg.select_option("#pace", "0")
    pg.click("#solve")
    pg.wait_for_selector("#badge[data-state=verified], #badge[data-state=unverified]")
    assert pg.locator("#log-body tr").count() >= 1
    assert pg.locator("#board-maze .start").count() == 1  # the drawn maze stays under the answer
    shoot(pg, tmp_path, "playground-maze.png")
    assert not outside, outside


def test_arc_task_pasted_and_drawn(page, server):
    pg, outside = page
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    pg.click("#task-tabs button[data-task=arc]")
    pg.fill("#paste", '{"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3, 4], [5, 6]]}]}')
    pg.click("#paste-load")
    assert pg.locator("#board-arc .arc-pair").count() == 1
    assert pg.locator("#board-arc .arc-row .arc-grid").first.locator("div").count() == 4  # the 2x2 test input
    assert '"test": [' in pg.text_content("#request-body")
    # No ARC model is served here: the page says so and will not send the request.
    assert pg.text_content("#model") == "no arc model served" and pg.is_disabled("#solve")
    pg.fill("#paste", "{not json")
    pg.click("#paste-load")
    assert pg.text_content("#paste-hint").startswith("not valid JSON")
    assert not outside, outside


def test_docs_render_offline(page, server, tmp_path):
    pg, outside = page
    pg.goto(server + "/docs")
    pg.wait_for_selector('.swagger-ui .opblock-summary-path[data-path="/v1/solve/stream"]')
    assert pg.locator(".swagger-ui .opblock").count() >= 5
    shoot(pg, tmp_path, "docs.png")
    pg.goto(server + "/redoc")
    pg.locator("h2", has_text="Solve one puzzle, streaming every ACT step").first.wait_for()
    assert not outside, outside


def test_stop_during_the_replay_shows_the_result_at_once(page, server):
    """The server answers 40 steps in about a second; replayed at 400 ms a step that is 16 s. Stop after the answer
    came ends the replay with the final result and unlocks the page (Stop used to do nothing then)."""
    pg, _ = page
    pg.goto(server + "/")
    pg.wait_for_selector("#server-state[data-state=ready]")
    pg.click("#paste-summary")
    pg.fill("#paste", PUZZLE)
    pg.click("#paste-load")
    pg.fill("#opt-max_steps", "40")
    pg.select_option("#opt-halting", "max_steps")
    pg.select_option("#pace", "400")
    pg.click("#solve")
    sync_api.expect(pg.locator("#log-body tr")).to_have_count(40, timeout=TIMEOUT_MS)  # the server has answered
    pg.wait_for_timeout(500)
    assert pg.locator("#badge").text_content() == "Solving…"
    pg.click("#stop")
    pg.wait_for_selector("#badge[data-state=verified], #badge[data-state=unverified]", timeout=5000)
    assert pg.text_content("#stat-step").endswith("(final)") and not pg.locator("#solve").is_disabled()
