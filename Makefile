# The two commands of the README. Both create the virtualenv on first use.
#   make up     run Sluice (embedded PostgreSQL unless SLUICE_DATABASE_URL is set)
#   make test   run the test suite (it starts its own PostgreSQL)
# Extra arguments: make up ARGS="--port 9000", make test ARGS="-k dag".

VENV ?= .venv
PYTHON ?= python3

.PHONY: up test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

up: $(VENV)/.installed
	$(VENV)/bin/sluice up $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m tests.lint_imports
	$(VENV)/bin/pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
