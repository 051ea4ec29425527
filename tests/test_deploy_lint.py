"""Deployment files: the lint script (when its tools are installed) and checks that tie the Docker,
compose and Kubernetes files to the server's actual settings and metrics.

The container smoke test (deploy/smoke.sh) needs a Docker engine and minutes; it is not run here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LINT_VENV = ROOT / ".venv-deploy" / "bin"
LINT_TOOLS = ("hadolint", "docker-compose", "kubectl", "kubernetes-validate")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "recursolve.json"


def _dashboard_queries_module():
    spec = importlib.util.spec_from_file_location("dashboard_queries", ROOT / "deploy" / "dashboard_queries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _seconds(value: str | int | float) -> float:
    """Compose durations ('30s', '1m30s') or plain numbers, in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts, f"unreadable duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.skipif(
    not all((LINT_VENV / tool).exists() for tool in LINT_TOOLS),
    reason="deploy lint tools not installed: deploy/lint.sh installs them into .venv-deploy (PyPI, ~15 s)",
)
def test_deploy_lint_script_passes() -> None:
    proc = subprocess.run(["bash", str(ROOT / "deploy" / "lint.sh")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "deploy lint: all passed" in proc.stdout


def test_dashboard_queries_only_exported_metrics() -> None:
    metrics = pytest.importorskip("app.metrics", reason="app/metrics.py not there yet")
    from prometheus_client.metrics import MetricWrapperBase

    exported = {m.name for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)
                for m in obj.describe()}
    dq = _dashboard_queries_module()
    queries = dq.panel_queries(json.loads(DASHBOARD.read_text()))
    used = dq.metric_families(queries)
    assert used, "the dashboard has no recursolve_ queries"
    assert used <= exported, f"panels query metrics the server does not export: {sorted(used - exported)}"


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_stop_grace_covers_the_drain() -> None:
    """SIGTERM -> the server drains for RECURSOLVE_DRAIN_GRACE_SECONDS, so the orchestrators must wait longer
    (Kubernetes: the preStop sleep runs first, inside terminationGracePeriodSeconds)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["recursolve"]
    drain = float(compose["environment"]["RECURSOLVE_DRAIN_GRACE_SECONDS"])
    assert _seconds(compose["stop_grace_period"]) > drain

    (deploy,) = [d for d in _yaml_docs(ROOT / "k8s/base/deployment.yaml") if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert float(env["RECURSOLVE_DRAIN_GRACE_SECONDS"]) == drain
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_k8s_models_files_load(tmp_path: Path) -> None:
    """The models files in k8s/ name weights that ship in the image and fields the server accepts."""
    settings = pytest.importorskip("app.settings", reason="app/settings.py not there yet")
    weights = ROOT / "weights"
    if not any(p.is_dir() and (p / "config.json").exists() for p in weights.glob("*")):
        pytest.skip("no model folders under weights/ yet")
    for rel in ("k8s/base/models.yaml", "k8s/overlays/gpu/models.yaml"):
        text = (ROOT / rel).read_text().replace("/app/weights/", f"{weights}/")
        local = tmp_path / rel.replace("/", "_")
        local.write_text(text)
        specs = settings.read_models_file(local)
        assert specs, rel
        assert {s.device.split(":")[0] for s in specs} == ({"cuda"} if "gpu" in rel else {"cpu"}), rel


def test_dashboard_queries_cli_prints_every_query() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/dashboard_queries.py"), "--with-titles"],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    dash = json.loads(DASHBOARD.read_text())
    assert len(lines) == sum(len(p["targets"]) for p in dash["panels"])
    assert all("$" not in line.split("\t", 1)[1] for line in lines), "Grafana variables left in a query"


@pytest.mark.parametrize("compose_file",
                         ["docker-compose.yml", "deploy/compose.gpu.yml", "deploy/smoke/compose.smoke.yml"])
def test_compose_bind_mounts_exist(compose_file: str) -> None:
    """`docker compose config` does not check bind-mount sources; a missing one fails only at `up`."""
    services = yaml.safe_load((ROOT / compose_file).read_text()).get("services", {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{compose_file}: service {name} mounts missing {source}"
