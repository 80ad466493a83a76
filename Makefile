# `make demo` and `make test` each set up .venv on a fresh machine, then run. `make test` also installs
# the Debian packages the SLURM and Chromium tests need (.ci/setup-debian.sh: as root; otherwise it
# prints the command) and runs `make lint`. `make test-fast`: no SLURM cluster, no end-to-end study (for development).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist workers: the suite is sized for 2 (a 2-core machine); tests/conftest.py orders the modules
WORKERS ?= 2
XDIST := -n $(WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: demo deps lint test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,features]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnsweep run studies/demo.yaml --resume

deps:
	.ci/setup-debian.sh

# `make lint FORMAT=1` also checks ruff's formatting (the code is not formatted by ruff yet).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(if $(FORMAT),$(PY) -m ruff format --check .)
	$(VENV)/bin/lint-imports

test: deps $(STAMP) lint
	$(PY) -m pytest $(XDIST) --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slurm and not slow"

clean:
	rm -rf runs .pytest_cache
