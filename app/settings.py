"""Server configuration: `Settings` from RECURSOLVE_* environment variables, and the list of served
models (`load_model_specs`) from a YAML models file or, with none, from the folders under weights_dir.

This module imports neither torch nor models/, so a bad setting is reported before any weights load.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from puzzles import TASKS

log = logging.getLogger(__name__)

ENV_PREFIX = "RECURSOLVE_"
REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_FILE = "model.safetensors"  # same names as models/checkpoint.py; repeated so this module stays torch-free
CONFIG_FILE = "config.json"
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # models.config.DTYPES keys
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# Model names end up in URL paths (/v1/models/{name}) and Prometheus label values.
MODEL_NAME_MAX = 64
MODEL_NAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MODEL_NAME_MAX - 1}}}$")
# The request schema's hard limits (app/api/schemas.py). The cost caps below cannot exceed them: a request over
# one is refused by validation before any cap is read, so a cap above it could never be reached.
MAX_STEPS_LIMIT = 4096  # a request may not hold a row longer than this many ACT steps
MAX_TRAJECTORIES = 1024
MAX_DEADLINE_MS = 3_600_000
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def default_weights_dir() -> Path:
    """<repo>/weights when running from a source checkout (editable install), else ./weights: a wheel
    install lives in site-packages, where no weights are (the images set RECURSOLVE_WEIGHTS_DIR)."""
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "weights"
    return Path.cwd() / "weights"


class SettingsError(ValueError):
    """Invalid RECURSOLVE_* environment; the message names each offending variable."""


class ModelsFileError(ValueError):
    """An invalid models file or weights folder; the message names the file, the entry and the field."""


class ModelLimits(BaseModel):
    """Per-model cost caps (models file `limits:`); a field left out takes the server-wide default
    (Settings.*_cap). A request may lower these but never raise them (422 naming the cap)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS_LIMIT)  # ACT steps per trajectory
    max_trajectories: int | None = Field(default=None, ge=1, le=MAX_TRAJECTORIES)  # PTRM K
    max_row_steps: int | None = Field(default=None, ge=1)  # max_steps x trajectories: the rows x steps held
    max_deadline_ms: int | None = Field(default=None, ge=1, le=MAX_DEADLINE_MS)  # the longest time budget asked


