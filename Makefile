# make run   - set up .venv and listen on 127.0.0.1:2525 with the shipped handlers (dev config)
# make test  - set up .venv, lint, type-check and run the whole test suite (what CI runs)
# make test-fast - unit tests and the RFC suites only (no subprocesses, no deploy)
# make bench - print start-up, checked-session, memory, modes and defence figures next to the reference floor

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUM     = $(shell cat $(1) constraints.txt | cksum | cut -d' ' -f1)
RUNSTAMP := $(VENV)/.installed-run-$(call SUM,requirements.txt)
STAMP    := $(VENV)/.installed-dev-$(call SUM,requirements.txt requirements-dev.txt)

.PHONY: run test test-fast lint bench check clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "mailserver needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "cannot create $(VENV): on Debian/Ubuntu run: apt-get install python3-venv"; exit 1; }

# make run installs only what receiving mail needs; make test adds the test tool chain.
$(RUNSTAMP): requirements.txt constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-run-* && touch $@

$(STAMP): requirements.txt requirements-dev.txt constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@ $(RUNSTAMP)

run: $(RUNSTAMP)
	@mkdir -p var/spool
	$(PY) mailserver.py listen --config examples/dev.ini

check: $(RUNSTAMP)
	@mkdir -p var/spool
	$(PY) mailserver.py check --config examples/dev.ini

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "unit or suites"

bench: $(STAMP)
	$(PY) bench/startup.py
	$(PY) bench/checked.py
	$(PY) bench/memory.py
	$(PY) bench/modes.py
	$(PY) bench/defence.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
