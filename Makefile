# The Makefile is the user interface: every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help setup data train sweep compare ui test test-all test-fast lint bench bench-predict compat clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv (Python 3.11): pinned torch first, then the project

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so no resolver pulls another build
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
	touch $(STAMP)

data: setup ## build the embedded demo dataset (synthetic distortions of real photos)
	$(BIN)/iqs data build-demo

train: setup ## train experiment=demo on the demo data, print the per-dataset test table
	$(BIN)/iqs train experiment=demo $(ARGS)

sweep: setup ## head x rebalance x thresholds sweep on the demo (16 runs; ARGS="data.folds=5 'data.fold=range(5)'" for 5-fold CV)
	$(BIN)/iqs train -m experiment=demo head=regression,distribution,classification,ordinal \
	  rebalance=none,sampler thresholds=t5_6,t4.5_6.5 $(ARGS)

compare: setup ## side-by-side table of the tracked runs
	$(BIN)/iqs compare $(ARGS)

ui: setup ## MLflow UI on 127.0.0.1:5000, same store as train (MLFLOW_TRACKING_URI / logger.tracking_uri=)
	$(BIN)/iqs ui $(ARGS)

test: setup ## the test suite (slow and OpenCV-matrix tests included; 2 xdist workers; 4 min 44 s on 2 cores once the tool venvs exist)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not gpu_script" $(ARGS)

test-all: setup ## make test plus the CPU proof run of scripts/gpu_check.sh (over a minute more)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(ARGS)

test-fast: setup ## the test suite without slow tests
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" $(ARGS)

lint: setup ## ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup ## every benchmark, measured side by side; writes bench/results.json
	$(BIN)/python bench/run.py $(ARGS)

bench-predict: setup ## predict benchmark only (12 MP and 24 MP JPEGs)
	$(BIN)/python bench/run.py --only predict_bench

compat: setup ## OpenCV matrix: fixed-seed demo exports (ONNX and TF .pb) in OpenCV 4.6-5.x vs iqs predict and PyTorch (ARGS=--backbones)
	$(BIN)/python -m iqs.deploy.compat $(ARGS)

clean: ## remove caches and outputs (keeps .venv and mlruns)
	rm -rf outputs multirun cache .pytest_cache
