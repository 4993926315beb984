# `make demo` and `make test` each work alone on a fresh machine: they create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME := .demo-index

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[cpu,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/imgsearch --home $(DEMO_HOME) index examples
	$(BIN)/imgsearch --home $(DEMO_HOME) query examples/coffee.jpg -k 3
	$(BIN)/imgsearch --home $(DEMO_HOME) query --path examples/chelsea.jpg -k 3
	$(BIN)/imgsearch --home $(DEMO_HOME) info

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/index_throughput.py

clean:
	rm -rf $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache
