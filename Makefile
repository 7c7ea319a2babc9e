# Two commands on a fresh machine: `make serve` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[train,dev,redis,milvus]'
	touch $@ $(VENV)/.serve-installed

## Create the environment, install the serving dependencies (no torch) and start the service
## on the shipped default model with embedded storage under ./data.
serve: $(VENV)/.serve-installed
	@# the default person detector (pinned YOLOX-nano, Apache-2.0; checked, fetched once); offline: HOG
	@$(BIN)/reid fetch-detector >/dev/null || echo "warning: YOLOX-nano not installed; footage uses the HOG detector"
	$(BIN)/reid serve

## Install what the tests need (torch for training/export tests) and run the whole suite.
test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
