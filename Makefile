# The two set-up commands of the README. Each installs what it needs into .venv first:
# torch 2.13.0 (the CPU build on these machines) before anything that depends on torch, so pip
# never pulls a multi-GB CUDA build, then this package with its tested dependency ranges.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: train test test-fast lint install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Main job on the embedded default: bundled digits DiT -> TIDE SAE -> per-timestep report.
train: install
	$(BIN)/sae-lens-dit train

## The test suite (offline, CPU) plus every docstring example in the package.
test: install
	$(BIN)/ruff check sae_lens_dit tests scripts benchmarks
	$(BIN)/ruff format --check sae_lens_dit tests scripts benchmarks
	$(BIN)/python -m pytest

## The suite without the tests marked slow (killed-and-resumed runs, wheel installs): a quick loop while editing.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check sae_lens_dit tests scripts benchmarks
	$(BIN)/ruff format --check sae_lens_dit tests scripts benchmarks
