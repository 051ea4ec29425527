# recursolve container image.
#
#   CPU (default target):  docker build -t recursolve:cpu .
#   GPU (CUDA torch + onnxruntime-gpu):  docker build --target gpu -t recursolve:gpu .
#
# Secrets and offline builds (see README.md, "Deploying"):
#   --secret id=pip_cert,src=/path/to/ca.pem   CA bundle for pip behind a TLS-intercepting proxy; it is
#                                               mounted only while pip runs and never lands in a layer.
#   deploy/wheels/torch-<version>*.whl          a torch wheel placed there is installed instead of
#                                               downloading one (air-gapped builds, local mirrors).
# No `# syntax=` line on purpose: it would make BuildKit pull a frontend image, which fails where no
# registry is reachable; the built-in frontend (Docker >= 20.10) supports everything used here.

ARG PYTHON_IMAGE=python:3.11-slim
# PyPI's torch wheels bundle the CUDA 13 runtime and cuDNN, so the base image only needs to match
# the driver; switch to a -cudnn-runtime tag if onnxruntime-gpu should use system libraries.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---------------------------------------------------------------- CPU build stage
FROM ${PYTHON_IMAGE} AS builder-cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION=2.13.0
# PyPI's Linux torch is the multi-GB CUDA build; the CPU wheel comes from PyTorch's own index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
RUN --mount=type=bind,source=deploy/wheels,target=/wheels \
    --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    wheel="$(find /wheels -maxdepth 1 -name "torch-${TORCH_VERSION}[+-]*.whl" | sort | head -n 1)"; \
    if [ -n "$wheel" ]; then pip install "$wheel"; \
    else pip install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple \
        "torch==${TORCH_VERSION}"; fi
WORKDIR /src
# Dependencies first, from pyproject.toml alone (empty packages), so code edits reuse this layer.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    mkdir -p app models puzzles training && touch README.md app/__init__.py models/__init__.py \
        puzzles/__init__.py training/__init__.py \
    && pip install . && pip uninstall -y recursolve && rm -rf /src/*
# README.md is only package metadata here (pyproject's `readme`); an empty one keeps the context small.
COPY pyproject.toml ./
COPY app ./app
COPY models ./models
COPY puzzles ./puzzles
COPY training ./training
RUN --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    touch README.md && pip install --no-deps . && pip check

# ---------------------------------------------------------------- GPU base and build stage
FROM ${CUDA_IMAGE} AS gpu-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS builder-gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION=2.13.0
# On PyPI the Linux torch wheel is the CUDA build.
ARG TORCH_GPU_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY app ./app
COPY models ./models
COPY puzzles ./puzzles
COPY training ./training
# torch (CUDA) first so the project's torch pin is already met; then swap the CPU onnxruntime for
# onnxruntime-gpu (both provide the `onnxruntime` module and must not be installed together; pip check
# then reports the `onnxruntime` requirement as unmet by name, which is expected and the only exception).
RUN --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    touch README.md \
    && pip install --index-url "$TORCH_GPU_INDEX_URL" "torch==${TORCH_VERSION}" \
    && pip install . \
    && pip uninstall -y onnxruntime \
    && pip install onnxruntime-gpu \
    && problems="$(pip check 2>&1 | grep -v -e '^No broken requirements' \
                   -e '^recursolve .* requires onnxruntime, which is not installed' || true)" \
    && { [ -z "$problems" ] || { echo "$problems"; exit 1; }; }

# ---------------------------------------------------------------- GPU runtime image
FROM gpu-base AS gpu
# The ACT step is torch.compile'd on CUDA by default; Triton builds its kernel launcher with the C compiler and
# Python's headers at run time. Without them the compile fails and the server falls back to the eager step.
# Its caches (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR below) live under /tmp, the one writable path when the
# root filesystem is read-only (k8s/base); a volume there keeps restarts at ~20 s instead of an ~80 s compile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 recursolve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin recursolve
COPY --from=builder-gpu /opt/venv /opt/venv
COPY --chown=10001:10001 weights /app/weights
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECURSOLVE_WEIGHTS_DIR=/app/weights \
    RECURSOLVE_HOST=0.0.0.0 \
    RECURSOLVE_PORT=8000 \
    XDG_CACHE_HOME=/tmp/cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/cache/inductor \
    TRITON_CACHE_DIR=/tmp/cache/triton \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RECURSOLVE_PORT', '8000') + '/healthz', timeout=4)"]
CMD ["recursolve", "serve"]

# ---------------------------------------------------------------- CPU runtime image (default: last stage)
FROM ${PYTHON_IMAGE} AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tcmalloc makes eager torch 1.3-2x faster and steadier on CPU (measured; see the serving notes).
# The package was renamed (t64) in Debian trixie, hence the fallback.
RUN apt-get update \
    && { apt-get install -y --no-install-recommends libtcmalloc-minimal4 \
         || apt-get install -y --no-install-recommends libtcmalloc-minimal4t64; } \
    && ln -s "$(find /usr/lib -name 'libtcmalloc_minimal.so.4' | head -n 1)" /usr/local/lib/libtcmalloc_minimal.so.4 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 recursolve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin recursolve
COPY --from=builder-cpu /opt/venv /opt/venv
COPY --chown=10001:10001 weights /app/weights
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LD_PRELOAD=/usr/local/lib/libtcmalloc_minimal.so.4 \
    RECURSOLVE_WEIGHTS_DIR=/app/weights \
    RECURSOLVE_HOST=0.0.0.0 \
    RECURSOLVE_PORT=8000 \
    XDG_CACHE_HOME=/tmp/cache
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RECURSOLVE_PORT', '8000') + '/healthz', timeout=4)"]
CMD ["recursolve", "serve"]
