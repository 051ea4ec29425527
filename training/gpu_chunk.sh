#!/usr/bin/env bash
# One resumable GPU training chunk (under 10 minutes), for machines that come and go.
#
#   training/gpu_chunk.sh CONFIG [MINUTES]      e.g. training/gpu_chunk.sh training/configs/gpu-trm-mlp-sudoku-512.json 8
#
# Resumes from runs/<name>/checkpoint/ when it exists (a folder of files <= checkpoint_shard_mib each, 15 MiB in
# the gpu-* configs, so it can be carried between machines next to the config and data), else starts fresh.
# Stops cleanly after MINUTES (default 8) with a checkpoint and runs/<name>/model_ema; model_best is the best
# validation check so far. Carry back: runs/<name>/{checkpoint/,model_ema/,model_best/,log.jsonl,config.json}.
set -euo pipefail
cfg=${1:?usage: training/gpu_chunk.sh CONFIG [MINUTES]}
minutes=${2:-8}
py=${PYTHON:-python}
name=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$cfg")
runs=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("runs_dir", "runs"))' "$cfg")
resume=()
if [ -f "$runs/$name/checkpoint/index.json" ]; then
  resume=(--resume)
fi
exec "$py" -m training.cli train --config "$cfg" --device cuda --max-minutes "$minutes" --no-progress "${resume[@]}"
