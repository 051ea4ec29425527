"""LLM tool definitions (solve_sudoku, solve_maze, solve_arc, list_models) derived from the REST models.

One source for three consumers: `GET /v1/tools` (OpenAI function calling in strict mode, Anthropic tool use)
and the MCP server (app/api/mcp.py). Each tool's arguments are a small pydantic model whose `model` and
`options` fields are the REST API's own (`SolveRequest.model`, `SolveOptionsIn`), so a new solve option
shows up in every tool schema without an edit here. `puzzle` is typed per task for the schema only
(`SkipValidation`): the codec validates it, so a tool caller gets the same code/message/location as REST.

`to_solve_body(tool, arguments)` turns a tool call into a `POST /v1/solve` body; `json_schema(model, strict)`
rewrites pydantic's JSON schema into the subset tool APIs accept (no `$ref`, `additionalProperties: false`
everywhere; strict adds: every property required, optional ones nullable, constraint keywords moved into
the description).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from app.api.schemas import SUDOKU_EXAMPLE, SolveOptionsIn, SolveRequest

if TYPE_CHECKING:
    from app.runtime import Runtime

ToolFormat = Literal["openai", "anthropic"]


class _SolveArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description=SolveRequest.model_fields["model"].description)
    options: SolveOptionsIn | None = Field(None, description=(
        "Solve options; null (or any null field) takes the model's default. " + (SolveOptionsIn.__doc__ or "")))


class SudokuArgs(_SolveArgs):
    puzzle: Annotated[str | list[str] | list[list[int]], SkipValidation] = Field(description=(
        "The Sudoku: an 81-character string read row by row with '.' or '0' for blanks, 9 row strings of 9 "
        "characters, or a 9x9 grid of integers with 0 for blanks. The answer comes back in the same form."))


class MazeArgs(_SolveArgs):
    puzzle: Annotated[str | list[str], SkipValidation] = Field(description=(
        "A square maze (5 to 30 a side, within the model's canvas) as newline-separated rows or a list of row "
        "strings: '#' wall, ' ' open, 'S' start, 'G' goal. The answer marks the shortest path with 'o'."))


class ArcPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: list[list[int]] = Field(description="Grid of colours 0-9, at most 30x30.")
    output: list[list[int]] = Field(description="Grid of colours 0-9, at most 30x30.")


class ArcTestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: list[list[int]] = Field(description="Grid of colours 0-9, at most 30x30.")
    output: list[list[int]] | None = Field(None, description="The expected output if known (then the answer is "
                                                             "verified against it), else null.")


class ArcTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[ArcPair] = Field(description="Demonstration pairs.")
    test: list[ArcTestInput] = Field(description="Test inputs; the one at test_index is solved.")
    test_index: int | None = Field(None, description="Which test input to solve (default 0).")
    id: str | None = Field(None, description="ARC task id, e.g. '007bbfb7' (optional).")


class ArcArgs(_SolveArgs):
    puzzle: Annotated[ArcTask, SkipValidation] = Field(description=(
        "An ARC-AGI task in its JSON form. The answer is the predicted output grid."))


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    task: str | None  # None: not a solve tool
    description: str
    args: type[BaseModel]
    example: dict[str, Any]  # arguments in the strict form (every field present)


_NULL_OPTIONS: dict[str, Any] = dict.fromkeys(SolveOptionsIn.model_fields)
_SOLVE_TAIL = (" Returns the answer as text, whether it passes the exact verifier (trust it only when verified "
               "is true), the model's confidence and how many recursive steps ran. Errors name the problem and "
               "where it is (code, message, location).")

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("solve_sudoku", "sudoku",
             "Solve a 9x9 Sudoku with a tiny recursive reasoning model (TRM/HRM)." + _SOLVE_TAIL, SudokuArgs,
             {"puzzle": SUDOKU_EXAMPLE, "model": None, "options": None}),
    ToolSpec("solve_maze", "maze",
             "Find the shortest path through a maze from S to G with a tiny recursive reasoning model." + _SOLVE_TAIL,
             MazeArgs,
             {"puzzle": "#####\n#S  #\n### #\n#G  #\n#####", "model": None,
              "options": _NULL_OPTIONS | {"max_steps": 8}}),
    ToolSpec("solve_arc", "arc",
             "Solve an ARC-AGI abstract reasoning task (predict the test output grid from the demonstration "
             "pairs) with a tiny recursive reasoning model." + _SOLVE_TAIL, ArcArgs,
             {"puzzle": {"train": [{"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
                                   {"input": [[0, 0], [2, 0]], "output": [[0, 0], [0, 2]]}],
                         "test": [{"input": [[3, 0], [0, 0]], "output": None}], "test_index": None, "id": None},
              "model": None, "options": _NULL_OPTIONS | {"max_steps": 4}}),
    ToolSpec("list_models", None,
             "List the served models: name, task (sudoku, maze or arc), architecture, measured accuracy, and "
             "which model is each task's default.", NoArgs, {}),
)
BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}


def served_tools(tasks: Collection[str] | None) -> list[ToolSpec]:
    """The tools to offer: list_models, and each solve tool whose task a served model solves (an LLM handed a tool
    the server always refuses wastes calls on it); every tool when the tasks cannot be known (None)."""
    return [t for t in TOOLS if tasks is None or t.task is None or t.task in tasks]


def served_tasks(runtime: Runtime) -> set[str] | None:
    """The tasks the runtime's models solve; while it starts, those of the models it is configured with (an LLM
    app that fetches its tools then is not offered a task the server will not have); None when neither is known."""
    return set(runtime.service.defaults) if runtime.service is not None else runtime.configured_tasks()


class ToolArgumentError(ValueError):
    """A tool name that does not exist (the arguments themselves are checked by the REST models)."""

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.message, self.location = message, location


def _drop_null_keys(value: Any) -> Any:
    """Strict-mode callers must send every key, so absent is sent as null; REST wants it absent."""
    if isinstance(value, dict):
        return {k: _drop_null_keys(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_null_keys(v) if isinstance(v, dict) else v for v in value]
    return value


def to_solve_body(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A solve tool call -> a POST /v1/solve body (validate it with SolveRequest for the REST errors)."""
    spec = BY_NAME.get(tool)
    if spec is None or spec.task is None:
        solve_tools = ", ".join(t.name for t in TOOLS if t.task is not None)
        raise ToolArgumentError(f"unknown solve tool {tool!r}; expected one of {solve_tools}", "name")
    body: dict[str, Any] = {"task": spec.task}
    for key, value in arguments.items():
        # Unknown keys go through as they are, so SolveRequest rejects them with its extra_forbidden message
        # (callers check the tool's own schema first, which also refuses `task`: the tool names the task).
        body[key] = _drop_null_keys(value) if key in ("options", "puzzle") else value
    if body.get("model") is None:
        body.pop("model", None)
    if body.get("options") is None:
        body.pop("options", None)
    return body


