"""Settings from RECURSOLVE_* variables, the YAML models file and weights-folder discovery."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from app.settings import (
    ModelsFileError,
    ModelSpec,
    Settings,
    SettingsError,
    get_settings,
    load_model_specs,
    read_models_file,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("RECURSOLVE_"):
            monkeypatch.delenv(name)


def model_folder(root: Path, name: str, task: str | None = "sudoku") -> Path:
    """A folder that looks like one of ours (load_model_specs never opens the weights)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    config = {"arch": "trm", "seq_len": 81, "vocab_size": 11} | ({"task": task} if task else {})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_defaults() -> None:
    s = get_settings()
    assert (s.host, s.port, s.models_file, s.redis_url) == ("127.0.0.1", 8000, None, None)
    assert s.weights_dir == REPO / "weights"
    assert (s.cache_ttl_seconds, s.cache_max_entries, s.cache_enabled, s.warmup) == (86400, 10000, True, True)
    assert (s.drain_grace_seconds, s.max_batch_items, s.max_request_bytes) == (20, 64, 1_000_000)
    assert s.default_deadline_ms == 30_000 and s.log_level == "info"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "RECURSOLVE_HOST": "127.0.0.1", "RECURSOLVE_PORT": "9001", "RECURSOLVE_WEIGHTS_DIR": str(tmp_path),
        "RECURSOLVE_REDIS_URL": "redis://cache:6379/2", "RECURSOLVE_CACHE_TTL_SECONDS": "60",
        "RECURSOLVE_CACHE_ENABLED": "false", "RECURSOLVE_DRAIN_GRACE_SECONDS": "2.5",
        "recursolve_max_batch_items": "8",  # case-insensitive
        "RECURSOLVE_DEFAULT_DEADLINE_MS": "1500", "RECURSOLVE_WARMUP": "0", "RECURSOLVE_LOG_LEVEL": "DEBUG",
        "RECURSOLVE_MODELS_FILE": str(tmp_path / "models.yaml"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = get_settings()
    assert (s.host, s.port, s.weights_dir, s.redis_url) == ("127.0.0.1", 9001, tmp_path, "redis://cache:6379/2")
    assert (s.cache_ttl_seconds, s.cache_enabled, s.drain_grace_seconds, s.max_batch_items) == (60, False, 2.5, 8)
    assert (s.default_deadline_ms, s.warmup, s.log_level) == (1500, False, "debug")
    assert s.models_file == tmp_path / "models.yaml"


def test_blank_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECURSOLVE_REDIS_URL", "")
    monkeypatch.setenv("RECURSOLVE_MODELS_FILE", " ")
    monkeypatch.setenv("RECURSOLVE_DEFAULT_DEADLINE_MS", "")
    s = get_settings()
    assert s.redis_url is None and s.models_file is None and s.default_deadline_ms is None


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RECURSOLVE_PORT", "eighty", "RECURSOLVE_PORT='eighty': Input should be a valid integer"),
    ("RECURSOLVE_PORT", "70000", "RECURSOLVE_PORT='70000': Input should be less than or equal to 65535"),
    ("RECURSOLVE_PORT", "tcp://10.0.0.7:8000", "looks like a Kubernetes service link"),
    ("RECURSOLVE_REDIS_URL", "cache:6379", "RECURSOLVE_REDIS_URL='cache:6379': 'cache:6379' is not a Redis URL"),
    ("RECURSOLVE_CACHE_TTL_SECONDS", "0", "RECURSOLVE_CACHE_TTL_SECONDS='0': Input should be greater than or equal"),
    ("RECURSOLVE_LOG_LEVEL", "loud", "unknown log level 'loud'; expected one of critical, error, warning"),
    ("RECURSOLVE_DEFAULT_DEADLINE_MS", "-5", "RECURSOLVE_DEFAULT_DEADLINE_MS='-5': Input should be greater than 0"),
    ("RECURSOLVE_CACHE_ENABLED", "maybe", "RECURSOLVE_CACHE_ENABLED='maybe': Input should be a valid boolean"),
    # a cap above the request schema's own limit could never be reached (a request over 4096 is a 422 anyway)
    ("RECURSOLVE_MAX_STEPS_CAP", "8192", "RECURSOLVE_MAX_STEPS_CAP='8192': Input should be less than or equal to 4096"),
    ("RECURSOLVE_DEADLINE_MS_CAP", "7200000", "Input should be less than or equal to 3600000"),
])
def test_bad_env_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert message in str(err.value)


