# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv, installs the package and what it needs, then runs.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint unit clean

# $(call apt_need,CHECK,PACKAGES,WHY): as root with apt-get, install PACKAGES unless CHECK succeeds.
define apt_need
	@$(1) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(2) ($(3))"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2); \
	  else \
	    echo "$(2) needed ($(3)): install it from your distribution" >&2; \
	  fi; }
endef

$(STAMP): pyproject.toml
	$(call apt_need,command -v java >/dev/null && command -v mvn >/dev/null,default-jre-headless maven,the local Kafka broker; or set KAFKA_BOOTSTRAP_SERVERS)
	$(call apt_need,ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_ctl >/dev/null,postgresql,the store tests run a real server on loopback)
	$(call apt_need,command -v redis-server >/dev/null,redis-server,the log stream tests run a real server on loopback)
	$(call apt_need,command -v chromium >/dev/null || command -v chromium-browser >/dev/null,chromium,the dashboard test loads the page in headless Chromium)
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
