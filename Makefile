# MotionGuard: `make demo` runs the main job, `make test` runs the test suite.
# Both set up everything they need on a fresh Debian machine first.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps deploy-tools image demo test lint bench clean

setup: system-deps $(STAMP)

# helm, kubeconform, promtool/prometheus and offline schemas for the deployment checks
deploy-tools: $(STAMP)
	@bash scripts/install-deploy-tools.sh

system-deps:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# the worker image, motionguard:dev-cpu, with Debian's podman and no registry (cached layers reused)
image:
	@bash scripts/image.sh

demo: setup
	@bash scripts/demo.sh

test: setup deploy-tools image
	$(PY) -m pytest

# benchmarks (not tests): writes BENCHMARKS.md; `make bench BENCH_ARGS=--quick` for a short run
bench: setup
	$(PY) -m pip install --quiet -e '.[bench]'
	@bash scripts/bench.sh $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check detectors streamer motionguard_dev tests benchmarks
	$(VENV)/bin/ruff format --check detectors streamer motionguard_dev tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-out
