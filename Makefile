# Two entry points: `make demo` runs the main job on the embedded default,
# `make test` runs the test suite.  Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench constraints

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every package at the version the suite last passed with (constraints.txt), so a fresh clone
# tests what CI tested; CONSTRAINTS= (empty) installs the newest releases instead.
CONSTRAINTS ?= constraints.txt
PIP_CONSTRAINT_ARGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

# torch first and pinned: a CPU-only machine must not pull the CUDA build.
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINT_ARGS) -e ".[dev,wsi,remote,cluster]"
	touch $(STAMP)

install: $(STAMP)

# Test files spread over up to 4 worker processes (2 on a 2-core machine), one line per test as it
# finishes, and the 15 slowest tests at the end (CI prints them too).
PYTEST_ARGS ?= -n auto --maxprocesses=4 --dist loadfile -v --durations=15

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/pathsegdiff demo -o demo_out --overwrite

bench: $(STAMP)
	$(BIN)/python bench/store_io.py

# Test against the newest releases in a separate venv and, when the suite passes, write what it
# ran with to constraints.txt (torch stays pinned by TORCH_VERSION, the project itself is left out).
LATEST := .venv-latest
constraints:
	rm -rf $(LATEST)
	$(MAKE) test VENV=$(LATEST) CONSTRAINTS=
	$(LATEST)/bin/python -m pip freeze --exclude-editable \
	  | grep -v -i -E '^(torch|pathsegdiff|pip|setuptools|wheel)==' > constraints.txt
	@echo "constraints.txt: $$(wc -l < constraints.txt) packages from a passing run"

clean:
	rm -rf $(VENV) $(LATEST) demo_out .pytest_cache
