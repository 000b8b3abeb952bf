# The Makefile is the user interface: every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/main.txt
LOCK_TOOLS := .cache/pip-tools
PIP_TOOLS := pip-tools==7.7.0
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help setup lock deps-latest data train sweep compare ui test test-all test-fast lint bench bench-predict compat clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv (Python 3.11) with exactly the locked versions of requirements/main.txt

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# exactly the lock: every distribution pinned (torch 2.14.1 and its CUDA wheels included), each file
	# checked against the lock's hashes; then the project itself, nothing resolved (its dependencies are the lock)
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, torchvision, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
	touch $(STAMP)

lock: setup ## re-resolve requirements/*.txt from pyproject.toml, keeping pins still allowed (ARGS=--upgrade: newest)
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q $(PIP_TOOLS); }
	$(LOCK_TOOLS)/bin/pip-compile -q --generate-hashes --allow-unsafe --extra dev --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(ARGS) -o $(LOCK) pyproject.toml
	$(BIN)/iqs compat lock $(LOCK_TOOLS)/bin/pip-compile $(ARGS)
	@echo "locks refreshed: review 'git diff requirements/', then 'make setup' and 'make test'"

deps-latest: ## scratch venv with the newest versions pyproject.toml allows: fast tests + export smoke test, prints what breaks
	PYTHON=$(PYTHON) scripts/deps_latest.sh

data: setup ## build the embedded demo dataset (synthetic distortions of real photos)
	$(BIN)/iqs data build-demo

train: setup ## train experiment=demo on the demo data, print the per-dataset test table
	$(BIN)/iqs train experiment=demo $(ARGS)

sweep: setup ## head x rebalance x thresholds sweep on the demo (16 runs; ARGS="data.folds=5 'data.fold=range(5)'" for 5-fold CV)
	$(BIN)/iqs train -m experiment=demo head=regression,distribution,classification,ordinal \
	  rebalance=none,sampler thresholds=t5_6,t4.5_6.5 $(ARGS)

compare: setup ## side-by-side table of the tracked runs
	$(BIN)/iqs compare $(ARGS)

ui: setup ## MLflow UI on 127.0.0.1:5000 (same store as train), opened on the runs table: test SRCC, head, data, thresholds
	$(BIN)/iqs ui $(ARGS)

# The tests keep bytecode even where PYTHONDONTWRITEBYTECODE is set (git ignores __pycache__/): each worker
# rewrites every test module's asserts and each `iqs` process it starts compiles src/ otherwise (a worker's
# collection: 14.5 s without the caches, 9 s with them).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q -n 2 --dist loadfile

test: setup ## the test suite (slow and OpenCV-matrix tests included; 2 xdist workers; about 5 min on 2 cores once the tool venvs exist)
	$(PYTEST) -m "not gpu_script" $(ARGS)

test-all: setup ## make test plus the CPU proof run of scripts/gpu_check.sh (over a minute more)
	$(PYTEST) $(ARGS)

test-fast: setup ## the test suite without slow tests (those of half a second or more; about 50 s on 2 cores)
	$(PYTEST) -m "not slow" $(ARGS)

lint: setup ## ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup ## every benchmark, measured side by side; writes bench/results.json
	$(BIN)/python bench/run.py $(ARGS)

bench-predict: setup ## predict benchmark only (12 MP and 24 MP JPEGs)
	$(BIN)/python bench/run.py --only predict_bench

compat: setup ## OpenCV matrix: fixed-seed demo exports (ONNX and TF .pb) in OpenCV 4.6-5.x vs iqs predict and PyTorch (ARGS=--backbones)
	$(BIN)/iqs compat $(ARGS)

clean: ## remove caches and outputs (keeps .venv and mlruns)
	rm -rf outputs multirun cache .pytest_cache
