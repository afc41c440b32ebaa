# The two commands a newcomer types: `make run` and `make test`.
# Each installs what is missing first (scripts/bootstrap.sh: apt packages from
# scripts/apt/, then the venv .venv with the pinned deps from pyproject.toml).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := $(CURDIR)/.run
PORT ?= 2525
PYTEST_ARGS ?=

.PHONY: all bootstrap bootstrap-test run test test-fast lint systest deb rpm soak bench clean

all: test

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-test:
	@bash scripts/bootstrap.sh --test

# Serve on 127.0.0.1:$(PORT) in the foreground into a maildir under .run/.
run: bootstrap
	@bash scripts/run-dev.sh "$(RUN_DIR)" "$(PORT)"

# Everything CI runs: units, protocol transcripts, real daemons, the short
# reliability form, packages and the booted-systemd container test.
test: bootstrap-test
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# Inner loop: no container, no packaging.
test-fast: bootstrap-test
	$(PY) -m pytest -q -m "not system" $(PYTEST_ARGS) tests

# Style and types: ruff on everything Python, mypy on the package (both
# configured and pinned in pyproject.toml).
lint: bootstrap-test
	@rc=0; \
	$(VENV)/bin/ruff check qsmtp tests scripts bench || rc=1; \
	$(VENV)/bin/mypy || rc=1; \
	exit $$rc

systest: bootstrap-test
	$(PY) -m pytest -q -m system $(PYTEST_ARGS) tests

deb: bootstrap-test
	@bash packaging/build-deb.sh

rpm: bootstrap-test
	@bash packaging/build-rpm.sh

# The long form of tests/reliability (minutes, bounded): QSMTP_SOAK=1.
soak: bootstrap-test
	QSMTP_SOAK=1 $(PY) -m pytest -q --timeout=3600 $(PYTEST_ARGS) tests/reliability

# The comparison with the peers (docs/BENCHMARKS.md; ~25 min, unattended).
# BENCH_SMOKE=1: a few minutes, checks every server and case, writes no doc.
bench: bootstrap-test
	@bash bench/run.sh

clean:
	rm -rf $(RUN_DIR) dist build *.egg-info .pytest_cache
