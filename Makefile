# A scaling study of vision backbones. `make help` lists the targets.
# Every target installs what it needs first: `make test` or `make sweep` work on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint format sweep predict fits report erf erf-train breakdown bench gpu-wheels gpu-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with pip and install the study with its dev, slurm and parallel extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,slurm,parallel]'
	touch $@

test: $(STAMP) ## run the tests that need no GPU and take seconds to minutes on a CPU
	$(PY) -m pytest

test-all: $(STAMP) ## also run the slow tests (not the gpu ones)
	$(PY) -m pytest -m 'not gpu'

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

sweep: $(STAMP) ## measure the default grid (9 models x 6 sizes), the ablations and the naive scan here, then report
	$(PY) -m study.sweep sweep=default
	$(PY) -m study.sweep sweep=ablations
	$(PY) -m study.sweep sweep=naive_scan
	$(PY) -m study.report results

predict: $(STAMP) ## GMACs and predicted memory of the default grid and naive scan, nothing run for real
	$(PY) -m study.sweep sweep=predicted results_dir=results/predicted
	$(PY) -m study.sweep sweep=naive_scan measure.measured_memory=false measure.throughput=false \
		results_dir=results/predicted

fits: $(STAMP) ## largest power-of-two batch whose predicted CUDA peak (inference, training step) fits 24/40/80/141 GiB; writes results/fits_cuda_predicted*.csv
	$(PY) -m study.measure.fits --mode inference --out results/fits_cuda_predicted.csv
	$(PY) -m study.measure.fits --mode train --out results/fits_cuda_predicted_train.csv

report: $(STAMP) ## turn the rows under results/ into results.csv, REPORT.md and plots
	$(PY) -m study.report results

erf: $(STAMP) ## effective receptive fields of the default models into results/erf/ (the committed ones)
	$(PY) -m study.erf out_dir=results/erf

# The training experiment (README.md, "Receptive fields through training"): conf/train.yaml's preset
# trains the five micro models (about 41 minutes on 2 cores: conf/train.yaml) into ERF_TRAIN_DIR,
# then draws their ERFs at every checkpoint into ERF_OUT (1.5 minutes). Running it again resumes
# unfinished models; delete ERF_TRAIN_DIR to start over. A quick check that leaves results/ alone:
#   make erf-train ERF_TRAIN_DIR=/tmp/t ERF_OUT=/tmp/e TRAIN_OUT=/tmp/tr
#   TRAIN_ARGS="steps=4 save_steps=[0,4] eval_every=2 n_val=16" ERF_ARGS="n_images=2"
ERF_TRAIN_DIR ?= outputs/erf-train
ERF_OUT ?= results/erf
TRAIN_OUT ?= results/train
TRAIN_ARGS ?=
ERF_ARGS ?= n_images=16

erf-train: $(STAMP) ## train one micro model per family on the glyph task, then their ERFs through training
	$(PY) -m study.train run_dir=$(ERF_TRAIN_DIR) $(TRAIN_ARGS)
	$(PY) -m study.train_task --out $(TRAIN_OUT)/samples.png
	for log in $(ERF_TRAIN_DIR)/*/train.csv; do \
		cp $$log $(TRAIN_OUT)/train_$$(basename $$(dirname $$log)).csv; done
	$(PY) -m study.erf run_dir=$(ERF_TRAIN_DIR) run_img_size=256 out_dir=$(ERF_OUT) $(ERF_ARGS)

breakdown: $(STAMP) ## where each model's forward time goes (profiler, by kind of op); writes results/breakdown_<device>.csv
	$(PY) -m study.measure.breakdown --img-sizes 224 384 512 768 1024 1248

bench: $(STAMP) ## time every selective-scan backend, and the calls Vim/VMamba make; writes results/kernels_<device>.csv
	$(PY) -m study.measure.scan_calls
	$(PY) -m kernels.bench

# A GPU machine may have no package registry: it runs with its own python3 (torch, triton, timm,
# pandas, matplotlib) plus the pure-Python wheels that `make gpu-wheels` put in .whl/ here.
GPU_PYTHON ?= python3
GPU_SITE := /tmp/vision-scaling-gpu-site
GPU_ENV := PYTHONPATH=$(GPU_SITE):$(CURDIR)

gpu-wheels: $(STAMP) ## fetch the pure-Python wheels gpu-check needs (hydra-core and its deps) into .whl/
	$(VENV)/bin/pip wheel --quiet --no-deps -w .whl \
		$$($(VENV)/bin/pip freeze | grep -iE '^(hydra-core|omegaconf|antlr4-python3-runtime)==')

gpu-check: ## on a CUDA machine: Triton kernels vs references, scan benchmark, GPU sweep cells, report
	@if [ -d .whl ]; then $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --no-compile \
		--upgrade --target $(GPU_SITE) .whl/*.whl; fi
	@# A failed or skipped kernel check (e.g. no mamba_ssm to compare with) fails the target, but
	@# only after the sweeps and the report ran: device time is scarce. GPU_CHECK_FLAGS=--allow-skips
	@status=0; $(GPU_ENV) $(GPU_PYTHON) -m kernels.gpu_check $(GPU_CHECK_FLAGS) || status=$$?; \
	$(GPU_ENV) $(GPU_PYTHON) -m pytest -q -p no:cacheprovider -m gpu tests/test_measure.py \
		|| status=$$?; \
	$(GPU_ENV) $(GPU_PYTHON) -m study.sweep sweep=gpu_check || status=$$?; \
	$(GPU_ENV) $(GPU_PYTHON) -m study.sweep sweep=vim_paper || status=$$?; \
	$(GPU_ENV) $(GPU_PYTHON) -m study.report results || status=$$?; \
	exit $$status
