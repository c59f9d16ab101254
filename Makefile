# Job Center: `make demo` runs it locally, `make test` runs the tests. Both set up .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lock browser-deps demo run test lint format bench clean

# Every package, its version and its files' sha256 come from the lock, so a fresh clone
# installs exactly what the tests ran with; pip refuses a file whose hash differs, and
# --no-deps installs nothing the lock does not name. The project itself goes in editable,
# built by the lock's setuptools in the venv (an isolated build would download setuptools
# unchecked). `pip check` then fails the install if the lock misses a dependency.
# Reinstall only when the lock or pyproject.toml changes: a second `make demo` starts in
# seconds.
LOCK := requirements/lock.txt
PIP := $(PY) -m pip --disable-pip-version-check
QUIET_PIP := grep -v "is ignored: it is neither"

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Job Center into $(VENV) from $(LOCK) (hashes checked) ..."
	@$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK) 2>&1 | $(QUIET_PIP); \
		test $${PIPESTATUS[0]} -eq 0 || { echo "install failed"; exit 1; }
	@$(PIP) install --quiet --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP); \
		test $${PIPESTATUS[0]} -eq 0 || { echo "install failed"; exit 1; }
	@$(PIP) check >/dev/null || { $(PIP) check; echo "$(LOCK) does not fit pyproject.toml: make lock"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# Refresh the lock from pyproject.toml with pip-tools, kept in its own throwaway venv under
# the git-ignored .cache/. Pins already in the lock stay unless pyproject.toml rules them
# out; LOCK_ARGS="--upgrade-package Django" moves one package to its newest allowed
# release, LOCK_ARGS=--upgrade all of them. Markers are evaluated for the python3 that
# runs it (3.11); every file of a pinned release is hashed, so the lock installs on any
# platform the releases have wheels for.
PIP_TOOLS_VERSION := 7.6.2
PIP_TOOLS := .cache/pip-tools
LOCK_ARGS ?=

lock:
	@test -x $(PIP_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(PIP_TOOLS) && \
		$(PIP_TOOLS)/bin/pip install --quiet --disable-pip-version-check \
		pip-tools==$(PIP_TOOLS_VERSION) 2>&1 | $(QUIET_PIP); test $${PIPESTATUS[0]} -eq 0; }
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile --quiet \
		--generate-hashes --allow-unsafe --strip-extras --all-extras --build-deps-for editable \
		--no-emit-index-url --no-emit-find-links -o $(LOCK) $(LOCK_ARGS) pyproject.toml \
		2>&1 | $(QUIET_PIP); test $${PIPESTATUS[0]} -eq 0

# Everything on loopback until Ctrl-C: the sandbox, a first sync, the web server and the
# django-q2 cluster syncing every minute. Other ports: make demo DEMO_ARGS="--port 8001
# --sandbox-port 8766". The database is DATABASE_URL's (jobcenter.sqlite3 by default).
DEMO_ARGS ?=

demo: $(STAMP)
	DEBUG=1 $(PY) manage.py demo $(DEMO_ARGS)

# The web server and the django-q2 cluster on the configured database, for real accounts.
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_schedules
	trap 'kill 0' EXIT INT TERM; $(PY) manage.py qcluster & $(PY) manage.py runserver 127.0.0.1:8000 --noreload

# The browser tests drive Debian's Chromium (Playwright brings only its driver, never a
# browser) and check pages with axe-core from npm, kept in a git-ignored cache. Quiet and
# idempotent; without apt-get or npm the tests that need them skip and say why.
NODE_CACHE := .cache/node
AXE_VERSION := 4.14.1
AXE := $(NODE_CACHE)/node_modules/axe-core/axe.min.js
# The OpenID provider the sign-in tests start (tests/oidc/provider.mjs).
OIDC_PROVIDER_VERSION := 9.13.3
OIDC_PROVIDER := $(NODE_CACHE)/node_modules/oidc-provider/lib/index.js

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "chromium is missing and could not be installed: the browser tests will skip"
	@test -f $(AXE) || npm install --silent --no-audit --no-fund --prefix $(NODE_CACHE) \
		axe-core@$(AXE_VERSION) >/dev/null 2>&1 || \
		echo "axe-core could not be installed with npm: the accessibility test will skip"
	@test -f $(OIDC_PROVIDER) || npm install --silent --no-audit --no-fund --prefix $(NODE_CACHE) \
		oidc-provider@$(OIDC_PROVIDER_VERSION) >/dev/null 2>&1 || \
		echo "oidc-provider could not be installed with npm: the sign-in tests will install it or skip"

test: $(STAMP) browser-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The large benchmark (1M jobs, 5M snapshots) on SQLite, then on PostgreSQL when one
# answers at BENCH_POSTGRES_URL (its database is created when missing). The narrower
# benchmarks run on their own: bench/sync.py (issue figures at 100k) and bench/export.py.
BENCH_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/jobcenter_bench
BENCH_ARGS ?=

bench: $(STAMP)
	$(PY) bench/large.py $(BENCH_ARGS)
	@if $(PY) -c "import socket, urllib.parse as u; p = u.urlparse('$(BENCH_POSTGRES_URL)'); \
		socket.create_connection((p.hostname, p.port or 5432), timeout=2).close()" 2>/dev/null; then \
		$(PY) bench/large.py --database-url $(BENCH_POSTGRES_URL) $(BENCH_ARGS); \
	else echo "PostgreSQL does not answer at $(BENCH_POSTGRES_URL): its leg was not run"; fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
