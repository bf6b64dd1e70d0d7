# The two commands: `make run` and `make test`. Only Python 3.11+ is needed on the machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install run test lint typecheck security pytest fuzz chaos bench clean

# The deployment check's tools (helm, kustomize, kubernetes-validate, checkov) in a venv of their own.
-include deploy/check.mk

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

## Start web, worker, beat and simulator with local Redis and MongoDB and demo data.
# A plain command (no shell), so that make hands a SIGTERM straight to the supervisor.
run: export DEBUG := true
run: export WEB_PORT := $(PORT)
run: export PUBLIC_BASE_URL ?= http://127.0.0.1:$(PORT)
run: install
	$(PY) -m devtools.localservices run -- $(PY) -m devtools.devrun

## Lint, type-check, scan the code and the pins (bandit, pip-audit), run the whole test suite.
test: install deploy-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=true $(VENV)/bin/mypy .
	$(PY) .ci/supply-chain
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	DEBUG=true $(VENV)/bin/mypy .

## bandit over the code, pip-audit over the pins (says so when it cannot reach its data).
security: install
	$(PY) .ci/supply-chain

pytest: install deploy-tools
	$(PY) -m pytest $(ARGS)

## Schemathesis against the API's schema, at length (`make test` runs a few examples per operation).
fuzz: install
	FUZZ_EXAMPLES=$(or $(EXAMPLES),300) $(PY) -m pytest tests/api/test_fuzz.py -p no:cacheprovider $(ARGS)

## The chaos test at length: each dependency cut off for 30 s (`make test` runs 3 s; issue 13).
chaos: install
	CHAOS_OUTAGE_SECONDS=$(or $(OUTAGE),30) $(PY) -m pytest tests/chaos -p no:cacheprovider -s $(ARGS)

## Every figure against its target (bench/run.py's docstring lists the phases; ~35 min): ingestion,
## assignment, drone choice, telemetry in, the simulator, live tracking, no-fly zones, webhooks,
## tracing, a million deliveries, the system as `make run` starts it. ARGS="--skip PHASE" skips.
bench: install
	$(PY) bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .local staticfiles .pytest_cache .mypy_cache .ruff_cache
