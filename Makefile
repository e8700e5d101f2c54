# The two commands a fresh machine needs: `make demo` and `make test`.
# Each sets up what it uses: the virtualenv .venv, the Python packages, Debian's Fashion-MNIST.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: demo test test-all test-boundscheck fuzz bench data clean-cache

# Tests run in two processes (pytest-xdist; one per core of the machines we run on): most tests
# are many small NumPy/Numba calls, bound by one core each. TEST_WORKERS=0 runs them in one.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))
# The weight-format tests again with Numba's bounds checks on, in a kernel cache of their own.
BOUNDSCHECK := NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=.numba-boundscheck

demo: $(VENV)/.runtime data
	$(PY) -m robustcnn demo

test: $(VENV)/.test data
	$(PY) -m pytest $(XDIST)
	@echo "weight formats again, bounds-checked: each parameter value of every test once (all: make test-boundscheck)"
	ROBUSTCNN_TEST_SAMPLE=cover $(BOUNDSCHECK) $(PY) -m pytest -q $(XDIST) tests/engine/formats

# Every weight-format test with bounds checks (CI runs it after make test).
test-boundscheck: $(VENV)/.test
	$(BOUNDSCHECK) $(PY) -m pytest -q $(XDIST) tests/engine/formats

# The whole suite, slow tests included, and every bounds-checked format test.
test-all: $(VENV)/.test data
	$(PY) -m pytest $(XDIST) -m "slow or not slow"
	$(MAKE) test-boundscheck

# The long fuzzing run (tests/fuzz): FUZZ_MUTANTS mutants of every format robustcnn reads, each
# loaded in a child under a 4 GiB address-space limit and a timeout; prints the outcome table.
# FUZZ_FORMATS=onnx,rcnn picks formats; FUZZ_JSON=out.json keeps the summaries.
FUZZ_MUTANTS ?= 10000
fuzz: $(VENV)/.test
	FUZZ_MUTANTS=$(FUZZ_MUTANTS) $(PY) -m pytest -q -s -m slow tests/fuzz/test_fuzz.py::test_long_run

bench: $(VENV)/.test
	$(PY) bench.py

$(PY):
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && \
		$(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip

# The demo draws the study's figures: the runtime with the plot extra (matplotlib), and the
# digits extra (scikit-learn, which ships the second dataset's images).
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[plot,digits]'
	touch $@

# torchattacks (the attacks' oracle) declares torchvision, which does not install beside the
# pinned torch, and an old requests; its attacks import neither: install it without them.
$(VENV)/.test: pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist || \
		{ $(SUDO) apt-get update -q && \
		  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; }

# Numba's cache does not see edits to a module that a cached kernel calls into: after editing
# engine/blas.py or a shared helper, drop the cache.
clean-cache:
	find . -path ./$(VENV) -prune -o \( -name '*.nbi' -o -name '*.nbc' \) -print | xargs rm -f
