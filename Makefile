# Humus: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HUMUS := $(VENV)/bin/humus
PYTEST_ARGS ?=

.PHONY: demo test venv servers bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@deploy/ensure-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: venv
	$(HUMUS) demo

servers:
	@deploy/install-test-servers.sh

test: venv servers
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv servers
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) humus-demo .pytest_cache
