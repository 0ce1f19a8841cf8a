# Two commands for a new user: `make run` (the main job on embedded defaults) and `make test`.
# Both create .venv when missing and install everything into it: torch==2.13.0 first (a CPU build),
# then the project (whose torch range 2.13.0 satisfies, so nothing larger is pulled in).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m launch.main

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) -m launch.bench_envs

clean:
	rm -rf $(VENV) outputs multirun
