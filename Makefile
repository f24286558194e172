# rackwatch: `make demo` for a live demo, `make test` for the tests.
# Both set themselves up: Debian packages (as root, only when missing), .venv, Python packages.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the demo and the tests start privately (never the system instances).
DEMO_DEBS := python3-venv mosquitto influxdb
TEST_DEBS := python3-venv mosquitto influxdb victoria-metrics snmpd snmp

.PHONY: demo test lint bench debs-demo debs-test clean install-service

$(BIN)/rackwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

debs-demo:
	@scripts/install-debs $(DEMO_DEBS)

debs-test:
	@scripts/install-debs $(TEST_DEBS)

demo: debs-demo $(BIN)/rackwatch
	$(BIN)/rackwatch demo

test: debs-test $(BIN)/rackwatch
	$(BIN)/pytest -q

lint: debs-test $(BIN)/rackwatch
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: debs-test $(BIN)/rackwatch
	$(BIN)/python bench/bench_lineproto.py
	$(BIN)/python bench/bench_pipeline.py

# systemd services in /opt/rackwatch (own venv), units, configs in /etc/rackwatch; as root.
# DESTDIR=/tmp/stage for a trial. See docs/operations.md.
install-service:
	@scripts/install-debs python3-venv
	scripts/install-service

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
