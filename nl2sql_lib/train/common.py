"""The one trainer harness of SFT, GRPO, the reward model and DPO.

Each stage builds its trainer in three calls, so that a fix of how we train lands once:

    args = trl_config(SFTConfig, cfg.training, cfg.model, checkpoints, cfg.seed, **stage_keys)
    run = train(stage, lambda callbacks: SFTTrainer(..., args=args, callbacks=callbacks),
                fingerprint=checkpoint_fingerprint(cfg), resume=cfg.training.resume)
    save_trained(run.trainer, tokenizer, stage.dir / "adapter", base_spec=...)

- :func:`trl_config` / :func:`trl_config_kwargs`: TRL's config dataclass from the stage's
  parameters (training loop, precision for this machine, optimizer, gradient checkpointing,
  ``report_to`` checked against what is installed, ``training.extra`` checked against the
  dataclass) plus the stage's own keys;
- :func:`train`: TensorBoard under ``<stage>/logs``, resume from the last checkpoint only when
  the parameter fingerprint (:func:`checkpoint_fingerprint`) is unchanged, every optimizer step
  timed; returns a :class:`TrainRun` whose :meth:`TrainRun.metrics` are the keys every stage's
  metrics share (``step_seconds_median`` ...);
- :func:`save_trained`: the trained weights and the tokenizer (and the base model's spec for an
  adapter); GRPO saves its own way, to leave out TRL's "ref" adapter (``grpo._save_policy``).

Pure functions where possible, so the tests check what TRL receives without training.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import hardware as hw_rules
from ..config import ModelParams, StageParams, TrainingParams, params_as_dict
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
    (docs/cpu-notes.md, gotcha 3). ``model.dtype: float32`` turns mixed precision off.

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
    and off on a CPU (TRL's own default is on everywhere; docs/cpu-notes.md, gotcha 3).

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


def trl_config_kwargs(config_cls: type, training: TrainingParams, model_params: ModelParams,
                      output_dir: str | Path, *, seed: int, hardware: Hardware | None = None,
                      stage: str | None = None, **specific: Any) -> dict[str, Any]:
    """The keyword arguments of TRL's ``config_cls`` (SFTConfig, GRPOConfig, RewardConfig,
    DPOConfig) for a stage's parameters on this machine.

    The training loop (:func:`training_kwargs`), precision (:func:`precision_kwargs`: bf16 on an
    Ampere+ GPU, fp16 below, bf16 autocast on a CPU that has it), the optimizer (paged 8-bit AdamW
    with QLoRA), ``dataloader_num_workers: 0``, then the stage's own keys (``specific``), then
    ``training.extra`` (it wins) after its keys are checked against ``config_cls``.
    ``hardware``: the machine (detected when not given); ``stage`` names it in logged decisions
    (default: the config's name without "Config").
    """
    from ..models import optimizer_name

    hw = hardware if hardware is not None else hw_rules.detect_hardware()
    stage = stage or config_cls.__name__.removesuffix("Config")
    kwargs: dict[str, Any] = {
        **training_kwargs(training, output_dir, seed=seed, hardware=hw, stage=stage),
        **precision_kwargs(model_params, hardware=hw),
        "optim": optimizer_name(model_params),
        "dataloader_num_workers": 0,
        **specific,
    }
    kwargs.update(checked_extra(training.extra, config_cls))
    return kwargs


def trl_config(config_cls: type, training: TrainingParams, model_params: ModelParams, output_dir: str | Path,
               seed: int, *, hardware: Hardware | None = None, stage: str | None = None, **specific: Any) -> Any:
    """``config_cls(**trl_config_kwargs(...))``: the TRL config a stage's trainer receives."""
    return config_cls(**trl_config_kwargs(config_cls, training, model_params, output_dir, seed=seed,
                                          hardware=hardware, stage=stage, **specific))


# --------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------

# Keys that say where a run lives or what it shows, not what its checkpoints learned: a change
# of one of them resumes. Top level (absent ones are skipped: each stage has some of them)...
NOT_LEARNED_KEYS = (
    "run", "output_root", "profile", "install_from",
    "sample_dev_questions", "sample_max_new_tokens", "merge_adapter", "push_to_hub", "hub_model_id",  # SFT
    "num_samples_shown",  # GRPO
    "eval_batch_size", "plots",  # reward model
)
# ... and in a training group: a run may be extended (more steps) or logged or saved differently
# and still resume.
NOT_LEARNED_TRAINING_KEYS = (
    "resume", "report_to", "logging_steps", "save_steps", "save_total_limit", "max_steps", "num_train_epochs",
)


def checkpoint_fingerprint(params: StageParams, *, drop: Iterable[str] = ()) -> dict[str, Any]:
    """What a stage's checkpoints depend on: its parameters without :data:`NOT_LEARNED_KEYS`,
    the :data:`NOT_LEARNED_TRAINING_KEYS` of each training group, and ``drop`` (keys of another
    trainer sharing the parameters: the reward model's fingerprint drops the DPO keys)."""
    values = params_as_dict(params)
    for key in (*NOT_LEARNED_KEYS, *drop):
        values.pop(key, None)
    for group in ("training", "dpo_training", "revision_training"):
        if isinstance(values.get(group), dict):
            values[group] = {k: v for k, v in values[group].items() if k not in NOT_LEARNED_TRAINING_KEYS}
    return json.loads(json.dumps(values))  # as it reads back from the marker file


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


@contextmanager
def tensorboard_dir(stage_dir: Path) -> Iterator[Path]:
    """TensorBoard's folder ``<stage>/logs`` while the trainer is built and trains.

    transformers 5 has no ``logging_dir``: its TensorBoard callback reads TENSORBOARD_LOGGING_DIR
    when the trainer is built. The previous value comes back afterwards (DPO trains after the
    reward model in the same process).
    """
    folder = stage_dir / "logs"
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old


# --------------------------------------------------------------------------------------------
# Train and save
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainRun:
    """What :func:`train` did: the trainer, TRL's result, where it resumed from, the step times."""

    trainer: Any
    result: Any  # transformers' TrainOutput
    resumed_from: str | None
    step_times: dict[str, float | int]
    logs_dir: Path

    @property
    def train_loss(self) -> float | None:
        loss = getattr(self.result, "training_loss", None)
        return round(float(loss), 4) if loss is not None else None

    def metrics(self) -> dict[str, Any]:
        """The keys every training stage's metrics.json shares."""
        return {
            "global_step": int(self.trainer.state.global_step),
            "resumed_from": self.resumed_from,
            "train_loss": self.train_loss,
            "train_runtime_s": round(float(self.result.metrics.get("train_runtime", 0.0)), 2),
            **self.step_times,
            "tensorboard_dir": str(self.logs_dir),
        }


def train(stage: Any, make_trainer: Callable[[list], Any], *, fingerprint: dict[str, Any], resume: bool,
          folder: Path | None = None) -> TrainRun:
    """Build the trainer (``make_trainer(callbacks)``) and train it, resuming when allowed.

    ``folder`` (default ``stage.dir``) holds ``checkpoints/`` (the TRL config's ``output_dir``)
    and ``logs/``. The main process keeps or removes the checkpoints (:func:`resume_checkpoint`:
    removed when the fingerprint changed or ``resume`` is false); under ``accelerate launch`` the
    other processes wait for it, then resume from the same checkpoint. Training runs under
    ``stage.timer("train")``.
    """
    folder = folder or stage.dir
    checkpoints = folder / "checkpoints"
    if is_main_process():
        resumed_from = resume_checkpoint(checkpoints, fingerprint, resume=resume)
        wait_for_everyone()
    else:
        wait_for_everyone()
        resumed_from = _last_checkpoint(checkpoints) if resume else None
    timer = StepTimer()
    with tensorboard_dir(folder) as logs_dir:
        trainer = make_trainer([timer])
        with stage.timer("train"):
            result = trainer.train(resume_from_checkpoint=resumed_from)
    return TrainRun(trainer, result, resumed_from, timer.summary(), logs_dir)


def save_trained(trainer: Any, tokenizer: Any, folder: Path, *, base_spec: str | None = None,
                 padding_side: str | None = None) -> bool:
    """The trained weights (an adapter, or full weights) and the tokenizer in ``folder``.

    Called on every process: ``Trainer.save_model`` gathers sharded (FSDP/ZeRO-3) weights and
    writes from the main process only; the rest is written by the main process. An adapter gets
    its base model's spec (``base_spec``) so that it loads alone. ``padding_side``: the
    tokenizer's, as saved (generation wants "left"). Returns True on the main process.
    """
    import copy

    from ..models import save_base_spec

    trainer.save_model(str(folder))
    if not is_main_process():
        return False
    if padding_side is not None:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(str(folder))
    if base_spec and hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config"):
        save_base_spec(folder, base_spec)
    return True


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def wait_for_everyone() -> None:
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        state.wait_for_everyone()


def _last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


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
