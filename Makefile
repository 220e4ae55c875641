# The two commands of the README. `make demo` runs the main job on the embedded local stack;
# `make test` runs the whole test suite (it starts and stops its own stack). .ci/run calls `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint install clean-state bench

demo: install
	$(BIN)/highland demo
	$(BIN)/highland progress

test: install lint
	$(BIN)/pytest -q

# Not part of the tests: prints the benchmark tables (bench/run.py, then bench/queries.py on 50 M events).
bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.queries

# ruff, then the import-linter contracts in pyproject.toml (the layers; tools/lint_imports.py says why
# lint-imports runs through it).
lint: install
	$(BIN)/ruff check .
	$(BIN)/python tools/lint_imports.py

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[local,dev]'
	touch $@

clean-state:
	-$(BIN)/highland stack down
	rm -rf .highland
