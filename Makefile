# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv, installs the package and what it needs, then runs. Python packages
# come at the versions pinned in constraints.txt (`make constraints` writes it anew).

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
PIP := $(BIN)/pip install -q -c $(CONSTRAINTS)
# The demo's install (the package alone) and the tests' (the dev extra, system tools) on top of it.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install demo test lint unit constraints clean

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

# What `alphapulse demo` needs: Java and Maven for the local broker, and the package.
$(STAMP): pyproject.toml $(CONSTRAINTS) models/_linear_core.c stream/_codec_core.c
	$(call apt_need,command -v java >/dev/null && command -v mvn >/dev/null,default-jre-headless maven,the local Kafka broker; or set KAFKA_BOOTSTRAP_SERVERS)
	$(call apt_need,command -v gcc >/dev/null && [ -f "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ],gcc python3-dev,the compiled steps of the online model and the decoder; without them the same work runs in Python)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -e .
	touch $(STAMP)

# What the tests need besides: real PostgreSQL and Redis servers, Chromium, promtool, the dev extra.
$(DEV_STAMP): $(STAMP)
	$(call apt_need,ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v pg_ctl >/dev/null,postgresql,the store tests run a real server on loopback)
	$(call apt_need,command -v redis-server >/dev/null,redis-server,the log stream tests run a real server on loopback)
	$(call apt_need,command -v chromium >/dev/null || command -v chromium-browser >/dev/null,chromium,the dashboard test loads the page in headless Chromium)
	@# promtool tests the alert rules; Debian ships it in the prometheus package, whose server
	@# (with a service that may start) is not wanted here: only promtool is taken out of it.
	@command -v promtool >/dev/null || [ -x $(BIN)/promtool ] || { \
	  tmp=$$(mktemp -d); chmod 755 $$tmp; \
	  (cd $$tmp && { apt-get download -q prometheus || { apt-get update -q && apt-get download -q prometheus; }; }) \
	    && dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root && cp $$tmp/root/usr/bin/promtool $(BIN)/promtool; \
	  status=$$?; rm -rf $$tmp; \
	  [ $$status = 0 ] || echo "promtool needed (the alert rule tests): install Debian's prometheus package" >&2; }
	$(PIP) -e '.[dev]'
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/alphapulse demo

lint: install
	$(BIN)/ruff check alphapulse agents stream models bench tests
	$(BIN)/ruff format --check alphapulse agents stream models bench tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest --timeout=1200

unit: install
	$(BIN)/pytest tests/unit alphapulse agents stream models bench

# Pin every package of the dev install (the project itself excepted) at the version installed.
constraints: install
	{ echo "# pip constraints: every package of the dev install at one version. Regenerate: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable --exclude alphapulse | LC_ALL=C sort; } > $(CONSTRAINTS).tmp
	@# Rewritten only when it changed, so that the installs above do not run again for nothing.
	cmp -s $(CONSTRAINTS).tmp $(CONSTRAINTS) && rm $(CONSTRAINTS).tmp || mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
