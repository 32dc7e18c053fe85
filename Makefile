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

# Every benchmark (each writes benchmarks/results/NAME.json), then the README's Performance table from
# those files. One alone: `.venv/bin/python benchmarks/NAME.py && .venv/bin/python benchmarks/readme_table.py`.
# BENCH_FLAGS=--quick: smoke runs (results/quick/, never in the README).
BENCHMARKS = $(filter-out benchmarks/harness.py benchmarks/readme_table.py,$(wildcard benchmarks/*.py))
BENCH_FLAGS ?=
bench: $(STAMP)
	for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b $(BENCH_FLAGS) || exit $$?; done
	$(PY) benchmarks/readme_table.py

clean:
	rm -rf build
