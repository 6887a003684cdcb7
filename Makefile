# taskforge — make run (the whole system on this machine) and make test (the whole suite).
# Fragments under mk/ add their own targets and may append to TEST_PREREQS.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TEST_PREREQS :=
PYTEST_ARGS ?=

-include mk/*.mk

.PHONY: help install run test lint format proto bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[embedded,test]'
	touch $@

install: $(VENV)/.installed ## create .venv and install taskforge with its test tools

run: install ## the whole system on this machine (embedded PostgreSQL and Redis unless TASKFORGE_*_URL are set)
	$(BIN)/taskforge dev

test: install $(TEST_PREREQS) ## the whole suite (PostgreSQL/Redis from TASKFORGE_TEST_*_URL, local servers, or embedded)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy services/taskforge

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix services tests
	$(BIN)/ruff format services tests

proto: install ## regenerate the protobuf code from proto/
	$(PY) -m grpc_tools.protoc -I proto/taskforge/v1 \
		--python_out=services/taskforge/pb --pyi_out=services/taskforge/pb \
		proto/taskforge/v1/messages.proto

bench: install ## the benchmark scenarios, results as JSON under bench/results/
	$(BIN)/taskforge bench --embedded --workers 2 --scenarios all --repeat 3 --json-out bench/results/latest.json

clean: ## remove the venv, embedded data and caches
	rm -rf $(VENV) .taskforge .pytest_cache .mypy_cache .ruff_cache
