# Two entry points: `make sandbox` runs the hub with every simulated partner on the
# embedded default (SQLite); `make test` runs the whole quality gate. Each creates the
# virtual environment on first use.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

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
