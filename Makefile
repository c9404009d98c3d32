# The two set-up commands (README): `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
DEMO_ARGS ?=

.PHONY: all venv binaries checkov real-node demo demo-down test test-unit test-integration test-e2e lint bench bench-relay bench-operator bench-time-to-train clean

all: test

# Every workspace member (editable) and the dev group, exactly as uv.lock pins them: --frozen never
# re-resolves (run `uv lock` after a pyproject change; a unit test checks the lock is current).
$(STAMP): pyproject.toml uv.lock api/pyproject.toml operator/pyproject.toml trainer_image/pyproject.toml \
          cli/pyproject.toml hack/python/pyproject.toml
	@echo "==> Python environment ($(VENV)): torch, lightning, kopf, ... (first time: several minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/pip install -q uv
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --quiet --frozen --all-packages
	@touch $(STAMP)

venv: $(STAMP)

binaries:
	@echo "==> Control plane binaries (cached by version in $${LTJ_CACHE:-~/.cache/ltj})"
	@bash hack/build-binaries.sh >/dev/null

## checkov: the scanner the unit tests run over the chart, the rendered pods and the Dockerfiles
## (its own venv, cached by version in ${LTJ_CACHE:-~/.cache/ltj})
checkov: venv
	@echo "==> checkov (cached by version in $${LTJ_CACHE:-~/.cache/ltj})"
	@bash hack/install-checkov.sh >/dev/null

## real-node: the real node's Debian packages, binaries and the project's images (root; else skipped)
real-node: venv binaries
	@echo "==> Real node: containerd, kubelet, CoreDNS, ... and the ltj images (first time: ~15 min)"
	@$(PY) -m ltj_localcluster prepare

## demo: the local cluster with a real node, the operator installed by Helm, the sample 2-node DDP job
## trained in containers while its status streams; then the cluster stops (root)
demo: venv binaries real-node
	@$(PY) hack/demo.py $(DEMO_ARGS)

## demo-down: stop a demo cluster left running with `make demo DEMO_ARGS=--keep`
demo-down: venv
	@$(PY) -m ltj_localcluster down --run-dir .run/demo

## test: every tier (unit; integration on the control plane with kwok nodes; e2e on the real node; kind skips without Docker)
test: venv binaries checkov real-node
	@bash hack/run-pytest.sh tests $(PYTEST_ARGS)

test-unit: venv binaries checkov  # the chart's unit tests run helm; test_checkov runs checkov
	@bash hack/run-pytest.sh tests/unit $(PYTEST_ARGS)

test-integration: venv binaries
	@bash hack/run-pytest.sh tests/integration $(PYTEST_ARGS)

test-e2e: venv binaries real-node
	@bash hack/run-pytest.sh tests/e2e $(PYTEST_ARGS)

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/hadolint trainer_image/Dockerfile operator/Dockerfile

## bench: the trainer's overhead over plain Lightning
bench: venv binaries
	@$(PY) benchmarks/trainer_overhead.py

## bench-relay: event -> status latency of the relay against a real API server
bench-relay: venv binaries
	@$(PY) benchmarks/relay_latency.py

## bench-operator: ltj vs Kubeflow's training-operator vs a plain client, on kwok nodes (root, Go; ~40 min)
bench-operator: venv binaries
	@$(PY) benchmarks/operator_scale.py $(BENCH_ARGS)

## bench-time-to-train: submit -> first step / Succeeded, kill -> resumed step: ltj vs PyTorchJob on the real node (root, Go)
bench-time-to-train: venv binaries real-node
	@$(PY) benchmarks/time_to_train.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .pytest_cache
