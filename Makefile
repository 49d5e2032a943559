# The two Quick start commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_DIRS := tests tests/sandbox tests/contract tests/deploy

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/codeprov demo

# The whole suite, then the linters: CI (.ci/run) runs exactly this.
test: $(BIN)/.installed
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory lint

# ruff, and mypy --strict on the code and on each test folder (each has its own conftest).
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	for d in $(TEST_DIRS); do MYPYPATH=$$d:tests:. $(BIN)/mypy --strict $$d/*.py || exit 1; done

bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache
