"""Request and response bodies of the HTTP API, with the examples shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.engine.protocol import HaltReason
from app.settings import MAX_DEADLINE_MS, MAX_STEPS_LIMIT, MAX_TRAJECTORIES, MODEL_NAME_MAX

SUDOKU_EXAMPLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
# Mazes are square (5..30 a side): the example must be too, or the docs' own example gets 422 not_square.
MAZE_EXAMPLE = "#######\n#S    #\n# ### #\n#   # #\n### # #\n#    G#\n#######"
ARC_EXAMPLE = {"train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
                         {"input": [[0, 0], [2, 0]], "output": [[0, 0], [0, 2]]}],
               "test": [{"input": [[3, 0], [0, 0]]}]}

Task = Literal["sudoku", "maze", "arc"]


class SolveOptionsIn(BaseModel):
    """Every field is optional: an absent field takes the model's default (models file), then the engine's."""

    # strict: `true` is not a step count and "10" is not 10 (JSON types only; an int is still a valid float).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"max_steps": 16},
        {"halting": "verifier", "max_steps": 32, "deadline_ms": 2000},
        {"trajectories": 8, "noise": 0.3, "selection": "verifier_first", "seed": 7},
    ]})

    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS_LIMIT,
                                  description="ACT step limit per trajectory (default: the model's halt_max_steps).")
    halting: Literal["auto", "q_head", "max_steps", "verifier"] | None = Field(
        None, description="auto (default for Sudoku and mazes with one trajectory; with trajectories > 1 the default "
                          "is verifier): one trajectory that stops when its answer passes the "
                          "exact verifier; if it has not passed after escalate_after steps, escalate once to K noisy "
                          "PTRM trajectories (verifier_first; K = trajectories when > 1 is asked with halting=auto, "
                          "else 8) within the request's budget. "
                          "q_head: stop when the model's Q-head says so (default for ARC); max_steps: always run to "
                          "max_steps; verifier: stop as soon as the decoded answer passes the exact verifier.")
    escalate_after: int | None = Field(None, ge=1, le=MAX_STEPS_LIMIT, description=(
        "halting=auto: escalate once the plain trajectory has run this many ACT steps without verifying "
        "(default and at most: max_steps). Fewer lowers the latency of the requests that escalate and can cost "
        "accuracy on hard puzzles. Other halting rules ignore it."))
    hedge_after: int | None = Field(None, ge=0, le=MAX_STEPS_LIMIT, description=(
        "halting=auto: start the escalation beside the plain trajectory once it has run this many ACT steps "
        "without verifying, instead of after it ends (a hedged request): the first run to verify answers and "
        "stops the other, so the requests that escalate wait fewer steps and neither run is cut short. Costs "
        "row-steps for requests whose plain run would have verified later. Default: 3 for a model served on a "
        "GPU (its rows are nearly free), none on a CPU; 0 turns it off; values from escalate_after up mean none."))
    fallback: Literal["none", "exact"] | None = Field(None, description=(
        "exact: when the model's answer does not verify, answer with the exact solver's solution instead (Sudoku, "
        "mazes), marked solved_by=exact. Off (none) by default: a model answer is never silently replaced."))
    threshold: float | None = Field(None, gt=0, lt=1, description=(
        "Q-head halting threshold on sigmoid(q_halt). Default: the model's own rule (TRM: 0.5; HRM: "
        "q_halt > q_continue)."))
    converge_steps: int | None = Field(None, ge=1, le=MAX_STEPS_LIMIT, description=(
        "Also stop a trajectory whose decoded answer has not changed for this many consecutive steps."))
    trajectories: int | None = Field(None, ge=1, le=MAX_TRAJECTORIES, description=(
        "PTRM: number K of noisy trajectories run in parallel (K batch rows). 1 = plain TRM/HRM."))
    noise: float | None = Field(None, ge=0, le=10, description=(
        "PTRM noise scale sigma added to the latent at the start of every ACT step (default with K > 1: "
        "sudoku 0.3, maze 1.0, arc 0.2; 0 with K = 1)."))
    noise_on: Literal["z_L", "z_H", "both"] | None = Field(None, description="Which latent gets the noise.")
    selection: Literal["best_q", "vote", "verifier_first"] | None = Field(None, description=(
        "How the K answers become one: best_q = largest final q_halt; vote = majority; verifier_first = the "
        "first answer that passes the verifier (resolves early and frees the other rows), else best_q."))
    seed: int | None = Field(None, ge=0, lt=2**63, description=(
        "Seed for the PTRM noise: the same seed gives the same answer. Unseeded noisy results are cached "
        "only when verified."))
    deadline_ms: int | None = Field(None, ge=1, le=MAX_DEADLINE_MS, description=(
        "Time budget from arrival, queue time included. When it runs out the best answer so far is "
        "returned with halted_by=deadline (never a 504)."))
    cache: bool | None = Field(None, description="Look up and store the result in the result cache (default on).")


class SolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "sudoku", "puzzle": SUDOKU_EXAMPLE},
        {"task": "sudoku", "puzzle": SUDOKU_EXAMPLE, "options": {"trajectories": 8, "seed": 1,
                                                                 "selection": "verifier_first"}},
        {"task": "maze", "puzzle": MAZE_EXAMPLE},
        {"task": "maze", "puzzle": [[1, 1, 1, 1, 1], [1, 2, 0, 0, 1], [1, 1, 1, 0, 1], [1, 3, 0, 0, 1],
                                    [1, 1, 1, 1, 1]]},
        {"task": "arc", "puzzle": ARC_EXAMPLE, "options": {"max_steps": 8}},
    ]})

    task: Task | None = Field(None, description="Puzzle kind. Optional (absent or null) when `model` is given.")
    # a longer name can never be served (settings.MODEL_NAME_RE), so it is refused before lookup
    model: str | None = Field(None, max_length=MODEL_NAME_MAX, description=(
        "Served model name (GET /v1/models). Optional (absent or null): the task's default model."))
    # Required and never null; its JSON type depends on the task, so the schema lists the three it may have.
    puzzle: Any = Field(..., json_schema_extra={"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}]},
                        description=(
        "The puzzle in any form the task accepts. Sudoku: an 81-character string ('.', '0', '_', '*', 'x', '?' or a "
        "space for blanks), 9 row strings, a 9x9 integer grid (0 or null blank) or a markdown table. Maze: square "
        "text rows of '#'/'X' wall, ' '/'.' open, 'S'/'@' start, 'G'/'E' goal (a string or a list of rows), or an "
        "integer grid (0 open, 1 wall, 2 start, 3 goal). ARC: a task JSON {train: [...], test: [...], test_index?, "
        "id?}. Text may sit in a ``` code block or after a sentence. A 422 for a bad puzzle lists every accepted "
        "form (error.accepted_forms). The answer comes back in the same form."))
    options: SolveOptionsIn = Field(default_factory=SolveOptionsIn)

    @field_validator("puzzle", mode="before")
    @classmethod
    def _puzzle_not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("puzzle must not be null: send the puzzle as a string, a list of rows or a grid, or "
                             "an ARC task object")
        return v


class ModelRef(BaseModel):
    name: str
    version: str


class Timings(BaseModel):
    queue_ms: float = Field(description="Waiting for batch rows.")
    compute_ms: float = Field(description="From admission to the last ACT step.")
    total_ms: float = Field(description="From arrival to the response (parse, cache, queue, compute, render).")


class SolveResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "request_id": "3f2a9c1e0b7d4e55", "task": "sudoku",
        "model": {"name": "trm-mlp-sudoku", "version": "9b1c2d3e4f5a6b7c"},
        "answer": "534678912672195348198342567859761423426853791713924856961537284287419635345286179",
        "answer_text": "5 3 4 | 6 7 8 | 9 1 2\n...", "verified": True, "verification": [],
        "confidence": 0.97, "steps": 9, "halted_by": "verified", "solved_by": "model", "solvable": True,
        "unique": True, "overwritten": [], "escalated": False, "trajectories": 1, "chosen_trajectory": 0,
        "row_steps": 9, "cached": False, "coalesced": False,
        "timings": {"queue_ms": 0.4, "compute_ms": 61.2, "total_ms": 63.0}}]})

    request_id: str | None
    task: str
    model: ModelRef
    answer: Any = Field(description="The answer in the caller's form; null when no step ran (the deadline passed "
                                    "while queued) or the model's output decodes to no answer (verification says "
                                    "which).")
    answer_text: str | None = Field(description="The answer rendered as text, for humans and LLMs.")
    verified: bool = Field(description="Whether the answer passes the task's exact verifier.")
    verification: list[str] = Field(description="Why the answer fails the verifier (empty when verified).")
    confidence: float | None = Field(description=(
        "The model's own estimate that its answer is exactly right: sigmoid(q_halt / T) of the chosen trajectory's "
        "last step, T from the model card's calibration. It is the model's belief, not a check: when `verified` is "
        "true the exact verifier has confirmed the answer whatever this says (halting=auto often stops at the first "
        "verified step, before the Q-head is confident)."))
    steps: int = Field(description="ACT steps run by the chosen trajectory.")
    halted_by: HaltReason
    solved_by: Literal["model", "exact"] = Field(description="model, or exact when fallback=exact replaced an "
                                                             "unverified model answer with the exact solver's.")
    solvable: bool | None = Field(description="The exact solver's verdict on the puzzle (null: unknown, e.g. ARC).")
    unique: bool | None = Field(description="Whether the puzzle has exactly one solution (mazes: one shortest path); "
                                            "null when unknown.")
    overwritten: list[str] = Field(description="Givens the answer changed (a model answer may overwrite a given "
                                               "digit or cross a wall: never silently).")
    escalated: bool = Field(description="halting=auto: the plain run did not verify and K noisy trajectories ran.")
    trajectories: int = Field(description="Trajectories run (K).")
    chosen_trajectory: int | None
    row_steps: int = Field(description="ACT steps summed over all trajectories: the compute this answer cost.")
    cached: bool
    coalesced: bool = Field(description="Shared the computation of an identical request in flight.")
    timings: Timings


class ErrorDetail(BaseModel):
    location: str | None = None
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_puzzle, bad_character, "
                                  "invalid_option, model_not_found, queue_full, draining.")
    message: str = Field(description="What is wrong and how to fix it.")
    location: str | None = Field(None, description="Where: a request field (options.max_steps) or a place in the "
                                                   "puzzle (row 3, col 5).")
    details: list[ErrorDetail] | None = None
    request_id: str | None = Field(None, description="This request's id (also the X-Request-ID header).")
    accepted_forms: list[str] | None = Field(None, description=(
        "For a puzzle that cannot be read: every form the task accepts, each with a short example."))


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "code": "bad_character", "location": "char 3",
        "message": "bad character 'k' in sudoku text: use digits 1-9, and '.', '0', '_', '*', 'x', '?', null or a "
                   "space for blanks",
        "accepted_forms": ["an 81-character string, blanks as \".\", \"0\", \"_\", \"*\", \"x\" or \"?\": "
                           "\"53..7....6..195....98....6.8...\"", "..."]}}]})

    error: ErrorInfo


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
        {"task": "sudoku", "puzzle": SUDOKU_EXAMPLE},
        {"task": "sudoku", "puzzle": SUDOKU_EXAMPLE.replace("5", ".", 1), "options": {"max_steps": 8}},
    ]}]})

    items: list[dict[str, Any]] = Field(
        ..., min_length=1, description="SolveRequest objects; each is validated and answered on its own.",
        # Any object is accepted here: a bad item gets its own 4xx in the results, not a 422 for the batch.
        json_schema_extra={"items": {"type": "object", "description": "A SolveRequest (see that schema)."}})
    options: SolveOptionsIn | None = Field(None, description="Defaults for every item's options.")


class BatchItemResult(BaseModel):
    status: int = Field(description="The HTTP status this item would have had on its own.")
    result: SolveResponse | None = None
    error: ErrorInfo | None = None
    retry_after_s: int | None = Field(None, description=(
        "For a 429 or 503 item: the seconds its Retry-After header would have said; retry the item after them."))


class BatchResponse(BaseModel):
    results: list[BatchItemResult]
    ok: int
    failed: int


class HealthBody(BaseModel):
    status: str
    detail: str | None = None
    models: dict[str, str] | None = None
