# Everything bootstraps from nothing: `make demo` and `make test` create .venv on first use.
# torch is pinned to 2.13.0. Which build pip takes depends on where it looks: on the project's
# machines a local CPU wheel is found first; elsewhere the same pin pulls the default build from
# the package index, which on Linux is the multi-GB CUDA build. Choose the source yourself:
#   make install TORCH_INDEX=<URL of a CPU wheel index>  # PyTorch's own CPU index: pip then
#                                                        # prefers its 2.13.0+cpu build
#   make install TORCH_SPEC=/path/to/torch-2.13.0+cpu-...whl   # a wheel file you downloaded
# (both also read from the environment: TORCH_INDEX=... make test).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all lint typecheck check bench crosscheck clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX_ARGS) '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet -e '.[dev,service,postgres,onnx,distributed,privacy,mlflow,transformers]'
	# The peer library for cross-check tests; its declared deps would pull torchvision.
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/pip install --quiet scipy
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## train, attack and evaluate on the embedded digits data (about half a minute)
	@t0=$$($(BIN)/python -c 'import time; print(time.time())'); \
	$(BIN)/bastion run examples/digits.yaml && \
	$(BIN)/python -c 'import sys, time; print(f"make demo: {time.time() - float(sys.argv[1]):.1f} s wall")' $$t0

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
