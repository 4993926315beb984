# `make demo` and `make test` each work alone on a fresh machine: they create and reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
DEMO_HOME := .demo-index
DEMO_PHOTOS := .demo-photos

.PHONY: demo test lint typecheck unit browser bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[cpu,dev,ray]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo installs only what it runs (no test tools, Ray or Playwright). For a CPU-only torch
# (a few hundred MB instead of the CUDA build), see the README's Install section.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[cpu]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	@# Extra photos for `dupes`: a byte copy and a re-compressed copy of two samples.
	$(BIN)/python -c "import shutil, pathlib; from PIL import Image; d = pathlib.Path('$(DEMO_PHOTOS)'); \
	  d.mkdir(exist_ok=True); shutil.copy('examples/rocket.jpg', d / 'rocket-copy.jpg'); \
	  Image.open('examples/coffee.jpg').save(d / 'coffee-reencoded.jpg', quality=75)"
	$(BIN)/imgsearch --home $(DEMO_HOME) index examples $(DEMO_PHOTOS)
	@# A cropped, shrunk, re-compressed copy that is not in the index finds its original.
	$(BIN)/python -c "from PIL import Image; im = Image.open('examples/coffee.jpg'); \
	  im.crop((60, 40, 540, 360)).resize((240, 160)).save('$(DEMO_HOME)/edited-coffee.jpg', quality=50)"
	$(BIN)/imgsearch --home $(DEMO_HOME) query $(DEMO_HOME)/edited-coffee.jpg -k 3
	$(BIN)/imgsearch --home $(DEMO_HOME) query --path examples/chelsea.jpg -k 3
	@# The groups, each keeper's reason, and (a dry run) what moving the copies would do.
	$(BIN)/imgsearch --home $(DEMO_HOME) dupes --move-to $(DEMO_HOME)/duplicates
	$(BIN)/imgsearch --home $(DEMO_HOME) tags --min-score 0.2
	$(BIN)/imgsearch --home $(DEMO_HOME) info

# The import rules are code (pyproject.toml, [tool.importlinter]): search -> indexer -> store,
# the store only through store/__init__.py, no circles; tests/test_layers.py plants a breach.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -n 2

# Debian's Chromium for the end-to-end test of `imgsearch serve` (Playwright drives it). Without
# root or a reachable Debian mirror the test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	    $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	      >/dev/null 2>&1 || echo "make: could not install chromium: the browser test will skip"; }

test: lint typecheck browser unit

# docs/cli.md is every command's --help (tests/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(BIN)/cog -r docs/cli.md

bench: $(STAMP)
	$(BIN)/python bench/index_throughput.py
	$(BIN)/python bench/query_cold_start.py
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(DEMO_HOME) $(DEMO_PHOTOS) .pytest_cache .mypy_cache .ruff_cache