class ModelSpec(BaseModel):
    """One served model. `path` is one of our model folders or an official checkpoint file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task: str
    path: Path
    backend: Literal["torch", "onnx"] = "torch"
    device: str = "auto"  # auto: CUDA when torch sees a GPU, else the CPU
    dtype: str | None = None  # None: the model's CPU default, bf16 on CUDA (the backend decides)
    # Rows stepped together (the continuous batching width); None: 256 on CUDA (a step of a tiny model costs
    # about the same at 1 and 256 rows there), 32 on a CPU (where a step's time grows with its rows).
    batch_rows: int | None = Field(default=None, ge=1, le=4096)
    # Admission limit, a K-trajectory request counting K rows; None: 512 or 4 x batch_rows, the larger.
    max_queue_rows: int | None = Field(default=None, ge=1)
    # The same limit in bytes of queued inputs (a request counts its encoded puzzle); None: the server's
    # RECURSOLVE_MAX_QUEUE_BYTES.
    max_queue_bytes: int | None = Field(default=None, ge=1)
    # torch.compile the ACT step (torch backend): inductor fuses the step's many small elementwise kernels, which
    # is what a tiny model's step time is made of on a GPU (H200, 256 rows: 3.5 -> 1.8 ms a step). Start-up pays
    # the compile (~80 s cold, ~20 s from inductor's on-disk cache). None: on for CUDA, off on a CPU (where it
    # gained 1.5x at 32 rows but lost at 8, for a minute of start-up).
    compile: bool | None = None
    # Overlap the engine core's Python with the device: launch step t+1, then collect step t while it runs (one
    # wasted row-step per request). None: on for CUDA, where a launch returns at once; off on a CPU, where the
    # launch is the work and the wasted step would cost time.
    overlap: bool | None = None
    # How the engine core waits for a CUDA step's results: "block" sleeps until the device signals (its core is
    # free meanwhile, for the API processes beside it); "spin" busy-waits on the event, as CUDA does by default,
    # for the last few microseconds of wake-up. vLLM's engine made its per-step events blocking in 2026 (PR 47081).
    wait: Literal["block", "spin"] = "block"
    default_options: dict[str, Any] = Field(default_factory=dict)  # per-model solve option defaults
    # This model answers requests that name only the task (else: the best held-out accuracy on its card).
    default_for_task: bool = False
    limits: ModelLimits = Field(default_factory=ModelLimits)  # per-model cost caps over the server defaults

    @field_validator("default_options")
    @classmethod
    def _default_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Bad per-model defaults fail the start, not the first request. The request schema is the one place
        # that says what an option may be (pydantic only, so this module stays torch-free).
        from app.api.schemas import SolveOptionsIn

        try:
            SolveOptionsIn.model_validate(v)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"invalid default_options: {problems}") from None
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a usable model name: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit (it appears in URLs and metric labels)")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; expected one of {', '.join(TASKS)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError(f"unknown device {v!r}; expected auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {v!r}; expected one of {', '.join(DTYPE_NAMES)} (or leave it out)")
        return v


def _blank_to_none(v: Any) -> Any:
    # Compose files and Helm values often set a variable to "" to mean "unset".
    return None if isinstance(v, str) and not v.strip() else v


class Settings(BaseSettings):
    """Every field can be set as RECURSOLVE_<FIELD NAME> (case-insensitive), e.g. RECURSOLVE_REDIS_URL."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid")

    # Loopback by default, so `recursolve serve` on a workstation is not reachable from the network; the
    # images set RECURSOLVE_HOST=0.0.0.0 (a container must listen on its pod/bridge address).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    models_file: Path | None = None  # YAML list of models; None: serve every model folder under weights_dir
    weights_dir: Path = Field(default_factory=default_weights_dir)
    redis_url: str | None = None  # redis://, rediss:// or unix://; None: in-process LRU cache
    # Redis connections per API process at most: file descriptors inside the 64 the connection cap keeps free.
    redis_max_connections: int = Field(default=32, ge=1, le=48)
    cache_ttl_seconds: int = Field(default=86400, ge=1)
    cache_max_entries: int = Field(default=10000, ge=1)  # in-process LRU bound (memory cache only)
    cache_enabled: bool = True
    drain_grace_seconds: float = Field(default=20.0, ge=0)
    max_batch_items: int = Field(default=64, ge=1)  # puzzles per /v1/solve/batch call
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    # Memory bounds (issue 11 item 3). Bytes of request bodies one API process holds at once (read, parsed or
    # waiting on the engine); over it: 429 + Retry-After before the body is read. Parsed JSON takes several
    # times its text, so an API process's RSS grows by at most a small multiple of this under a flood.
    max_inflight_bytes: int = Field(default=64_000_000, ge=1024)
    max_queue_bytes: int = Field(default=32_000_000, ge=1024)  # per model, unless its models-file entry sets one
    cache_max_bytes: int = Field(default=64_000_000, ge=1024)  # in-process LRU bound: keys, values, ~200 B an entry
    # Cost budgets (app/api/budgets.py). A request without deadline_ms gets this one: the best answer so far
    # is returned when it runs out, so no request holds rows for minutes unless it asks (up to deadline_ms_cap).
    default_deadline_ms: int | None = Field(default=30_000, gt=0)
    # Server-wide caps; a model's `limits:` in the models file overrides each one for that model.
    max_steps_cap: int = Field(default=4096, ge=1, le=MAX_STEPS_LIMIT)  # ACT steps per trajectory
    trajectories_cap: int = Field(default=64, ge=1, le=MAX_TRAJECTORIES)  # PTRM trajectories K
    row_steps_cap: int = Field(default=16384, ge=1)  # max_steps x trajectories of one request
    deadline_ms_cap: int = Field(default=300_000, ge=1, le=MAX_DEADLINE_MS)  # the longest deadline_ms asked for
    batch_row_steps_cap: int = Field(default=65536, ge=1)  # summed over the items of one /v1/solve/batch call
    # Connections (app/api/server_options.py): a half-sent request is closed after these.
    header_timeout_s: float = Field(default=10.0, gt=0)  # from connect (or keep-alive reuse) to complete headers
    body_timeout_s: float = Field(default=30.0, gt=0)  # from complete headers to complete body
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)  # idle keep-alive connection
    # A client that reads none of its pending response for this long is cut off (its handler and rows freed).
    write_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=2048, ge=1)  # open sockets; over it: 503 + Retry-After, then closed
    max_inflight_requests: int = Field(default=512, ge=1)  # requests being handled (health/metrics not counted)
    retry_after_s: int = Field(default=1, ge=1)  # Retry-After on the 503s above
    # Access (app/api/auth.py): comma-separated keys; when set, /v1/* and /mcp need `Authorization: Bearer <key>`.
    api_keys: str | None = Field(default=None, repr=False)
    auth_metrics: bool = False  # also require a key for /metrics
    cors_origins: str | None = None  # comma-separated origins (or "*"); unset: no CORS headers at all
    idempotency_ttl_seconds: int = Field(default=86400, ge=1)  # how long an Idempotency-Key's first answer is kept
    warmup: bool = True
    # The compile of models whose entry leaves `compile` out (ModelSpec.compile): None keeps its default (on for
    # CUDA); False suits short-lived processes such as `recursolve solve` without a server.
    compile: bool | None = None
    # The same for `overlap` (ModelSpec.overlap): None keeps its default (on for CUDA); true turns it on for a CPU,
    # which CI does to run the engine and API tests through the overlapped step that GPUs run.
    overlap: bool | None = None
    log_level: str = "info"
    access_log: bool = False  # one JSON line per HTTP request (off: at thousands of requests/s it costs CPU)
    # FastAPI's native OpenTelemetry (traces, HTTP metrics and logs to the global providers, or to exporters from
    # OTEL_* with FASTAPI_OTEL_AUTO_CONFIGURE=true). Off by default: /metrics is the server's telemetry, and with
    # it on FastAPI looks up the providers on every request, ~15 us of an API process's CPU even when none is set.
    opentelemetry: bool = False
    # Engine v2: `recursolve serve` runs one engine-core process and this many API processes (None: from the
    # cores and whether a GPU serves the models, see app.serve.default_api_workers). engine_address is set by
    # `serve` for its API processes; unset, an app runs its engine core in a thread (tests, `recursolve solve`).
    api_workers: int | None = Field(default=None, ge=1, le=64)
    # A listening socket per API process on the one port (SO_REUSEPORT, Linux): the kernel spreads connections
    # evenly. False: one shared socket, whose connections Linux hands mostly to a few processes (app.serve).
    reuse_port: bool = True
    engine_address: str | None = None
    # torch intra-op threads of each engine process (None: the available CPUs, the cgroup quota respected, shared
    # out among the engine cores).
    engine_threads: int | None = Field(default=None, ge=1)
    # Engine-core processes `recursolve serve` runs, each with every model and its own batch rows; API process i
    # talks to engine core i mod N (data parallel, as vLLM's --data-parallel-size, here on one device). More than
    # one helps where one engine's Python, not the device, bounds the step rate (see README, Serving figures).
    engines: int = Field(default=1, ge=1, le=16)
    # A request holding more than this share of a model's batch rows waits while other work runs (and is
    # passed by lighter requests), so one heavy request cannot hold the model while light ones wait.
    max_request_share: float = Field(default=0.5, gt=0, le=1)

    @field_validator("models_file", "redis_url", "default_deadline_ms", "engine_address", "api_workers",
                     "engine_threads", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _optional(cls, v: Any) -> Any:
        return _blank_to_none(v)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, v: Any) -> Any:
        # Kubernetes injects RECURSOLVE_PORT=tcp://10.0.0.1:8000 into pods when a Service is named "recursolve".
        if isinstance(v, str) and "://" in v:
            raise ValueError(f"{v!r} looks like a Kubernetes service link, not a port number: set RECURSOLVE_PORT "
                             "explicitly in the pod spec or set enableServiceLinks: false")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{v!r} is not a Redis URL; expected redis://host:port/db, rediss://... or unix://path")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().lower()
            if v not in LOG_LEVELS:
                raise ValueError(f"unknown log level {v!r}; expected one of {', '.join(LOG_LEVELS)}")
        return v


    @model_validator(mode="after")
    def _deadline_within_cap(self) -> Settings:
        # Otherwise every request without its own deadline_ms would be refused as over the cap.
        if self.default_deadline_ms is not None and self.default_deadline_ms > self.deadline_ms_cap:
            raise ValueError(f"RECURSOLVE_DEFAULT_DEADLINE_MS={self.default_deadline_ms} is over "
                             f"RECURSOLVE_DEADLINE_MS_CAP={self.deadline_ms_cap}; lower it or raise the cap")
        return self


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + str(loc[0]).upper() if loc else ENV_PREFIX + "*"


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment (read on every call, so tests and `recursolve serve` see changes).

    Raises SettingsError naming each bad RECURSOLVE_* variable and the value it had.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            name = _env_name(err["loc"])
            raw = os.environ.get(name, os.environ.get(name.lower()))
            shown = f"={raw!r}" if raw is not None else ""
            lines.append(f"{name}{shown}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    _warn_unknown_env()
    return settings


def _warn_unknown_env() -> None:
    """A typo (RECURSOLVE_REDIS_ULR) would otherwise be ignored silently: say so in the log."""
    known = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    for name in os.environ:
        upper = name.upper()
        # Kubernetes service links of a Service named "recursolve": RECURSOLVE_SERVICE_HOST, RECURSOLVE_PORT_8000_TCP
        if upper.startswith(ENV_PREFIX) and upper not in known and not upper.startswith(
                (ENV_PREFIX + "SERVICE_", ENV_PREFIX + "PORT_")):
            log.warning("ignoring unknown environment variable %s (known: %s)", name, ", ".join(sorted(known)))


# -- models --------------------------------------------------------------------------------------------


def load_model_specs(settings: Settings) -> list[ModelSpec]:
    """The models to serve: the YAML models file when settings.models_file is set, else every folder under
    settings.weights_dir holding model.safetensors + config.json (name = folder name, sorted by name).

    An absent or empty weights dir gives [] (the server then stays not-ready and says why).
    Raises ModelsFileError with the file, the entry and the field for anything invalid.
    """
    if settings.models_file is not None:
        return read_models_file(settings.models_file)
    return discover_models(settings.weights_dir)


def with_server_defaults(specs: list[ModelSpec], settings: Settings) -> list[ModelSpec]:
    """Fill what a spec leaves to the server (the queue's byte limit, the compile, the overlap) from settings, so the
    engine core needs only its specs (applied where specs are handed to the engine: app/serve.py, app/runtime.py)."""
    filled = []
    for s in specs:
        update: dict[str, Any] = {}
        if s.max_queue_bytes is None:
            update["max_queue_bytes"] = settings.max_queue_bytes
        if s.compile is None and settings.compile is not None:
            update["compile"] = settings.compile
        if s.overlap is None and settings.overlap is not None:
            update["overlap"] = settings.overlap
        filled.append(s.model_copy(update=update) if update else s)
    return filled


def read_models_file(path: Path) -> list[ModelSpec]:
    """Parse a models file: a mapping with a `models:` list (or a bare list) of model entries.

    Each entry: name, task, path (relative paths resolve against the file's folder), backend, device,
    dtype, batch_rows, max_queue_rows, default_options, limits. `task` may be left out for one of our model
    folders: it is then read from its config.json.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelsFileError(f"models file {path} (RECURSOLVE_MODELS_FILE) does not exist or is not a file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ModelsFileError(f"models file {path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelsFileError(f"models file {path}: cannot read it: {e}") from None
    if isinstance(doc, Mapping):
        extra = sorted(set(doc) - {"models"})
        if extra:
            raise ModelsFileError(f"models file {path}: unknown top-level key(s) {', '.join(map(str, extra))}; "
                                  "expected only 'models'")
        if "models" not in doc:
            raise ModelsFileError(f"models file {path}: has no 'models' list")
        entries = doc["models"]
    else:
        entries = doc
    if entries is None:
        raise ModelsFileError(f"models file {path}: is empty; expected a list of models under 'models:'")
    if not isinstance(entries, list):
        raise ModelsFileError(f"models file {path}: 'models' must be a list of mappings, "
                              f"got {type(entries).__name__}")

    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"models file {path}: models[{i}]"
        if not isinstance(entry, Mapping):
            raise ModelsFileError(f"{where}: expected a mapping with name, task, path, ...; "
                                  f"got {type(entry).__name__}")
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name']})"
        spec = _entry_to_spec(dict(entry), path.parent, where)
        if spec.name in seen:
            raise ModelsFileError(f"{where}: name {spec.name!r} is already used by models[{seen[spec.name]}]")
        seen[spec.name] = i
        specs.append(spec)
    return specs


def _entry_to_spec(entry: dict[str, Any], base: Path, where: str) -> ModelSpec:
    raw_path = entry.get("path")
    if isinstance(raw_path, str | Path) and str(raw_path):
        p = Path(raw_path).expanduser()
        p = (p if p.is_absolute() else base / p).resolve()
        if not p.exists():
            raise ModelsFileError(f"{where}: field 'path': {p} does not exist")
        entry["path"] = p
        folder_task = _config_task(p, where) if p.is_dir() else None
        if entry.get("task") is None and folder_task is not None:
            entry["task"] = folder_task
        elif entry.get("task") in TASKS and folder_task is not None and entry["task"] != folder_task:
            raise ModelsFileError(f"{where}: field 'task': {entry['task']!r} does not match the task "
                                  f"{folder_task!r} in {p / CONFIG_FILE}")
    try:
        return ModelSpec.model_validate(entry)
    except ValidationError as e:
        raise ModelsFileError(where + ": " + "; ".join(_field_error(err) for err in e.errors())) from None


def _field_error(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "entry"
    if err["type"] == "missing":
        return f"field {loc!r} is required"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(ModelSpec.model_fields)
        return f"unknown field {loc!r} (allowed: {allowed})"
    return f"field {loc!r}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"


def _config_task(folder: Path, where: str) -> str | None:
    """The `task` recorded in a model folder's config.json (None when the folder has no config.json)."""
    cfg = folder / CONFIG_FILE
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelsFileError(f"{where}: cannot read {cfg}: {e}") from None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def discover_models(weights_dir: Path) -> list[ModelSpec]:
    """One ModelSpec (default serving settings) per folder of weights_dir with model.safetensors + config.json.

    Folders without those two files are skipped (logged at debug level); a model folder whose config.json
    is unreadable or has no task, or whose name is unusable, raises ModelsFileError.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        log.info("weights dir %s does not exist: no models discovered", weights_dir)
        return []
    specs: list[ModelSpec] = []
    for folder in sorted(p for p in weights_dir.iterdir() if p.is_dir()):
        if not ((folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()):
            log.debug("skipping %s: no %s + %s", folder, WEIGHTS_FILE, CONFIG_FILE)
            continue
        where = f"weights folder {folder}"
        task = _config_task(folder, where)
        if task is None:
            raise ModelsFileError(f"{where}: {CONFIG_FILE} has no 'task'; add one (sudoku, maze or arc) "
                                  "or list the model in a models file (RECURSOLVE_MODELS_FILE)")
        try:
            specs.append(ModelSpec(name=folder.name, task=task, path=folder.resolve()))
        except ValidationError as e:
            raise ModelsFileError(where + ": " + "; ".join(_field_error(err) for err in e.errors())) from None
    return specs
