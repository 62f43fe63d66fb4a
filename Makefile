# One place for the developer commands. Each target installs what it needs on first use
# into ./.venv (re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install dev test lint pytest bench lock clean

$(STAMP): pyproject.toml
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
.typing/lg_deploy:
	mkdir -p .typing/lg_deploy
	ln -sfn ../../api .typing/lg_deploy/api
	ln -sfn ../../core .typing/lg_deploy/core
	ln -sfn ../../worker .typing/lg_deploy/worker

lint: $(STAMP) .typing/lg_deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p lg_deploy -p tests

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Submit latency and end-to-end throughput of `lg-deploy dev` (figures, not a test).
bench: $(STAMP)
	$(BIN)/python bench/bench_dev.py

## Pin every package the images install (the wheel's dependencies and its build backend) in
## constraints.txt, resolved for Linux and Python 3.11 like the images, wheels only.
lock: $(STAMP)
	printf 'setuptools>=69\n' | $(BIN)/uv pip compile pyproject.toml - --quiet \
		--python-version 3.11 --python-platform linux --only-binary :all: \
		--custom-compile-command 'make lock' --output-file constraints.txt

clean:
	rm -rf $(VENV) .typing .mypy_cache .ruff_cache .pytest_cache
