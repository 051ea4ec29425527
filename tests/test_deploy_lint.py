"""Deployment files: the lint script (when its tools are installed) and checks that tie the Docker,
compose and Kubernetes files to the server's actual settings and metrics.

The container smoke test (deploy/smoke.sh) needs a Docker engine and minutes; it is not run here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
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


# --- alert rules -------------------------------------------------------------------------------------------

ALERTS = ROOT / "deploy" / "alerts.yml"
# What an alert expression may name besides app/metrics.py's samples: Prometheus' own per-target series.
STANDARD_SERIES = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "inf", "nan"}


def _alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def series_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers left once strings, label matchers, grouping
    clauses, range/offset durations, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery durations
    expr = re.sub(r"\boffset\s+\S+", " ", expr)
    idents = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr)
    return {name for name, call in idents if not call and name.lower() not in PROMQL_WORDS}


def _exported_series() -> set[str]:
    metrics = pytest.importorskip("app.metrics", reason="app/metrics.py not there yet")
    from prometheus_client.metrics import MetricWrapperBase

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {m.name + s for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)
            for m in obj.describe() for s in suffixes.get(m.type, ("",))}


def test_series_names_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{status="x y"}[5m] offset 1h))) > 10 '
            "and on (job) b_total / ignoring(model) c unless absent(up{job='j'})")
    assert series_names(expr) == {"a_bucket", "b_total", "c", "up"}


def test_alert_rules_cover_the_issue_and_query_only_exported_metrics() -> None:
    rules = _alert_rules()
    assert {r["alert"] for r in rules} >= {"RecursolveHighErrorRatio", "RecursolveHighP99Latency",
                                           "RecursolveQueueSaturated", "RecursolveShedding429",
                                           "RecursolveNotReady", "RecursolveCacheErrors"}
    allowed = _exported_series() | STANDARD_SERIES
    for rule in rules:
        used = series_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= allowed, f"{rule['alert']} queries series app/metrics.py does not export: {used - allowed}"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_alert_rules_unit_tests_pass() -> None:
    proc = subprocess.run(["promtool", "test", "rules", str(ROOT / "deploy" / "alerts.test.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheusrule_is_generated_from_the_alerts_file() -> None:
    spec = importlib.util.spec_from_file_location("alerts_to_k8s", ROOT / "deploy" / "alerts_to_k8s.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text()
    assert text == module.render(), "k8s/base/prometheusrule.yaml is stale: run python3 deploy/alerts_to_k8s.py"
    assert yaml.safe_load(text)["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_compose_prometheus_mounts_the_rule_files_it_loads() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["rule_files"], "deploy/prometheus.yml loads no alert rules"
    mounts = {}
    for volume in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    for rule_file in config["rule_files"]:
        target = rule_file if rule_file.startswith("/") else f"/etc/prometheus/{rule_file}"
        assert mounts.get(target) == "./deploy/alerts.yml", f"{rule_file} is not mounted into the container"


# --- rendered overlays: PodDisruptionBudget, NetworkPolicy, PrometheusRule ----------------------------------

OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SERVER = {"app.kubernetes.io/name": "recursolve", "app.kubernetes.io/component": "server"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    kubectl = LINT_VENV / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed: deploy/lint.sh installs it into .venv-deploy")
    out = {}
    for name in OVERLAYS:
        proc = subprocess.run([str(kubectl), "kustomize", str(ROOT / "k8s" / "overlays" / name)],
                              capture_output=True, text=True, timeout=120, check=True)
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _one(docs: list[dict], kind: str, name: str = "recursolve") -> dict:
    (obj,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"selector form not handled here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _replica_range(docs: list[dict]) -> tuple[int, int]:
    """(min, max) replicas of the server Deployment: from its HPA, its KEDA ScaledObject, or `replicas`."""
    scalers = [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    if not scalers:
        replicas = _one(docs, "Deployment")["spec"].get("replicas", 1)
        return replicas, replicas
    (scaler,) = scalers
    spec = scaler["spec"]
    if scaler["kind"] == "ScaledObject":
        return spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    return spec.get("minReplicas", 1), spec["maxReplicas"]


def allowed_disruptions(pdb_spec: dict, replicas: int) -> int:
    """Evictions a PDB allows with `replicas` healthy pods (the disruption controller's arithmetic; a
    percentage rounds up, as Kubernetes does)."""
    def count(value: int | str) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return -(-int(value[:-1]) * replicas // 100)
        return int(value)

    if "minAvailable" in pdb_spec:
        return max(0, replicas - count(pdb_spec["minAvailable"]))
    return max(0, count(pdb_spec["maxUnavailable"]))


def test_allowed_disruptions_arithmetic() -> None:
    assert allowed_disruptions({"maxUnavailable": 1}, 1) == 1  # the old gpu budget: the only pod may go
    assert allowed_disruptions({"minAvailable": 1}, 1) == 0
    assert allowed_disruptions({"minAvailable": 1}, 3) == 2
    assert allowed_disruptions({"maxUnavailable": "50%"}, 3) == 2
    assert allowed_disruptions({"minAvailable": "50%"}, 3) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_keeps_a_pod_serving_and_lets_drains_proceed(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    pods = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget" and _selects(d["spec"]["selector"], pods)]
    assert len(pdbs) == 1, f"{overlay}: {len(pdbs)} budgets select the server pods (eviction needs exactly one)"
    spec = pdbs[0]["spec"]
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec), spec
    low, high = _replica_range(docs)
    assert low >= 1, f"{overlay}: the server may scale to zero"
    for replicas in range(low, high + 1):
        allowed = allowed_disruptions(spec, replicas)
        assert replicas - allowed >= 1, f"{overlay}: at {replicas} replicas a drain may take every pod"
        if replicas >= 2:
            assert allowed >= 1, f"{overlay}: at {replicas} replicas no drain can ever proceed"
        assert allowed <= max(1, replicas // 2), f"{overlay}: at {replicas} replicas {allowed} pods may go at once"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_the_api_port_and_allows_only_redis_and_dns(rendered, overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    api_port = {p["name"]: p["containerPort"] for p in container["ports"]}
    redis = _one(docs, "Deployment", "recursolve-redis")["spec"]["template"]
    redis_labels = redis["metadata"]["labels"]
    redis_port = redis["spec"]["containers"][0]["ports"][0]["containerPort"]
    namespace = deployment["metadata"]["namespace"]

    policy = _one(docs, "NetworkPolicy")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == namespace
    assert _selects(spec["podSelector"], pods) and sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    for rule in spec["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        assert [(p["port"], p["protocol"]) for p in rule["ports"]] == [("http", "TCP")]
        assert "http" in api_port
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert peer.get("podSelector") == {} or "namespaceSelector" in peer, peer  # namespace-wide peers only
    egress_ports = set()
    for rule in spec["egress"]:
        assert rule.get("to"), "an egress rule without `to` allows every destination"
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        for peer in rule["to"]:
            if ports == {(redis_port, "TCP")}:
                assert "namespaceSelector" not in peer and _selects(peer["podSelector"], redis_labels)
            else:
                assert ports == {(53, "UDP"), (53, "TCP")}, ports
                assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        egress_ports |= ports
    assert egress_ports == {(redis_port, "TCP"), (53, "UDP"), (53, "TCP")}

    redis_policy = _one(docs, "NetworkPolicy", "recursolve-redis")["spec"]
    assert _selects(redis_policy["podSelector"], redis_labels) and redis_policy["egress"] == []
    (rule,) = redis_policy["ingress"]
    assert [_selects(peer["podSelector"], pods) for peer in rule["from"]] == [True]
    assert rule["ports"] == [{"port": redis_port, "protocol": "TCP"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_ships_the_alert_rules(rendered, overlay: str) -> None:
    rule = _one(rendered[overlay], "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
