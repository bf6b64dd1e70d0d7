# Tools of the deployment check, in a virtualenv of their own (.venv/deploy-tools/).
# Included by the main Makefile (`-include deploy/check.mk`); also runs alone:
#   make -f deploy/check.mk deploy-tools
# The stamp makes it a no-op until deploy/requirements-check.txt changes.

DEPLOY_TOOLS_PYTHON ?= $(or $(PYTHON),python3)
DEPLOY_TOOLS_VENV := .venv/deploy-tools
DEPLOY_TOOLS_STAMP := $(DEPLOY_TOOLS_VENV)/.installed

.PHONY: deploy-tools deploy-check

deploy-tools: $(DEPLOY_TOOLS_STAMP)

# --no-deps: the file pins the whole closure. --ignore-requires-python: only pykustomize needs it
# (see the file's header); every other pin was resolved on this Python. `pip check` then proves
# the closure complete.
$(DEPLOY_TOOLS_STAMP): deploy/requirements-check.txt deploy/check.mk
	test -x $(DEPLOY_TOOLS_VENV)/bin/python || $(DEPLOY_TOOLS_PYTHON) -m venv $(DEPLOY_TOOLS_VENV)
	$(DEPLOY_TOOLS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		--no-deps --ignore-requires-python -r deploy/requirements-check.txt
	$(DEPLOY_TOOLS_VENV)/bin/python -m pip check --disable-pip-version-check
	touch $@

## The deployment check alone (the full `make test` runs it too).
deploy-check: deploy-tools
	.venv/bin/python -m pytest tests/deploy
