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
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
# torch first, pinned, so the project's `torch>=2.6` floor never makes pip pick another build.
RUN pip install "${TORCH_SPEC}" && pip install ".[worker]"
USER app
# Model weights download into the user's hub cache; mount a volume there to keep them between containers.
ENV HF_HOME=/home/app/.cache/huggingface
ENTRYPOINT ["python", "-m"]
CMD ["tts_engine", "worker"]