def test_unknown_env_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RECURSOLVE_REDIS_ULR", "redis://x")
    monkeypatch.setenv("RECURSOLVE_SERVICE_HOST", "10.0.0.7")  # a Kubernetes service link: not a typo
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        get_settings()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "RECURSOLVE_REDIS_ULR" in messages[0]


# -- models file ---------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_models_file_full_entry(tmp_path: Path) -> None:
    model_folder(tmp_path / "weights", "trm-att-maze", task="maze")
    ckpt = tmp_path / "official" / "step_100"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    (tmp_path / "conf").mkdir()
    f = write(tmp_path / "conf" / "models.yaml", """
models:
  - name: trm-att-maze
    task: maze
    path: ../weights/trm-att-maze      # relative to this file's folder
    backend: onnx
    device: cuda:0
    dtype: bfloat16
    batch_rows: 16
    max_queue_rows: 256
    default_options: {max_steps: 32, trajectories: 4}
  - name: official-sudoku
    task: sudoku
    path: ../official/step_100
""")
    specs = load_model_specs(Settings(models_file=f, weights_dir=tmp_path / "nothing"))
    assert [s.name for s in specs] == ["trm-att-maze", "official-sudoku"]  # file order kept
    maze, official = specs
    assert maze == ModelSpec(name="trm-att-maze", task="maze", path=(tmp_path / "weights" / "trm-att-maze"),
                             backend="onnx", device="cuda:0", dtype="bfloat16", batch_rows=16, max_queue_rows=256,
                             default_options={"max_steps": 32, "trajectories": 4})
    assert official.path == ckpt and official.backend == "torch" and official.device == "auto"
    assert (official.dtype, official.batch_rows, official.max_queue_rows, official.default_options) == (
        None, None, None, {})  # sized for the device when the engine loads it


def test_models_file_bare_list_and_task_from_config(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "m1", task="sudoku")
    f = write(tmp_path / "models.yaml", f"- name: m1\n  path: {folder}\n")
    (spec,) = read_models_file(f)
    assert spec.task == "sudoku" and spec.path == folder


def test_models_file_empty_list(tmp_path: Path) -> None:
    assert read_models_file(write(tmp_path / "m.yaml", "models: []\n")) == []


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty; expected a list of models"),
    ("models: [\n", "not valid YAML"),
    ("serve: []\n", "unknown top-level key(s) serve"),
    ("models: {name: a}\n", "'models' must be a list of mappings, got dict"),
    ("models: [just-a-name]\n", "models[0]: expected a mapping"),
    ("models:\n  - {name: a, task: sudoku}\n", "models[0] (a): field 'path' is required"),
    ("models:\n  - {name: a, task: sudoku, path: missing}\n", "models[0] (a): field 'path': "),
    ("models:\n  - {name: a, task: chess, path: w/m}\n", "models[0] (a): field 'task': unknown task 'chess'"),
    ("models:\n  - {name: a, task: maze, path: w/m}\n",
     "models[0] (a): field 'task': 'maze' does not match the task 'sudoku'"),
    ("models:\n  - {name: a, path: w/m, batch_rows: 0}\n",
     "models[0] (a): field 'batch_rows': Input should be greater than or equal to 1 (got 0)"),
    ("models:\n  - {name: a, path: w/m, backend: tensorrt}\n", "models[0] (a): field 'backend': Input should be"),
    ("models:\n  - {name: a, path: w/m, device: gpu}\n", "field 'device': unknown device 'gpu'"),
    ("models:\n  - {name: a, path: w/m, dtype: int4}\n", "field 'dtype': unknown dtype 'int4'"),
    ("models:\n  - {name: a, path: w/m, batch_row: 8}\n", "models[0] (a): unknown field 'batch_row' (allowed:"),
    ("models:\n  - {name: 'a b', path: w/m}\n", "field 'name': 'a b' is not a usable model name"),
    ("models:\n  - {name: a, path: w/m, limits: {max_trajectories: 2048}}\n",
     "Input should be less than or equal to 1024"),
    ("models:\n  - {name: a, path: w/m}\n  - {name: a, path: w/m}\n",
     "models[1] (a): name 'a' is already used by models[0]"),
])
def test_models_file_errors_name_entry_and_field(tmp_path: Path, text: str, message: str) -> None:
    model_folder(tmp_path / "w", "m", task="sudoku")
    f = write(tmp_path / "models.yaml", text)
    with pytest.raises(ModelsFileError) as err:
        read_models_file(f)
    assert message in str(err.value)
    assert str(f) in str(err.value)


