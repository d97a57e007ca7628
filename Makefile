# The two commands of the README: `make book` and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= default
STAMP   := $(VENV)/.wmnb-installed

.PHONY: install book test run status clean benchmarks

# Reinstall only when the dependencies change; the package itself is installed editable.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

## make book: generate the universe, run every chapter with papermill, build the HTML book
book: $(STAMP)
	$(BIN)/wmnb run --profile $(PROFILE) --no-progress
	$(BIN)/wmnb book --profile $(PROFILE)
	@echo "open _build/html/index.html"

## make test: unit tests + smoke-profile notebook runs + book build
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15

run: $(STAMP)
	$(BIN)/wmnb run --profile $(PROFILE)

status: $(STAMP)
	$(BIN)/wmnb status --profile $(PROFILE)

benchmarks: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf results _build
