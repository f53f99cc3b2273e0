# shop-sync. On a fresh clone `make demo` and `make test` need nothing but python3 and make:
# the stores are an embedded PostgreSQL and a MongoDB-wire server installed from PyPI.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCAL := .local
DAGSTER_HOME_DIR := $(CURDIR)/$(LOCAL)/dagster_home
DAGSTER_LOCAL_TEMPLATE := dev/dagster_local.yaml
# Loads the connection settings `stores up` wrote, and points Dagster at the local instance.
WITH_ENV := set -a; . $(LOCAL)/env; set +a; export DAGSTER_HOME=$(DAGSTER_HOME_DIR);

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv stores migrate dagster-home demo ui stop test bench clean

help:
	@echo "make demo   start the local stores, load demo data, materialize every asset, print a summary"
	@echo "make ui     start the local stores and the Dagster UI on http://127.0.0.1:3000"
	@echo "make migrate  start the local stores and migrate their schemas (python -m etl_assets.migrate)"
	@echo "make stop   stop the local stores"
	@echo "make test   ruff, then pytest (the tests start their own stores)"
	@echo "make bench  install the bench extra and run the benchmark (options: BENCH_ARGS=...)"
	@echo "make venv   create .venv and install the project with its dev extra"
	@echo "make clean  stop the stores and delete .local and caches (keeps .venv)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev,bench]'
	touch $@

venv: $(VENV)/.installed-dev

stores: venv
	$(BIN)/python -m dev.stores up --root $(LOCAL)

# The deploy step, as production runs it: the ETL's Alembic migrations, with the URLs `stores up` wrote.
migrate: stores
	$(WITH_ENV) $(BIN)/python -m etl_assets.migrate all

dagster-home:
	@mkdir -p $(DAGSTER_HOME_DIR)
	@cp $(DAGSTER_LOCAL_TEMPLATE) $(DAGSTER_HOME_DIR)/dagster.yaml

demo: migrate dagster-home
	$(WITH_ENV) $(BIN)/python -m dev.demo --root $(LOCAL)

ui: migrate dagster-home
	$(WITH_ENV) env --default-signal=INT,TERM $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

stop:
	if [ -x $(BIN)/python ]; then $(BIN)/python -m dev.stores down --root $(LOCAL); fi

test: venv
	$(BIN)/ruff check .
	$(BIN)/pytest

# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--quick --sections carts,runs".
bench: $(VENV)/.installed-bench
	$(BIN)/python -m dev.bench $(BENCH_ARGS)

clean: stop
	rm -rf $(LOCAL) .pytest_cache .ruff_cache build dist bench-results *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
