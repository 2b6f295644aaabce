"""Write, as JSON, the keyword arguments the project's GPU-only builders produce.

Run by check_gpu_signatures.py with the project's environment (`.venv/bin/python
.ci/builder_kwargs.py OUT.json`): it imports nl2sql_lib and TRL, never vLLM, Unsloth or
bitsandbytes. The builders are called on the GPU profiles' own parameter files (params/ for an
A100/H100, params/t4/) and on variants that reach their other branches (4-bit and 8-bit
quantization, an explicit dtype, a LoRA adapter, vLLM's server mode), each on an assumed A100 and
T4, so that whatever keys a builder produces today are the ones checked - no list is kept here.

Also written: what the installed libraries accept for the targets that import on a CPU
(transformers.BitsAndBytesConfig, trl.GRPOConfig), their versions, and TRL's source folder (the
checker reads the vllm.LLM call TRL makes in colocate mode).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nl2sql_lib import generate, models
from nl2sql_lib.config import STAGES, LoraParams, ModelParams, load_params
from nl2sql_lib.hardware import Hardware
from nl2sql_lib.train import grpo

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {"gpu": ROOT / "params", "t4": ROOT / "params" / "t4"}
MACHINES = {
    "A100": Hardware(cuda=True, device_count=1, name="NVIDIA A100 (assumed)", capability=(8, 0), total_memory_gib=80.0),
    "T4": Hardware(cuda=True, device_count=1, name="Tesla T4 (assumed)", capability=(7, 5), total_memory_gib=15.0),
}
# Variants of a file's model section that reach the builders' other branches.
MODEL_VARIANTS: dict[str, dict[str, Any]] = {
    "as in the file": {},
    "quantization 4bit": {"quantization": "4bit"},
    "quantization 8bit": {"quantization": "8bit"},
    "dtype bfloat16": {"dtype": "bfloat16"},
}

calls: list[dict[str, Any]] = []


def record(target: str, source: str, kwargs: dict[str, Any] | None) -> None:
    if kwargs is not None:  # bnb_config_kwargs: None when nothing is quantized
        calls.append({"target": target, "source": source, "kwargs": json.loads(json.dumps(kwargs, default=repr))})


def sections(params: BaseModel, cls: type) -> dict[str, Any]:
    """The fields of ``params`` that are ``cls`` instances (model, policy, dpo_policy, lora...)."""
    return {name: value for name in type(params).model_fields
            if isinstance(value := getattr(params, name), cls)}


def main(out: Path) -> None:
    for profile, folder in PROFILES.items():
        for stage in STAGES:
            path = folder / f"{stage}.yaml"
            if not path.is_file():
                continue
            cfg = load_params(stage, path)
            rel = path.relative_to(ROOT)
            for field, model_params in sections(cfg, ModelParams).items():
                for variant, update in MODEL_VARIANTS.items():
                    mp = model_params.model_copy(update=update)
                    for machine, hw in MACHINES.items():
                        source = f"{rel} {field} ({variant}, {machine})"
                        record("transformers.BitsAndBytesConfig", f"models.bnb_config_kwargs: {source}",
                               models.bnb_config_kwargs(mp, hw))
                        record("unsloth.FastLanguageModel.from_pretrained",
                               f"models.unsloth_from_pretrained_kwargs: {source}",
                               models.unsloth_from_pretrained_kwargs(mp, "/models/m", hardware=hw))
                        for rank in (None, 16):
                            record("vllm.LLM", f"generate.vllm_llm_kwargs: {source}, adapter rank {rank}",
                                   generate.vllm_llm_kwargs(mp, "/models/m", adapter_rank=rank, seed=0,
                                                            max_model_len=mp.max_seq_length, hardware=hw))
            for field, lora in sections(cfg, LoraParams).items():
                for checkpointing in (True, False):
                    record("unsloth.FastLanguageModel.get_peft_model",
                           f"models.unsloth_peft_kwargs: {rel} {field} (gradient checkpointing {checkpointing})",
                           models.unsloth_peft_kwargs(lora, seed=0, gradient_checkpointing=checkpointing))
            if stage == "grpo":
                variants = {"as in the file": cfg, "vllm_mode server": cfg.model_copy(update={"vllm_mode": "server"}),
                            "quantization 4bit": cfg.model_copy(
                                update={"model": cfg.model.model_copy(update={"quantization": "4bit"})})}
                for variant, grpo_cfg in variants.items():
                    for machine, hw in MACHINES.items():
                        with tempfile.TemporaryDirectory() as tmp:
                            record("trl.GRPOConfig", f"train.grpo.grpo_config_kwargs: {rel} ({variant}, {machine})",
                                   grpo.grpo_config_kwargs(grpo_cfg, tmp, hardware=hw, reward_weights=[1.0, 0.1],
                                                           longest_prompt_tokens=300))
    # vllm_sampling_kwargs takes no parameter file: greedy and sampled, with and without stops.
    for temperature in (0.0, 0.8):
        for stops in (generate.DEFAULT_STOP, None):
            record("vllm.SamplingParams", f"generate.vllm_sampling_kwargs: temperature {temperature}, stops {stops}",
                   generate.vllm_sampling_kwargs(n=4, temperature=temperature, max_new_tokens=128, top_p=0.95,
                                                 stop_strings=stops, seed=0))

    from transformers import BitsAndBytesConfig
    from trl import GRPOConfig

    accepted = {
        # BitsAndBytesConfig also takes **kwargs, which it only warns about: named parameters count.
        "transformers.BitsAndBytesConfig": {
            "accepts": sorted(name for name, p in inspect.signature(BitsAndBytesConfig.__init__).parameters.items()
                              if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)),
            "from": f"transformers {importlib.metadata.version('transformers')} (installed)",
        },
        "trl.GRPOConfig": {
            "accepts": sorted(f.name for f in dataclasses.fields(GRPOConfig) if f.init),
            "from": f"trl {importlib.metadata.version('trl')} (installed)",
        },
    }
    trl_dir = Path(importlib.util.find_spec("trl").origin).parent
    out.write_text(json.dumps({
        "python": sys.version.split()[0],
        "versions": {name: importlib.metadata.version(name) for name in ("torch", "transformers", "trl", "peft")},
        "trl_dir": str(trl_dir),
        "calls": calls,
        "accepted": accepted,
    }, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
