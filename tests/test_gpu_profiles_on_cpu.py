"""The GPU profiles' own parameter files through all six notebooks, on a CPU.

params/ (A100/H100) and params/t4/ (free Colab/Kaggle T4) are never run on a GPU by CI. This test
runs those very files through the real pipeline (nl2sql_lib.pipeline.run_pipeline, papermill,
every notebook) with CPU_OVERRIDES, the one list of what a CPU cannot run: the hub model becomes
the tiny random model, GPU-only pieces are switched off, and steps, batches and question counts
shrink to smoke sizes. Every other key of each file must reach the stage unchanged (checked in
the manifests), so a key or a stage that breaks a GPU profile fails here.

Both profiles run in full: 96 s (gpu) and 88 s (t4) on this project's 2-core machine with the
cores free, 170 s and 120 s with other tests sharing them (tests/test_smoke_pipeline.py: 118 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nl2sql_lib.config import STAGES, read_yaml
from nl2sql_lib.pipeline import NOTEBOOKS, PROFILE_DIRS, plan, run_pipeline
from tests.test_smoke_pipeline import EXPECTED  # the artifacts every stage leaves, as for the smoke profile

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GPU_PROFILES = ["gpu", "t4"]
TINY = "tiny:smollm2"  # random 2-layer model with SmolLM2's tokenizer, built in a second

# stage -> {dotted key: value}. One reason per override: why a CPU cannot run the file's value.
# "Sizes" are smoke-profile sizes (params/smoke/): the real ones take hours per stage on 2 cores.
# Not overridden, because a CPU runs them: dtype (float16/bfloat16/auto: training keeps fp32
# weights on a CPU), attn_implementation (auto/sdpa), LoRA shapes, gradient checkpointing,
# learning rates and schedules, rewards, vLLM memory shares (unused without vLLM), dpo: true.
CPU_OVERRIDES: dict[str, dict[str, Any]] = {
    "data": {
        "tokenizer": TINY,                       # the Qwen hub model is not in a CI cache (offline)
        # size: schemas of ~250 tokens, not ~850; every later stage renders prompts this way, and
        # on a CPU the time goes into per-token work (the tiny model's 49k-word logits)
        "schema_render.max_tokens": 256,
    },
    "sft": {
        "model.spec": TINY,                      # 1.5B hub model: not cached, hours per step on a CPU
        "model.quantization": "none",            # bitsandbytes 4/8-bit needs CUDA
        "training.max_steps": 10,                # size (the files train whole epochs)
        "training.per_device_train_batch_size": 4,   # size
        "training.gradient_accumulation_steps": 1,   # size
        "max_train_examples": 64,                # size
        "sample_dev_questions": 2,               # size: before/after samples are generated
        "sample_max_new_tokens": 16,             # size
    },
    "grpo": {
        "model.quantization": "none",            # bitsandbytes needs CUDA
        "use_vllm": False,                       # vLLM needs CUDA
        "num_generations": 2,                    # size
        "max_completion_length": 16,             # size
        "max_train_examples": 8,                 # size
        "training.max_steps": 2,                 # size
        "training.per_device_train_batch_size": 4,   # size (a multiple of num_generations)
        "training.gradient_accumulation_steps": 1,   # size
    },
    "tree": {
        "use_vllm": False,                       # vLLM needs CUDA
        "max_questions": 6,                      # size
        "num_roots": 2,                          # size
        "num_revisions": 1,                      # size
        "max_depth": 1,                          # size
        "max_new_tokens": 16,                    # size
        "batch_size": 6,                         # size
    },
    "reward_model": {
        "model.spec": TINY,                      # hub model: not cached, too slow on a CPU
        "model.quantization": "none",            # bitsandbytes needs CUDA
        # The random tiny policy almost never writes correct SQL, so its trees give (nearly) no
        # pairs; gold SQL vs checked wrong edits of it fills in, as in params/smoke/.
        "pairs_source": "tree+gold_perturbed",
        "training.max_steps": 8,                 # size (the files train whole epochs)
        "training.per_device_train_batch_size": 4,   # size
        "training.gradient_accumulation_steps": 1,   # size
        "max_train_pairs": 32,                   # size
        "max_test_pairs": 16,                    # size
        "eval_batch_size": 8,                    # size
        "dpo_training.max_steps": 2,             # size
        "dpo_training.per_device_train_batch_size": 2,   # size
        "dpo_training.gradient_accumulation_steps": 1,   # size
    },
    "eval": {
        "base_model": TINY,                      # hub model: not cached, too slow on a CPU
        "use_vllm": False,                       # vLLM needs CUDA
        "num_candidates": 2,                     # size
        "max_new_tokens": 16,                    # size
        "batch_size": 4,                         # size
        "max_dev_examples": 6,                   # size
        "spider_limit": 4,                       # size (Spider runs only where ../shared/spider-dev exists)
    },
}


def _leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    """``{"training": {"max_steps": 2}, "sources": [{"type": "x"}]}`` ->
    ``{"training.max_steps": 2, "sources.0.type": "x"}``; a list of plain values is one leaf."""
    if isinstance(values, dict) and values:
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    if isinstance(values, list) and any(isinstance(v, (dict, list)) for v in values):
        out = {}
        for index, value in enumerate(values):
            out.update(_leaves(value, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): values}


MISSING = "<missing>"


def _lookup(values: Any, dotted: str) -> Any:
    """The value at a dotted key (list items by index), or MISSING."""
    for part in dotted.split("."):
        try:
            values = values[int(part)] if isinstance(values, list) else values[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return MISSING
    return values


def _overridden(key: str, overrides: dict[str, Any]) -> bool:
    return any(key == o or key.startswith(o + ".") for o in overrides)


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_gpu_profile_files_validate_with_the_cpu_overrides(profile):
    """Fast: every file of the profile, with CPU_OVERRIDES applied, passes its stage's model."""
    stages = plan(profile, "check", "01_data", "06_eval", overrides=CPU_OVERRIDES)
    assert [item.stage for item in stages] == list(STAGES)
    for item in stages:
        assert item.parameters["profile"] == profile
        for key, value in CPU_OVERRIDES[item.stage].items():
            assert _lookup(item.parameters, key) == value


