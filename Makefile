# One place for the developer commands. Each target installs what it needs on first use
# into ./.venv (re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install dev test lint pytest bench bench-smoke lock clean typing-map

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run API + queue + worker in one process on SQLite, with the example graphs.
dev: $(STAMP)
	$(BIN)/lg-deploy dev --config examples/langgraph.json

## Lint, types and the whole test suite (slow chaos tests included; skip them with
## make test PYTEST_ARGS='-m "not slow"').
test: lint pytest

# mypy checks the installed import names (lg_deploy.*): .typing/ maps them onto the folders.
typing-map:
	mkdir -p .typing/lg_deploy
	for package in api core run worker; do ln -sfn ../../$$package .typing/lg_deploy/$$package; done

lint: $(STAMP) typing-map
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p lg_deploy -p tests -p observability -p bench

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The benchmarks on the real stack (local PostgreSQL and Redis): figures, not a test.
## BENCHMARKS.md says what each means; the figures are also written to .lg-deploy/bench.json.
bench: $(STAMP)
	$(BIN)/python -m bench

## Every benchmark with tiny sizes, as CI runs it, so that none of them rots.
bench-smoke: $(STAMP)
	$(BIN)/python -m bench --smoke

## Pin every package the images install (the wheel's dependencies and its build backend) in
## constraints.txt, resolved for Linux and Python 3.11 like the images, wheels only.
lock: $(STAMP)
	printf 'setuptools>=77\n' | $(BIN)/uv pip compile pyproject.toml - --quiet \
		--python-version 3.11 --python-platform linux --only-binary :all: \
		--custom-compile-command 'make lock' --output-file constraints.txt

clean:
	rm -rf $(VENV) .typing .mypy_cache .ruff_cache .pytest_cache