# --------------------------------------------------------------------------------- schema rewriting

# Keywords OpenAI's strict mode rejects or does not enforce on every model; their meaning moves into the
# description, so the LLM still sees the limits and the server still enforces them.
_CONSTRAINTS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
                "minLength": "min length", "maxLength": "max length", "minItems": "min items",
                "maxItems": "max items", "pattern": "pattern", "format": "format", "multipleOf": "multiple of"}
_DROP = {"title", "examples", "default"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _resolve(target | extra, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _join(outer: str, inner: str | None) -> str:
    """The field's description, then what the type itself says (e.g. its limits) unless already said."""
    return outer if not inner or inner in outer else f"{outer.rstrip()} {inner}"


def _is_null(node: dict[str, Any]) -> bool:
    return node.get("type") == "null"


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """Allow null: a type union for scalars (enum gains null), anyOf for objects, arrays and unions."""
    if _accepts_null(node):
        return node
    if "anyOf" in node:
        return node | {"anyOf": [*node["anyOf"], {"type": "null"}]}
    t = node.get("type")
    if isinstance(t, str) and t not in ("object", "array"):
        out = node | {"type": [t, "null"]}
        if "enum" in node:
            out["enum"] = [*node["enum"], None]
        return out
    desc = node.get("description")
    inner = {k: v for k, v in node.items() if k != "description"}
    return {"anyOf": [inner, {"type": "null"}], **({"description": desc} if desc else {})}


def _accepts_null(node: dict[str, Any]) -> bool:
    t = node.get("type")
    return t == "null" or (isinstance(t, list) and "null" in t) or any(_is_null(b) for b in node.get("anyOf", ()))


def _rewrite(node: dict[str, Any], strict: bool, where: str) -> dict[str, Any]:
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "anyOf" in node:
        branches = [_rewrite(b, strict, where) for b in node.pop("anyOf")]
        real = [b for b in branches if not _is_null(b)]
        if len(real) == 1:  # X | None: fold into X (type union where the spec allows it)
            merged = real[0] | ({"description": _join(node["description"], real[0].get("description"))}
                                if "description" in node else {})
            return _nullable(merged) if len(branches) > 1 else merged
        return node | {"anyOf": branches}
    if "type" not in node and "enum" not in node and "const" not in node:
        raise ValueError(f"{where}: a schema without a type cannot be a strict tool schema")
    if strict:
        notes = [f"{label} {node.pop(key)}" for key, label in _CONSTRAINTS.items() if key in node]
        if notes:
            node["description"] = (node.get("description", "").rstrip() + f" ({', '.join(notes)})").lstrip()
    if node.get("type") == "array" and "items" in node:
        node["items"] = _rewrite(node["items"], strict, f"{where}[]")
    if node.get("type") == "object":
        props = {name: _rewrite(p, strict, f"{where}.{name}" if where else name)
                 for name, p in node.get("properties", {}).items()}
        required = list(node.get("required", []))
        if strict:  # every property present; the optional ones say so by accepting null
            props = {name: p if name in required else _nullable(p) for name, p in props.items()}
            required = list(props)
        node["properties"] = props
        node["required"] = required
        node["additionalProperties"] = False
    return node


def json_schema(model: type[BaseModel], strict: bool) -> dict[str, Any]:
    """The tool-ready JSON schema of `model`'s fields; `puzzle` first (what the LLM should write first)."""
    raw = model.model_json_schema()
    schema = _rewrite(_resolve(raw, raw.get("$defs", {})), strict, "")
    props = schema["properties"]
    if "puzzle" in props:
        schema["properties"] = {"puzzle": props["puzzle"], **{k: v for k, v in props.items() if k != "puzzle"}}
        schema["required"] = sorted(schema["required"], key=lambda name: name != "puzzle")
    schema.pop("description", None)  # the tool's own description says it
    return schema


def openai_tools(tools: Sequence[ToolSpec] = TOOLS) -> list[dict[str, Any]]:
    """Chat Completions `tools=[...]` entries, strict. (The Responses API takes the inner object flat.)"""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": json_schema(t.args, strict=True), "strict": True}}
            for t in tools]


def anthropic_tools(tools: Sequence[ToolSpec] = TOOLS) -> list[dict[str, Any]]:
    """Messages API `tools=[...]` entries: only `puzzle` required, optional fields may be omitted or null."""
    return [{"name": t.name, "description": t.description, "input_schema": json_schema(t.args, strict=False)}
            for t in tools]


def tools_body(fmt: ToolFormat, tools: Sequence[ToolSpec] = TOOLS) -> dict[str, Any]:
    """The GET /v1/tools body: the definitions, plus each tool's example call and its REST equivalent."""
    entries = openai_tools(tools) if fmt == "openai" else anthropic_tools(tools)
    examples = [{"tool": t.name, "arguments": t.example,
                 "rest": {"method": "POST", "path": "/v1/solve", "body": to_solve_body(t.name, t.example)}
                 if t.task is not None else {"method": "GET", "path": "/v1/models?view=brief"}}
                for t in tools]
    return {"format": fmt, "tools": entries, "examples": examples}


router = APIRouter()


_FORMAT_DOC = ("openai: Chat Completions `tools` entries ({type: function, function: {name, description, parameters, "
               "strict: true}}); anthropic: Messages API `tools` entries ({name, description, input_schema}).")


@router.get("/v1/tools", operation_id="list_tools", tags=["tools"],
            summary="Tool definitions for LLM function calling (OpenAI strict, Anthropic)")
async def list_tools(request: Request,
                     format: Annotated[ToolFormat, Query(description=_FORMAT_DOC)] = "openai") -> JSONResponse:
    """Pass `tools` as they are to the LLM API; when the model calls a solve tool, POST its arguments to
    /v1/solve with the tool's task (null fields dropped): each entry of `examples` shows the REST body of one
    call. Only the solve tools of tasks this server has a model for are listed (while it starts, those of the
    models it is configured with).
    The same tools are served over MCP at /mcp."""
    return JSONResponse(tools_body(format, served_tools(served_tasks(request.app.state.runtime))))

