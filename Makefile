# Every target that needs Python runs inside the project environment, which
# scripts/env.sh builds on first use (a venv, or a Debian 13 sandbox on hosts
# whose glibc is too old for TFX 1.21).  Nobody types bwrap.
SHELL := /bin/bash
RUN := bash scripts/env.sh run
PY := $(RUN) python

# Overridable on the command line: make pipeline DATA_DIR=../shared/data/ccp EPOCHS=20
# (PIPELINE_ROOT and SERVING_DIR reach the pipeline only when given there, so that a
# CONFIG's own folders are kept otherwise).
DATA_DIR ?=
EPOCHS ?=
CONFIG ?=
ARGS ?=
OVERLAY ?= gpu
SERVING_DIR ?= build/serving
PIPELINE_ROOT ?= build/pipeline_root
# TensorBoard's folder: one run's Trainer, or e.g. LOGDIR=build/variants for all variants.
LOGDIR ?= $(PIPELINE_ROOT)/Trainer
# TensorBoard listens on this machine only; TENSORBOARD_HOST=0.0.0.0 shares it.
TENSORBOARD_HOST ?= localhost
# The model shipped in the repository, served until the pipeline pushes one.
SHIPPED_MODEL := models/bgremover/1

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint format pipeline serve remove status kubeflow kubeflow-submit \
        k8s deploy deploy-models-config bench data lock protos tensorboard clean variants prune

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-21s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## build the environment (cached under ~/.cache/background-remover, keyed by the lock)
	@bash scripts/env.sh setup

test: ## run the whole test suite (builds the environment first if needed)
	$(RUN) python -m pytest $(ARGS)

test-fast: ## tests without the end-to-end pipeline runs
	$(RUN) python -m pytest -m "not slow" $(ARGS)

lint: ## ruff check and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

pipeline: ## run the TFX pipeline locally (synthetic data unless DATA_DIR is set)
	$(PY) -m tfx_pipeline.local_runner $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(CONFIG),--config "$(CONFIG)") \
	  $(if $(EPOCHS),--epochs $(EPOCHS)) \
	  $(if $(filter command line,$(origin PIPELINE_ROOT)),--pipeline-root "$(PIPELINE_ROOT)") \
	  $(if $(filter command line,$(origin SERVING_DIR)),--serving-dir "$(SERVING_DIR)") $(ARGS)

prune: ## free disk: delete pipeline artifacts older than the last 3 runs, keeping the blessed model (ARGS="--dry-run")
	$(PY) -m tfx_pipeline.prune $(if $(CONFIG),--config "$(CONFIG)") \
	  $(if $(filter command line,$(origin PIPELINE_ROOT)),--pipeline-root "$(PIPELINE_ROOT)") $(ARGS)

variants: ## train each configs/variants/*.toml through the pipeline, one after another (~14 min each)
	for config in configs/variants/*.toml; do $(MAKE) pipeline CONFIG=$$config || exit 1; done

serve: ## serve pushed models (else the shipped one) over TF Serving's gRPC API on localhost:8500
	if [ -f "$(SHIPPED_MODEL)/saved_model.pb" ]; then fallback=(--fallback-model "$(SHIPPED_MODEL)"); \
	else fallback=(); fi; \
	$(PY) -m serving.server --serving-dir "$(SERVING_DIR)" "$${fallback[@]}" $(ARGS)

remove: ## run the CLI, e.g. make remove ARGS="photo.jpg -o out.png"
	$(RUN) bgremove remove $(ARGS)

status: ## print the served model versions
	$(RUN) bgremove status $(ARGS)

kubeflow: ## compile the pipeline for Kubeflow Pipelines into build/pipeline.json
	$(PY) -m tfx_pipeline.kubeflow_runner --config $(or $(CONFIG),configs/kubeflow.toml) $(ARGS)

kubeflow-submit: kubeflow ## submit build/pipeline.json to $KFP_ENDPOINT
	$(PY) -m tfx_pipeline.kubeflow_submit build/pipeline.json $(ARGS)

k8s: ## render the Kubernetes overlays into build/k8s/
	$(PY) -m tests.k8s_render build/k8s

deploy: k8s ## apply an overlay to the current cluster (OVERLAY=gpu|cpu); keeps the live models config
	$(RUN) bash k8s/deploy.sh $(OVERLAY)

deploy-models-config: k8s ## replace only the live models config with the rendered one (k8s/base/config/models.config)
	$(RUN) bash k8s/deploy.sh $(OVERLAY) --reset-models-config

bench: ## benchmarks into build/bench/; a full model run also rewrites the README model table
	$(PY) -m benchmarks.run $(ARGS)

data: ## fetch the Kaggle TikTok dancing dataset into data/tiktok (needs Kaggle credentials)
	$(PY) -m tfx_pipeline.fetch_data data/tiktok

lock: ## regenerate requirements.lock from pyproject.toml
	$(RUN) uv pip compile pyproject.toml --extra pipeline --extra dev --universal \
	  --python-version 3.10 -o requirements.lock

protos: ## regenerate the lean client's protobuf modules
	$(PY) -m serving.protos.generate

tensorboard: ## watch training curves of the local pipeline runs (LOGDIR=build/variants: all variants)
	$(RUN) tensorboard --logdir "$(LOGDIR)" --host $(TENSORBOARD_HOST) $(ARGS)

clean: ## remove build outputs (not the cached environment)
	rm -rf build .pytest_cache .ruff_cache
