# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TEST_STAMP  := $(VENV)/.installed-test
DEMO_STAMP  := $(VENV)/.installed-server
BENCH_VENV  ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-bench
DOCS_STAMP  := $(VENV)/.installed-docs
FLOOR_VENV  := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.installed-floor

.PHONY: demo test floor lint typecheck pytest browser postgres screenshots bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The CT server is its own distribution in server/ (kaizen-server), installed from here: the
# package index may not have it (or not this version), so no extra here pulls it.
$(TEST_STAMP): pyproject.toml server/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]' -e './server[optimize,postgres]'
	touch $@

# The demo needs only the SDK and the server, not the test tools.
$(DEMO_STAMP): pyproject.toml server/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e . -e ./server
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/kaizen demo

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy --strict kaizen_sdk server/kaizen_server

# The web UI's browser tests (tests/ui) drive Debian's chromium with Playwright (the test
# extra); no browser is downloaded. Installed here when missing (apt-get needs root); the
# tests fail, never skip, without it.
browser:
	command -v chromium || (apt-get update && apt-get install -y chromium)

# The PostgreSQL tests (tests/pg_cluster.py) start a private cluster with Debian's initdb and
# pg_ctl; no server is configured or started system-wide. Installed here when missing
# (apt-get needs root); the tests fail, never skip, without it.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update && apt-get install -y postgresql) || \
		(echo "make: PostgreSQL is needed by the tests: run 'sudo apt-get install -y postgresql'" >&2; exit 1)

# Two workers more than there are cores (tests/conftest.py): the suite is mostly waiting on
# loopback servers and subprocesses. Bytecode is written even where the environment says not
# to (PYTHONDONTWRITEBYTECODE, set in some containers): otherwise each of the 4 workers
# compiles the project and rewrites every test file again (16.2 s of CPU to collect the
# suite, against 6.9 s from .pyc files), and so does each of the hundreds of subprocesses
# that import kaizen_sdk or kaizen_server (0.46 s of CPU to import both, against 0.32 s).
pytest: $(TEST_STAMP) browser postgres
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n auto

# The four checks run side by side: pytest waits on loopback servers and subprocesses much of
# the time, and mypy and the floor smoke test fill the cores meanwhile. Each check's output is
# printed whole when it ends; any failure fails the run.
test:
	@$(MAKE) --no-print-directory -j4 --output-sync=target floor lint typecheck pytest

# The web UI's screenshots in docs/img/ui/ (docs/ui.md, README) are made by its browser test:
# this writes them there; commit them. Without it the test checks each page has one.
screenshots: $(TEST_STAMP) browser
	KAIZEN_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/ui/test_ui_browser.py -n 0 -q

# The SDK's core dependencies at the lowest versions pyproject.toml allows (pip has no "lowest"
# resolution: .ci/floor_constraints.py turns each `name>=floor` into `name==floor`), in a
# virtualenv of their own with openai at the test extra's floor; then a smoke test
# (.ci/floor_smoke.py) against a real server run from the main virtualenv (the server's own
# dependencies need newer versions than the SDK's floors). Rebuilt whenever pyproject changes.
$(FLOOR_STAMP): pyproject.toml .ci/floor_constraints.py
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python .ci/floor_constraints.py pyproject.toml > $(FLOOR_VENV)/constraints.txt
	$(FLOOR_VENV)/bin/python -m pip install -q -c $(FLOOR_VENV)/constraints.txt \
		-r $(FLOOR_VENV)/constraints.txt -e .
	$(FLOOR_VENV)/bin/python -m pip check
	touch $@

floor: $(FLOOR_STAMP) $(TEST_STAMP)
	$(FLOOR_VENV)/bin/python .ci/floor_smoke.py $(FLOOR_VENV)/constraints.txt $(BIN)/python

# The peers (langfuse, langsmith, other instrumentors) go into their own virtualenv, so they
# never change what `make test` runs against. BENCH_ARGS=--quick for a smoke run.
$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip

$(BENCH_STAMP): pyproject.toml server/pyproject.toml | $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[test,bench]' -e './server[optimize,postgres]'
	touch $@

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks $(BENCH_ARGS)

$(DOCS_STAMP): pyproject.toml $(TEST_STAMP)
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $@

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(FLOOR_VENV) build dist site .pytest_cache .mypy_cache .ruff_cache
