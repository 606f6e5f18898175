# The Quick start in README.md is `make test` and `make baseline`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test test-slow test-all baseline system-deps bench bench-sweep lint clean mutate

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when the project metadata changed: a no-op otherwise.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the HTML reports in the tests (Debian's package).
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the HTML report tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "warning: chromium not found and cannot be installed (not root); HTML render tests will fail"; \
	  fi; \
	fi

# The suite on TEST_WORKERS pytest-xdist processes (tests/conftest.py keeps each module on one
# worker and the Ray modules together): `make test` is everything but the end-to-end tests marked
# slow; `make test-slow` runs those (CI runs both: .ci/run); `make test-all` both in one call.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

test: install system-deps
	$(PYTEST) -m "not slow" tests $(PYTEST_ARGS)

test-slow: install system-deps
	$(PYTEST) -m slow tests $(PYTEST_ARGS)

test-all: install system-deps
	$(PYTEST) tests $(PYTEST_ARGS)

baseline: install
	$(PY) -m thermojax.baseline bit_width=2 num_time_groups=4

# The benchmarks print tables against a baseline measured in the same run (README: Performance).
bench: install
	$(PY) benchmarks/bench_quant.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_phases.py

bench-sweep: install
	$(PY) benchmarks/bench_sweep.py --sweep full

# Mutation testing, not part of `make test`: mutmut mutates the quality, metrics and report
# modules and runs the fast tests that cover each mutated function (pyproject.toml
# [tool.mutmut]), bounded to 40 minutes; README: Development says what the survivors mean.
# Afterwards `.venv/bin/mutmut show NAME` prints a survivor's diff.
MUTATION_STAMP := $(VENV)/.mutation-stamp

$(MUTATION_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,mutation]'
	touch $(MUTATION_STAMP)

mutate: install $(MUTATION_STAMP)
	rm -rf mutants
	timeout 2400 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

lint: install
	$(PY) -m ruff check thermojax tests benchmarks hydra_plugins tools
	$(PY) -m ruff format --check thermojax tests benchmarks hydra_plugins tools

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
