# The two commands a fresh clone needs: `make demo` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.datakit-installed
# pymatting (pulled in by rembg) compiles with numba on first import; give it a writable cache.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test setup clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(MAKE) -f pipelines/pipeline.mk DATAKIT="$(VENV)/bin/datakit" all

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit $$?; done

clean:
	rm -rf build
