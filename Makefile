# The two commands a fresh machine needs: `make demo` and `make test`.
# Each sets up what it uses: the virtualenv .venv, the Python packages, Debian's Fashion-MNIST.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: demo test test-all bench data clean-cache

demo: $(VENV)/.runtime data
	$(PY) -m robustcnn demo

test: $(VENV)/.test data
	$(PY) -m pytest
	@echo "weight formats again, with Numba's bounds checks on (its own kernel cache):"
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=.numba-boundscheck $(PY) -m pytest -q tests/engine/formats

# The whole suite, slow tests included.
test-all: $(VENV)/.test data
	$(PY) -m pytest -m "slow or not slow"

bench: $(VENV)/.test
	$(PY) bench.py

$(PY):
	$(PYTHON) -m venv $(VENV) || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && \
		$(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip

# The demo draws the study's figures: the runtime with the plot extra (matplotlib).
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[plot]'
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
