# `make demo` and `make test` do all the set-up on a fresh clone (virtual environment in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.tuneforge-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-gpu images docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# Every version comes from the lock (constraints.txt; scripts/lock-requirements.sh refreshes it).
	# torch first: an unpinned resolve pulls a multi-GB CUDA build onto CPU machines.
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e '.[train,serve,dev]'
	touch $(STAMP)

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q tests

test-gpu: setup
	$(PY) -m pytest -q -m gpu tests

images: setup
	bash scripts/build-images.sh

docs: setup
	$(VENV)/bin/tuneforge hyperparameters --markdown > docs/hyperparameters.md

clean:
	rm -rf $(VENV) .cache build *.egg-info
