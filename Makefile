# `make run` starts Redis (embedded unless DIA_REDIS_URL is set), one worker and the bot.
# `make test` runs every check: ruff, mypy and pytest.
# Both create .venv on first use: system packages, then torch, then the project with all extras.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first so pip never resolves it on its own. On Linux, PyPI's torch is the CUDA build;
# for a CPU-only machine: make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: run test lint typecheck pytest install clean

run: $(VENV)/.installed
	@$(BIN)/python -m launcher

test: lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: $(VENV)/.installed
	$(BIN)/pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/system-deps.sh
	@scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[all,dev]"
	@touch $@

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
