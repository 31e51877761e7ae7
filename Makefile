# floorgate — developer entry points. `make demo` and `make test` each set themselves up on a fresh machine.
#
#   make venv    .venv with floorgate installed editable plus the test extras (again only when pyproject.toml changed)
#   make test    venv + the server packages the integration tests start (scripts/ensure-services.sh) + pytest on
#                TEST_WORKERS (2) pytest-xdist workers (TEST_WORKERS=0: one process); prints the 20 slowest tests
#   make demo    venv + `floorgate demo` (pass options with ARGS="...")
#   make fuzz    the property-based fuzz tests (tests/*/test_fuzz_*.py) with the long "fuzz" hypothesis profile and
#                statistics; FUZZ_ARGS="..." passes more pytest options (e.g. -k envelope)
#   make lint    ruff on everything, mypy (strict per pyproject.toml) on protocols, sync and edge/store
#   make wheelhouse     ansible/wheelhouse: floorgate + its dependencies as wheels, what the Ansible roles install
#   make test-ansible   only the Ansible tests (lint, and the roles converged onto booted systemd containers)
#   make clean   caches and build leftovers (keeps .venv; `rm -rf .venv` for a fresh start)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
TEST_WORKERS ?= 2

FUZZ_ARGS ?=

.PHONY: venv test demo lint clean wheelhouse test-ansible fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure-venv.sh
	PYTHON=$(PYTHON) scripts/ensure-venv.sh $(VENV)
	touch $(STAMP)

test: venv
	scripts/ensure-services.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=20

fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -p no:cacheprovider -q --hypothesis-show-statistics \
		$$(find tests -name 'test_fuzz_*.py' | sort) $(FUZZ_ARGS)

demo: venv
	$(BIN)/floorgate demo $(ARGS)

wheelhouse: venv
	scripts/build-wheelhouse.sh

test-ansible: venv
	scripts/ensure-services.sh
	$(BIN)/pytest -m ansible

lint: venv
	test -x $(BIN)/ruff -a -x $(BIN)/mypy || $(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check .
	$(BIN)/mypy protocols sync edge/store

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
