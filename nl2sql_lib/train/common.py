"""Pieces every trainer wrapper shares: TRL config arguments, resume, tracking, curves, memory.

Pure functions where possible, so the tests check what TRL receives without training.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Iterable

from .. import hardware as hw_rules
from ..config import ModelParams, TrainingParams
from ..hardware import Hardware
from ..io import read_json, write_json

log = logging.getLogger(__name__)

PARAMS_FINGERPRINT = "nl2sql_params.json"  # in checkpoints/: what the checkpoints were trained with


class TrainingSetupError(ValueError):
    """The parameters cannot run here; the message names the parameter and what to change."""


def precision_kwargs(model_params: ModelParams, *, cuda: bool | None = None, cpu_bf16: bool = False,
                     hardware: Hardware | None = None) -> dict[str, Any]:
    """``use_cpu`` / ``bf16`` / ``fp16`` for a TRL config (rules: :func:`hardware.trainer_precision`).

    GPU: bf16 from compute capability 8.0 on, fp16 below (a T4; ``model.dtype: bfloat16`` is
    downgraded there with a logged warning). CPU: ``use_cpu=True`` (TRL defaults to bf16 and fails
    on a CPU otherwise) and bf16 autocast over fp32 weights where the CPU computes bf16 natively
    (CPU-NOTES gotcha 3). ``model.dtype: float32`` turns mixed precision off.

    ``hardware``: the machine (``detect_hardware()``); without it, ``cuda``/``cpu_bf16`` describe
    an assumed one (``cuda=True``: an Ampere-class GPU), as older callers passed them.
    """
    decision = hw_rules.trainer_precision(model_params.dtype, _machine(hardware, cuda, cpu_bf16))
    hw_rules.log_decisions(decision, log)
    return dict(decision.choice)


def _machine(hardware: Hardware | None, cuda: bool | None, cpu_bf16: bool) -> Hardware:
    if hardware is not None:
        return hardware
    if cuda is None:
        return hw_rules.detect_hardware()
    return hw_rules.assumed_hardware(cuda, cpu_bf16)


def gradient_checkpointing_kwargs(t: TrainingParams, hardware: Hardware, *, stage: str = "training") -> dict[str, Any]:
    """``gradient_checkpointing`` for a TRL config: the parameter, or for ``auto`` on with CUDA
    and off on a CPU (TRL's own default is on everywhere; CPU-NOTES gotcha 3).

    The one place the TRL configs (SFT, GRPO, reward model, DPO) get their checkpointing keys.
    No ``gradient_checkpointing_kwargs`` on purpose: transformers 5.17 already checkpoints
    non-reentrantly when none are given (``modeling_utils.gradient_checkpointing_enable``:
    ``{"use_reentrant": False}``, also right for LoRA; see
    :data:`nl2sql_lib.hardware.GRADIENT_CHECKPOINTING_KWARGS`), and TRL forces reentrant itself
    for PEFT + DeepSpeed ZeRO-3, warning when we had asked otherwise.
    """
    decision = hw_rules.choose_gradient_checkpointing(t.gradient_checkpointing, hardware, stage=stage)
    hw_rules.log_decisions(decision, log)
    return {"gradient_checkpointing": decision.choice}


def training_kwargs(t: TrainingParams, output_dir: str | Path, *, seed: int,
                    hardware: Hardware | None = None, stage: str = "training") -> dict[str, Any]:
    """The training-loop arguments shared by TRL's configs (transformers 5 names).

    ``hardware`` decides ``gradient_checkpointing: auto`` (detected when not given).
    """
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "max_steps": t.max_steps,
        "num_train_epochs": t.num_train_epochs,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler_type,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is a ratio.
        "warmup_steps": t.warmup_ratio if t.warmup_ratio < 1 else int(t.warmup_ratio),
        "weight_decay": t.weight_decay,
        **gradient_checkpointing_kwargs(t, hardware or hw_rules.detect_hardware(), stage=stage),
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "report_to": checked_report_to(t.report_to),
    }


def checked_report_to(report_to: Iterable[str]) -> list[str] | str:
    """``report_to`` from the parameters; an integration that is not installed stops here."""
    wanted = [r for r in report_to if r and r != "none"]
    for name in wanted:
        package = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}.get(name, name)
        if importlib.util.find_spec(package) is None:
            extra = " (pip install 'nl2sql_lib[wandb]' and set WANDB_API_KEY)" if name == "wandb" else f" (pip install {package})"
            raise TrainingSetupError(
                f"training.report_to asks for {name!r} but {package} is not installed{extra}; "
                f"or remove it from training.report_to"
            )
    return wanted or "none"


def checked_extra(extra: dict[str, Any], config_class: type) -> dict[str, Any]:
    """``training.extra`` after checking its keys against the TRL config dataclass."""
    if not extra:
        return {}
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise TrainingSetupError(
            f"training.extra: {', '.join(unknown)} not field(s) of {config_class.__name__} "
            "(TRL 1.16); see https://huggingface.co/docs/trl for the valid names"
        )
    return dict(extra)


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------


def resume_checkpoint(checkpoints: Path, fingerprint: dict[str, Any], *, resume: bool) -> str | None:
    """The last checkpoint to resume from, or None.

    Checkpoints made with other parameters (``fingerprint`` differs) are removed rather than
    resumed: continuing them would silently mix two configurations.
    """
    from transformers.trainer_utils import get_last_checkpoint

    marker = checkpoints / PARAMS_FINGERPRINT
    if checkpoints.is_dir():
        previous = read_json(marker) if marker.is_file() else None
        if not resume or previous != fingerprint:
            if any(checkpoints.glob("checkpoint-*")):
                why = "resume: false" if not resume else "the parameters changed"
                log.warning("removing old checkpoints in %s (%s)", checkpoints, why)
            shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(marker, fingerprint)
    return get_last_checkpoint(str(checkpoints)) if resume else None


# --------------------------------------------------------------------------------------------
# Curves, step times, memory
# --------------------------------------------------------------------------------------------


def loss_curve(log_history: list[dict[str, Any]], keys=("loss", "learning_rate", "grad_norm")) -> list[dict]:
    """The per-logging-step rows of TRL's log history (the final summary row left out)."""
    rows = []
    for entry in log_history:
        if "loss" not in entry or "train_runtime" in entry:
            continue
        rows.append({"step": entry.get("step"), **{k: entry[k] for k in keys if k in entry}})
    return rows


class StepTimer:
    """A TrainerCallback measuring the wall time of every optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.durations: list[float] = []
                self._start = None

            def on_step_begin(self, args, state, control, **kwargs):
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if self._start is not None:
                    self.durations.append(time.perf_counter() - self._start)

            def summary(self) -> dict[str, float | int]:
                if not self.durations:
                    return {"steps_timed": 0}
                return {
                    "steps_timed": len(self.durations),
                    "step_seconds_median": round(statistics.median(self.durations), 3),
                    "step_seconds_max": round(max(self.durations), 3),
                }

        return _Timer()


def memory_metrics() -> dict[str, float | None]:
    from ..runs import cuda_peak_mb, peak_rss_mb

    return {"peak_rss_mb": peak_rss_mb(), "cuda_max_allocated_mb": cuda_peak_mb()}


def tensorboard_dir(stage_dir: Path) -> Path:
    """Point TensorBoard at ``<stage>/logs`` (transformers 5 reads TENSORBOARD_LOGGING_DIR)."""
    folder = stage_dir / "logs"
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
    return folder


def push_to_hub(model, tokenizer, repo_id: str | None) -> str:
    """Upload with the token from the environment (HF_TOKEN), never from a parameter file."""
    if not repo_id:
        raise TrainingSetupError("push_to_hub: true needs hub_model_id: <user>/<name>")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise TrainingSetupError("push_to_hub: true needs the HF_TOKEN environment variable (a write token)")
    model.push_to_hub(repo_id, token=token)
    tokenizer.push_to_hub(repo_id, token=token)
    return f"https://huggingface.co/{repo_id}"
