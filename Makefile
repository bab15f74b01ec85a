# The README's two commands: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

.PHONY: run test lint format typecheck fuzz chaos bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(RUNTIME)

## Set up and serve on the SQLite default (honours CHAT_* variables).
run: $(RUNTIME)
	$(BIN)/chatserver serve

## Set up the dev tools and run lint, format check, types and the whole test suite.
test: $(DEV) lint typecheck
	$(BIN)/pytest

## The proofs' long runs (tests/proof/knobs.py): many more fuzzing examples and model steps,
## many more crash rounds. Each takes tens of minutes.
fuzz: $(DEV)
	PROOF_FUZZ_EXAMPLES=100 PROOF_FUZZ_STATEFUL_STEPS=20 PROOF_FUZZ_BASIC_EXAMPLES=10 \
	PROOF_FUZZ_BASIC_STATEFUL_STEPS=10 PROOF_FUZZ_BASIC_COVERAGE=1 PROOF_MODEL_EXAMPLES=60 PROOF_MODEL_STEPS=50 \
	$(BIN)/pytest tests/proof/test_fuzz.py tests/proof/test_model.py tests/proof/test_authz_matrix.py

chaos: $(DEV)
	PROOF_CHAOS_ROUNDS=25 PROOF_CHAOS_MESSAGES=40 $(BIN)/pytest tests/proof/test_crash.py

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV)
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(DEV)
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(DEV)
	$(BIN)/python -m bench --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