@pytest.mark.slow
@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_gpu_profile_runs_every_notebook_on_cpu(profile, tmp_path):
    output_root = tmp_path / "outputs"
    run = f"{profile}-on-cpu"
    summary = run_pipeline(profile, run, output_root=str(output_root), overrides=CPU_OVERRIDES)
    assert list(summary["stages"]) == NOTEBOOKS
    assert summary["overrides"] == CPU_OVERRIDES
    run_dir = output_root / run
    for stage, artifacts in EXPECTED.items():
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["stage"] == stage
        for name in artifacts:
            assert (run_dir / stage / name).exists(), f"{profile}: {stage}/{name} missing"

        # every key of the profile's file that CPU_OVERRIDES does not name reached the stage as
        # written; the overridden ones arrived with the override's value
        used = manifest["parameters"]
        original = read_yaml(PROJECT_ROOT / PROFILE_DIRS[profile] / f"{stage}.yaml")
        kept = {k: v for k, v in _leaves(original).items() if not _overridden(k, CPU_OVERRIDES[stage])}
        assert kept, f"{profile}/{stage}.yaml: every key is overridden"
        changed = {k: (v, _lookup(used, k)) for k, v in kept.items() if _lookup(used, k) != v}
        assert not changed, f"{profile}/{stage}.yaml: keys changed on the way to the stage: {changed}"
        for key, value in CPU_OVERRIDES[stage].items():
            assert _lookup(used, key) == value, f"{profile}/{stage}: override {key} not applied"

    # both profiles' reward_model.yaml train DPO too (dpo: true): its own stage folder
    dpo = json.loads((run_dir / "dpo" / "manifest.json").read_text())
    assert dpo["status"] == "complete" and (run_dir / "dpo" / "adapter").is_dir()
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    dev = metrics["dev"]
    for key in ("base/greedy", "sft/greedy", "grpo/greedy", "dpo/greedy", "sft/vote@2", "sft/rm@2",
                "grpo/oracle@2"):
        assert key in dev, f"{profile}: 06_eval has no {key}: {sorted(dev)}"
    assert dev["sft/oracle@2"]["ex"] >= dev["sft/greedy"]["ex"]  # the pool holds the greedy answer
