# syntax=docker/dockerfile:1
# Two targets:
#   docker build --target bot -t dia-bot .        slim Python, no torch
#   docker build --target worker -t dia-worker .  PyPI's CUDA build of torch, which bundles the CUDA runtime:
#                                                  the host needs only the NVIDIA driver and container toolkit
# Both read DIA_* settings from the environment (docker run --env-file .env) and run as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY config ./config
COPY tts_engine ./tts_engine
COPY bot ./bot
COPY cogs ./cogs
COPY launcher ./launcher

FROM base AS bot
RUN pip install ".[bot]"
USER app
ENTRYPOINT ["python", "-m"]
CMD ["bot"]

FROM base AS worker
ARG TORCH_SPEC=torch==2.13.0
# ffmpeg decodes users' voice clips; Triton builds its small C launcher per kernel at start-up, so the worker
# needs a C compiler and libc headers (without them its kernels, and torch.compile's, fail to load).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# torch first, pinned, so the project's `torch>=2.6` floor never makes pip pick another build.
RUN pip install "${TORCH_SPEC}" && pip install ".[worker]"
USER app
# The weights (hub cache) and the kernels compiled at start-up (Triton, Inductor) all live under ~/.cache: mount
# one volume there to keep them between containers. Made here by the app user, so that a new named volume takes
# its owner (one Docker made itself would be root's, and the worker could not write to it).
ENV HF_HOME=/home/app/.cache/huggingface \
    TRITON_CACHE_DIR=/home/app/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/home/app/.cache/torchinductor
RUN mkdir -p "$HF_HOME" "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"
ENTRYPOINT ["python", "-m"]
CMD ["tts_engine", "worker"]
