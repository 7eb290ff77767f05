# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv, installs the package and what it needs, then runs.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit clean

$(STAMP): pyproject.toml
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Java and Maven (needed to run the local Kafka broker)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jre-headless maven; \
	  else \
	    echo "Java 17+ and Maven are needed for the local Kafka broker; install them, or set KAFKA_BOOTSTRAP_SERVERS" >&2; \
	  fi; }
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_ctl >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing PostgreSQL (the store tests run a real server on loopback)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	  else \
	    echo "PostgreSQL server binaries are needed for the store tests; install the 'postgresql' package" >&2; \
	  fi; }
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium (the dashboard test loads the page in headless Chromium)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "Chromium is needed for the dashboard test; install the 'chromium' package" >&2; \
	  fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/alphapulse demo

lint: install
	$(BIN)/ruff check alphapulse agents stream models bench tests
	$(BIN)/ruff format --check alphapulse agents stream models bench tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest --timeout=1200

unit: install
	$(BIN)/pytest tests/unit alphapulse agents stream models bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
