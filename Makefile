# Every target installs what it needs on a fresh machine; nothing is assumed but python3 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/modelyard
LLMC_VERSION := 0.14.0.1
LLMC_VENV := $(CACHE)/llmcompressor-$(LLMC_VERSION)

.PHONY: install demo test test-fast lint bench llmcompressor-env clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# llm-compressor (with CPU torch) in its own environment: only the recipe tests use it.
llmcompressor-env: $(LLMC_VENV)/.installed

$(LLMC_VENV)/.installed:
	$(PYTHON) -m venv $(LLMC_VENV)
	$(LLMC_VENV)/bin/pip install --quiet --disable-pip-version-check \
		torch==2.13.0 llmcompressor==$(LLMC_VERSION) compressed-tensors==0.19.0 transformers==5.17.0
	touch $@

demo: install
	$(VENV)/bin/modelyard validate examples/fleet.yaml
	$(VENV)/bin/modelyard fit examples/fleet.yaml

test: install llmcompressor-env
	MODELYARD_LLMCOMPRESSOR_PYTHON=$(LLMC_VENV)/bin/python $(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: install
	@set -e; found=0; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || continue; found=1; echo "== $$script"; $(PY) "$$script"; done; \
	if [ $$found = 0 ]; then echo "no benchmarks yet"; fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
