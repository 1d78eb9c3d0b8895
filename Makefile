# Two commands do all the set-up on a fresh machine:
#   make demo   -- create .venv, install, run the demo on built-in data
#   make test   -- create .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test test-fast bench venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned CPU wheel first: an unpinned torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,parquet,cluster,ray]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/srr-demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# Benchmarks print ratios against a baseline measured in the same run.
bench: $(VENV)/.installed
	$(PY) -m benchmarks.train_speed
	$(PY) -m benchmarks.analysis_speed

clean:
	rm -rf $(VENV) *.egg-info
