# Two set-up commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch with a working torchvision: the pairs that install here from the local package cache
ifeq ($(shell uname -m),aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
endif

.PHONY: demo test test-all lint bench wheel clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[train,onnx,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/posekit demo --out runs/demo

lint: $(STAMP)  # style and the layer contracts (pyproject.toml); part of `make test`
	$(VENV)/bin/ruff check posekit tests benchmarks
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q

test-all: $(STAMP)  # includes the slow tests
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	$(VENV)/bin/posekit bench trainer_overhead

wheel: $(STAMP)  # dist/posekit-*.whl: recipes inside the package, benchmarks under share/posekit
	rm -rf build
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation . -w dist

clean:
	rm -rf runs .pytest_cache build dist
