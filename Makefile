# A scaling study of vision backbones. `make help` lists the targets.
# Every target installs what it needs first: `make test` or `make sweep` work on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint format report

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with pip and install the study with its dev and slurm extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,slurm]'
	touch $@

test: $(STAMP) ## run the tests that need no GPU and take seconds to minutes on a CPU
	$(PY) -m pytest

test-all: $(STAMP) ## also run the slow tests (not the gpu ones)
	$(PY) -m pytest -m 'not gpu'

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

report: $(STAMP) ## turn the rows under results/ into results.csv, REPORT.md and plots
	$(PY) -m study.report results
