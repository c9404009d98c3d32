# The two set-up commands (README): `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: all venv binaries real-node demo demo-real demo-down test test-unit test-integration test-e2e lint bench bench-relay bench-operator bench-real-node clean

all: test

$(STAMP): pyproject.toml
	@echo "==> Python environment ($(VENV)): torch, lightning, kopf, ... (first time: several minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --upgrade uv
	@$(VENV)/bin/uv pip install --python $(PY) -e '.[operator,trainer,dev]'
	@touch $(STAMP)

venv: $(STAMP)

binaries:
	@echo "==> Control plane binaries (cached by version in $${LTJ_CACHE:-~/.cache/ltj})"
	@bash hack/build-binaries.sh >/dev/null

## real-node: the real node's Debian packages, binaries and the project's images (root; else skipped)
real-node: venv binaries
	@echo "==> Real node: containerd, kubelet, CoreDNS, ... and the ltj images (first time: ~15 min)"
	@$(PY) -m ltj_localcluster prepare

## demo: start the local cluster, run the sample 2-node DDP job, show its status, stop the cluster
demo: venv binaries
	@$(PY) hack/demo.py

## demo-real: the same sample on one real node (kubelet, containerd), the operator installed by Helm (root)
demo-real: venv binaries real-node
	@$(PY) hack/demo.py --real-node

## demo-down: stop a demo cluster left running with `hack/demo.py --keep`
demo-down: venv
	@$(PY) -m ltj_localcluster down --run-dir .run/demo

## test: every tier (unit, integration, e2e on the local cluster; kind tests skip without Docker)
test: venv binaries real-node
	@bash hack/run-pytest.sh tests $(PYTEST_ARGS)

test-unit: venv binaries  # the chart's unit tests run helm
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

## bench-operator: ltj vs Kubeflow's training-operator vs a plain client (root, Go; ~40 min)
bench-operator: venv binaries
	@$(PY) benchmarks/operator_scale.py $(BENCH_ARGS)

## bench-real-node: the sample job on the real node vs the node agent; image sizes and build times (root)
bench-real-node: venv binaries real-node
	@$(PY) benchmarks/real_node.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .pytest_cache
