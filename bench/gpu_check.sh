#!/usr/bin/env bash
# One device-tool call that checks the engine's CUDA path and measures it (issue 9), within a short lease.
# Prepare here once:  echo /.whl/ >> .git/info/exclude && bash deploy/gpu-wheels.sh .whl
# Then run on the GPU machine (device tool, carry [".whl"]):  bash bench/gpu_check.sh [DURATION_S] [MODES|none]
# Everything it prints and writes lands in $OUT (default ./gpu-out): check.log (machine and tests), bench.log,
# the benchmark's JSON (serve-gpu[-TAG].json), nvidia-smi's utilisation samples taken while it ran (dmon.txt),
# and with PROFILE=1 py-spy's stacks of the engine-core and one API process per HTTP mode ($OUT/prof; the
# device tool returns 8 files). Logs are appended, so several calls in one command share them.
# A failing step does not stop the next one: each figure that can be had comes back.
# Environment: SKIP_TESTS=1 runs the benchmark alone; API_LAYERS=1 runs bench/api_layers.py first; API_WORKERS=N API processes of `recursolve serve`;
# CLIENT_PROCS=N load-generator processes (default 4; serve_bench's clients_busy says whether they were the cap);
# TAG names this call's JSON; EXTRA adds serve_bench arguments (e.g. '--compile off', '--overlap off'); BENCH_TIMEOUT
# (s, default 400); TEST_TIMEOUT (s, default 300) bounds the cuda tests.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
duration=${1:-12}
modes=${2:-graph,inproc,engine,continuous,verifier,batch,static}  # none: the tests (and API_LAYERS) alone
tag=${TAG:+-$TAG}

if [ ! -d /tmp/site/fastapi ]; then  # installed once per machine
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
{ echo "== gpu_check${tag} $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, fastapi, zmq, msgspec; print(torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$OUT/check.log"

t=$(date +%s)
if [ -z "${SKIP_TESTS:-}" ]; then
timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -m cuda --durations=6 tests/test_engine_cuda.py 2>&1 \
  | tee -a "$OUT/check.log"
# The two tests that failed on the 16-core GPU machine before (issue 9, item 7).
timeout 120 python3 -m pytest -q -p no:cacheprovider \
  tests/test_models_ptrm.py::test_sigma_zero_reproduces_plain_trm_exactly \
  tests/test_app_engine_batching.py::test_queue_full_is_429_with_retry_after 2>&1 | tee -a "$OUT/check.log"
echo "tests took $(( $(date +%s) - t )) s" | tee -a "$OUT/check.log"
fi

# The API process's own Python per answer on this host's CPU (~25 s, no GPU): against the VM's
# bench/results/api-layers-vm.json it says how much of the HTTP modes' API CPU per answer is this CPU's speed.
if [ -n "${API_LAYERS:-}" ]; then
  timeout 120 python3 bench/api_layers.py --seconds 2 --repeats 2 --out "$OUT/api-layers-gpu-host.json" 2>&1 \
    | tee -a "$OUT/check.log"
fi

if [ "$modes" = none ]; then
  exit 0
fi
echo "== gpu_check${tag} $(date -u +%FT%TZ)" >> "$OUT/dmon.txt"
nvidia-smi dmon -s um -d 1 >> "$OUT/dmon.txt" 2>&1 &
dmon=$!
# API_WORKERS unset: the server's default, on a GPU machine three quarters of the cores (12 of 16).
# shellcheck disable=SC2086  # EXTRA is a list of arguments
timeout "${BENCH_TIMEOUT:-400}" python3 bench/serve_bench.py --device cuda --client-procs "${CLIENT_PROCS:-4}" \
  --concurrency 256 \
  ${API_WORKERS:+--api-workers "$API_WORKERS"} ${PROFILE:+--profile-dir "$OUT/prof$tag"} ${EXTRA:-} \
  --duration "$duration" --warmup 3 --modes "$modes" --out "$OUT/serve-gpu$tag.json" 2>&1 | tee -a "$OUT/bench.log"
kill "$dmon" 2>/dev/null
echo "gpu_check${tag} took $(( $(date +%s) - t )) s" | tee -a "$OUT/bench.log"
