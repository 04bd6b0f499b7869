# Everything bootstraps from nothing: `make demo` and `make test` create .venv on first use.
# torch is pinned to 2.13.0 (a CPU build that pip takes from this machine's disk; a plain
# `pip install torch` would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all lint typecheck check bench crosscheck clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,service,postgres,onnx]'
	# The peer library for cross-check tests; its declared deps would pull torchvision.
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/pip install --quiet scipy
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## train, attack and evaluate on the embedded digits data (about a minute)
	$(BIN)/bastion run examples/digits.yaml

test: $(STAMP)  ## the default suite (slow tests excluded)
	$(BIN)/pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

crosscheck: $(STAMP)  ## external APGD-CE + Square cross-check of a run: make crosscheck RUN=runs/... DATA=...
	$(BIN)/python benchmarks/crosscheck.py $(RUN) --data-dir $(DATA)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
