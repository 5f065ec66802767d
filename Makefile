# envwatch: `make demo` and `make test` work on a fresh Debian machine as root.
# Both are idempotent: installs are skipped when present, services are reused when running.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE ?= .state
APT_PACKAGES := mosquitto mosquitto-clients influxdb influxdb-client postgresql chromium fonts-noto-cjk
PYTEST_ARGS ?=

.PHONY: install apt venv demo test bench services-up services-down clean

install: apt venv

# apt-get only when a package is missing; `apt-get update` first, as a fresh machine has no lists.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Reinstall the venv only when pyproject.toml changed since the last install.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

demo: install
	$(BIN)/envwatch demo --config config/examples/demo-city.yaml

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/detect.py

services-up: install
	$(BIN)/envwatch services up --state-dir $(STATE)

services-down:
	$(BIN)/envwatch services down --state-dir $(STATE)

clean: services-down
	rm -rf $(STATE) .pytest_cache .hypothesis
