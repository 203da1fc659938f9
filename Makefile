# One entry point for newcomers and CI. `make demo` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint arm clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel; an open range would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	# numpy<2 (via the tflite-runtime extra) so LiteRT, tflite-runtime and ONNX Runtime share one venv
	$(PY) -m pip install -q -e '.[all,tflite-runtime,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/rnnedge demo --force

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

arm: setup
	bash devices/arm/ci.sh

clean:
	rm -rf demo-out runs .pytest_cache
