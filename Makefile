# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= exporter.toml

.PHONY: run test bench rules prometheus-tools clean

# The runtime alone for `make run`; the test extra (linters, Helm and
# Kubernetes validation, ~400 MB) only for `make test`.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## run: create .venv, install the runtime, start the exporter with exporter.toml (simulator on: no credentials needed)
run: $(VENV)/.runtime
	$(VENV)/bin/api-metrics-exporter run --config $(CONFIG)

## test: install what the tests need (Debian prometheus when root), lint, type-check and run the whole suite
test: $(VENV)/.test prometheus-tools
	$(PY) -m ruff check exporter tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest

## bench: memory, scrape, poll-path, OTLP-encoding and scale benchmarks (minutes; not part of `make test`)
bench: $(VENV)/.test
	$(PY) benchmarks/bench.py

## rules: regenerate monitoring/api-metrics-exporter.rules.yml (and the chart schema's alert overrides) from charts/api-metrics-exporter/rules/rules.yaml
rules: $(VENV)/.installed
	$(PY) monitoring/generate.py

# The real-scraper tests need `prometheus` and `promtool` (Debian package `prometheus`).
prometheus-tools:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
	  echo "note: prometheus/promtool missing and not root: install the Debian package 'prometheus'"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
