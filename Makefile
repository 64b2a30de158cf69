# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= exporter.toml

.PHONY: run test bench rules test-tools prometheus-tools clean

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

## test: install what the tests need (Debian prometheus, chromium and chromium-driver when root), lint, type-check and run the whole suite
test: $(VENV)/.test test-tools
	$(PY) -m ruff check exporter tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest

## bench: memory, scrape, poll-path, OTLP-encoding and scale benchmarks (minutes; not part of `make test`)
bench: $(VENV)/.test
	$(PY) benchmarks/bench.py

## rules: regenerate monitoring/api-metrics-exporter.rules.yml (and the chart schema's alert overrides) from charts/api-metrics-exporter/rules/rules.yaml
rules: $(VENV)/.test
	$(PY) monitoring/generate.py

# Debian packages the tests drive: `prometheus` (promtool and the server: the
# real-scraper tests) and `chromium` with `chromium-driver` (the status page in
# a headless browser). Installed when missing and root; nothing is printed
# unless something goes wrong (apt's output is then shown).
TEST_DEBS_CHECK := prometheus:prometheus promtool:prometheus chromium:chromium chromedriver:chromium-driver
test-tools:
	@missing=""; for pair in $(TEST_DEBS_CHECK); do \
	  command -v "$${pair%%:*}" >/dev/null || case " $$missing " in *" $${pair#*:} "*) ;; *) missing="$$missing $${pair#*:}";; esac; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  log=$$(mktemp); \
	  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } >"$$log" 2>&1; then \
	    cat "$$log"; rm -f "$$log"; exit 1; \
	  fi; rm -f "$$log"; \
	else \
	  echo "note: missing$$missing and not root: install the Debian packages$$missing"; \
	fi

# The former name of test-tools.
prometheus-tools: test-tools

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
