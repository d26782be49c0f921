# Humus: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HUMUS := $(VENV)/bin/humus
PYTEST_ARGS ?=

.PHONY: demo test venv servers bench clean

venv: $(VENV)/.installed

# One virtual environment, two stamps: `make demo` installs only the demo's
# dependencies (.[demo]: no scipy, scikit-learn, pandas or InfluxDB client),
# `make test` adds everything the tests need on top. Running both costs one
# venv, not two; running only the demo stays small (sizes in the README).
$(VENV)/bin/python:
	@deploy/ensure-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(VENV)/.installed-demo: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[demo]'
	@touch $@

demo: $(VENV)/.installed-demo
	$(HUMUS) demo

servers:
	@deploy/install-test-servers.sh

test: venv servers
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv servers
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) humus-demo .pytest_cache
