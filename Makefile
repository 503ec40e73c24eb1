# Two entry points: `make sandbox` runs the hub with every simulated partner on the
# embedded default (SQLite); `make test` runs the whole quality gate. Each creates the
# virtual environment on first use.
VENV ?= .venv
BIN := $(VENV)/bin
# The interpreter of the virtual environment: the distribution's CPython when it is 3.11+
# with venv and its headers, else `python3`. pyenv and a plain source build leave out
# CPython's optimisations (`--enable-optimizations`) unless asked; on the 2-core machine
# Debian's ran the hub with 6% less CPU per message and 8% more messages/s end to end
# than pyenv's default build (benchmarks/README.md, eleventh round).
# `make PYTHON=python3.12 ...` chooses another (`make clean` first if the venv exists).
ifndef PYTHON
PYTHON := $(firstword $(shell for p in /usr/bin/python3 python3; do \
	$$p -c 'import sys, ensurepip, sysconfig, os.path as p; \
	sys.exit(sys.version_info < (3, 11) or not p.isfile(sysconfig.get_path("include") + "/Python.h"))' \
	2>/dev/null && echo $$p && break; done) python3)
endif

.PHONY: sandbox run test lint typecheck pytest bench clean

# The modules setup.py compiles (hub/compiled.py): a change to one builds them again.
COMPILED := $(shell $(PYTHON) -c "import runpy; print(*runpy.run_path('hub/compiled.py')['COMPILED'])")

$(BIN)/hub: pyproject.toml setup.py hub/compiled.py $(COMPILED)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/hub

sandbox: $(BIN)/hub
	$(BIN)/hub sandbox

run: $(BIN)/hub
	$(BIN)/hub run

lint: $(BIN)/hub
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/hub
	$(BIN)/mypy

pytest: $(BIN)/hub
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(BIN)/hub
	$(BIN)/python -m benchmarks.ingest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
