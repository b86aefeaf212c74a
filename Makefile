# PenPay — one-line verbs. Every target works from a fresh clone; `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# The interpreter .venv is built with: scripts/find-python's choice, evaluated once and only when needed (an
# optimised build of 3.11 where the machine has one: every PenPay process is Python). PYTHON=... overrides it.
PYTHON ?= $(eval PYTHON := $(shell scripts/find-python))$(PYTHON)
PYTHON_MISSING := PenPay needs Python 3.11 (python3.11 on the PATH, in /usr/local/bin or /usr/bin, able to create a venv; Debian: apt-get install python3.11-venv)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_OUT := services/penpay/_proto
PROTO_STAMP := $(PROTO_OUT)/.generated
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install proto test lint fmt typecheck migrate run demo clean lock

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml libs/penpay_domain/pyproject.toml constraints.txt
	@test -n "$(PYTHON)" && command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON_MISSING)" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/python -m pip install --quiet -c constraints.txt -e libs/penpay_domain -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $(STAMP)

install: $(STAMP) proto ## create .venv and install PenPay with its console scripts (idempotent)
	@scripts/venv-note $(BIN)/python

$(PROTO_STAMP): $(STAMP) $(shell find proto -name '*.proto' 2>/dev/null)
	$(BIN)/python -m penpay.protogen proto $(PROTO_OUT)
	touch $(PROTO_STAMP)

proto: $(PROTO_STAMP) ## generate the gRPC code from proto/ (never edited by hand)

lint: install ## ruff (lint + format check) and the import boundaries of STYLE.md
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: install ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy --strict
	$(BIN)/mypy

migrate: install ## apply the Alembic migrations to PENPAY_DATABASE_URL (creating the database if missing)
	$(BIN)/penpay migrate

run: install ## start api, workers, gateway and sandbox here against .env's MySQL/Redis (ONLY=a,b SCALE=worker=2)
	$(BIN)/python -m penpay.devrun $(if $(ONLY),--only $(ONLY)) $(if $(SCALE),--scale $(SCALE))

demo: install ## one deposit and one withdrawal through the running sandbox platform (after make run)
	$(BIN)/penpay demo

test: lint typecheck ## the whole suite against real MariaDB/MySQL and Redis (see README)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

.PHONY: bench bench-probe
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e libs/penpay_domain -e '.[dev,bench]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP) ## the load benchmark: figures, targets, bench/results/<time>.json (BENCH_QUICK=1: brief)
	$(BIN)/python -m bench

bench-probe: install ## the raw-limit probe alone (MariaDB commits/s, Redis XADD/s), as JSON: beside an independent load run
	$(BIN)/python -m bench.probe

LOCK_VENV := /tmp/penpay-lock-venv
lock: ## re-pin constraints.txt to the newest releases pyproject.toml allows (then make test, and review the diff)
	@test -n "$(PYTHON)" && command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON_MISSING)" >&2; exit 1; }
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(LOCK_VENV)/bin/python -m pip install --quiet -e libs/penpay_domain -e '.[dev,bench]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	{ sed -n '/^#/p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -iv '^penpay' | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt re-pinned; run make test (a fresh make install picks the new pins)"

clean: ## remove the venv and generated code
	rm -rf $(VENV) $(PROTO_OUT) .mypy_cache .ruff_cache .pytest_cache