def test_missing_models_file(tmp_path: Path) -> None:
    with pytest.raises(ModelsFileError, match="does not exist"):
        load_model_specs(Settings(models_file=tmp_path / "nope.yaml"))


def test_example_models_file_is_valid(tmp_path: Path) -> None:
    """app/models.example.yaml parses (its paths point at weights/ and need not exist here)."""
    import yaml

    doc = yaml.safe_load((REPO / "app" / "models.example.yaml").read_text())
    for entry in doc["models"]:
        model_folder(tmp_path / "weights", Path(entry["path"]).name, task=entry.get("task", "sudoku"))
    text = (REPO / "app" / "models.example.yaml").read_text().replace("../weights/", f"{tmp_path}/weights/")
    specs = read_models_file(write(tmp_path / "models.yaml", text))
    assert [s.name for s in specs] == [e["name"] for e in doc["models"]]


# -- discovery -----------------------------------------------------------------------------------------


def test_discovery_sorted_and_filtered(tmp_path: Path) -> None:
    model_folder(tmp_path, "trm-mlp-sudoku")
    model_folder(tmp_path, "hrm-sudoku")
    model_folder(tmp_path, "trm-att-maze", task="maze")
    (tmp_path / "notes").mkdir()  # not a model folder: skipped
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # no weights: skipped
    (tmp_path / "README.md").write_text("x")
    specs = load_model_specs(Settings(weights_dir=tmp_path))
    assert [(s.name, s.task) for s in specs] == [("hrm-sudoku", "sudoku"), ("trm-att-maze", "maze"),
                                                ("trm-mlp-sudoku", "sudoku")]
    assert all(s.path == tmp_path / s.name and s.backend == "torch" and s.batch_rows is None for s in specs)


def test_discovery_empty_or_absent(tmp_path: Path) -> None:
    assert load_model_specs(Settings(weights_dir=tmp_path)) == []
    assert load_model_specs(Settings(weights_dir=tmp_path / "absent")) == []


def test_discovery_needs_task(tmp_path: Path) -> None:
    model_folder(tmp_path, "mystery", task=None)
    with pytest.raises(ModelsFileError, match=r"mystery: config.json has no 'task'"):
        load_model_specs(Settings(weights_dir=tmp_path))
    (tmp_path / "mystery" / "config.json").write_text("{not json")
    with pytest.raises(ModelsFileError, match="cannot read"):
        load_model_specs(Settings(weights_dir=tmp_path))


def test_the_server_wide_compile_fills_only_entries_that_leave_it_out(tmp_path):
    from app.settings import ModelSpec, Settings, with_server_defaults

    left_out = ModelSpec(name="a", task="sudoku", path=tmp_path)
    chosen = ModelSpec(name="b", task="sudoku", path=tmp_path, compile=True)
    a, b = with_server_defaults([left_out, chosen], Settings(compile=False))
    assert a.compile is False and b.compile is True
    a, b = with_server_defaults([left_out, chosen], Settings())
    assert a.compile is None and b.compile is True  # None: the engine's default (on for CUDA)


def test_the_server_wide_overlap_fills_only_entries_that_leave_it_out(tmp_path, monkeypatch):
    from app.settings import ModelSpec, Settings, with_server_defaults

    left_out = ModelSpec(name="a", task="sudoku", path=tmp_path)
    chosen = ModelSpec(name="b", task="sudoku", path=tmp_path, overlap=False)
    monkeypatch.setenv("RECURSOLVE_OVERLAP", "true")  # how CI runs the engine tests through the overlapped step
    a, b = with_server_defaults([left_out, chosen], Settings())
    assert a.overlap is True and b.overlap is False
    monkeypatch.delenv("RECURSOLVE_OVERLAP")
    a, b = with_server_defaults([left_out, chosen], Settings())
    assert a.overlap is None and b.overlap is False  # None: the engine's default (on for CUDA)


@pytest.mark.parametrize("on", [False, True])
async def test_fastapi_telemetry_runs_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     on: bool) -> None:
    # FastAPI's native OpenTelemetry looks the tracer provider up on every request while it is on, even with no
    # provider set (~15 us of an API process's CPU); RECURSOLVE_OPENTELEMETRY=false (the default) turns it off.
    import httpx
    from opentelemetry import trace

    from app.main import create_app

    lookups = []
    real = trace.get_tracer_provider
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: lookups.append(1) or real())
    app = create_app(Settings(weights_dir=tmp_path, opentelemetry=on), [])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
    assert (len(lookups) >= 3) is on
