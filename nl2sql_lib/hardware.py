"""What this machine's accelerator can do, read once, as data.

    hw = detect_hardware()          # Hardware(cuda=True, capability=(7, 5), total_memory_gib=14.7, ...)
    hw.bf16                         # False on a T4: compute capability below 8.0

Every hardware-dependent choice (dtype, attention kernel, device placement, vLLM context, the
memory plan) takes a :class:`Hardware` instead of asking ``torch.cuda`` itself, so the tests can
hand it a T4, an A100 or an 8-GPU node on a CPU machine. :func:`detect_hardware` is the only
place that reads ``torch.cuda``; tests fake that module's functions to check it.

The decisions are pure functions of (parameters, Hardware) returning a :class:`Decision`
(what, choice, reason); models.py, generate.py and train/ apply them, and :func:`log_decisions`
logs each once and keeps it for the stage's manifest (``hardware.decisions``):

    choose_dtype            bf16 from compute capability 8.0, fp16 below (also when bf16 is asked:
                            downgraded with a warning); CPU: fp32 training, bf16 where native
    trainer_precision       bf16/fp16/use_cpu of TRL's configs, by the same rule
    bnb_compute_dtype       QLoRA's compute dtype, by the same rule
    choose_attention        flash-attention 2 only where installed, cc >= 8.0 and fp16/bf16 weights,
                            else SDPA
    device_map              cuda:{LOCAL_RANK} for quantized and inference models
    choose_gradient_checkpointing   auto: on with CUDA, off on a CPU
    vllm_max_model_len      longest prompt + new tokens (+ headroom), capped at the model's limit
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Ampere (8.0) is the first generation with bf16 tensor cores and the first flash-attention 2
# supports; a T4 is 7.5, a V100 7.0.
AMPERE = (8, 0)


@dataclass(frozen=True)
class Hardware:
    """The accelerator as the current process sees it.

    ``local_rank`` / ``world_size`` come from the launcher's environment (``accelerate launch``
    and torchrun set ``LOCAL_RANK`` and ``WORLD_SIZE``); ``name``, ``capability`` and
    ``total_memory_gib`` describe the GPU this process uses (its local rank's), or are None on a
    machine without CUDA.
    """

    cuda: bool
    device_count: int = 0
    local_rank: int = 0
    world_size: int = 1
    name: str | None = None
    capability: tuple[int, int] | None = None
    total_memory_gib: float | None = None
    cpu_bf16: bool = False

    @property
    def bf16(self) -> bool:
        """True where bf16 computes natively: a CUDA GPU of compute capability 8.0 or newer."""
        return self.cuda and self.capability is not None and tuple(self.capability) >= AMPERE

    @property
    def device(self) -> str:
        """The torch device of this process: its local rank's GPU, or the CPU."""
        return f"cuda:{self.local_rank}" if self.cuda else "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """One line for logs and reports."""
        if not self.cuda:
            return f"CPU only (native bf16: {'yes' if self.cpu_bf16 else 'no'})"
        cc = ".".join(str(v) for v in self.capability) if self.capability else "?"
        memory = f"{self.total_memory_gib:.1f} GiB" if self.total_memory_gib is not None else "? GiB"
        ranks = f", rank {self.local_rank} of {self.world_size}" if self.distributed else ""
        return f"{self.device_count} x {self.name} (compute capability {cc}, {memory}){ranks}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bf16": self.bf16, "device": self.device}


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX): then bf16 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def detect_hardware() -> Hardware:
    """Read the accelerator once: CUDA or not, how many GPUs, and the local rank's GPU."""
    import torch

    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    if not torch.cuda.is_available():
        return Hardware(cuda=False, local_rank=local_rank, world_size=world_size, cpu_bf16=cpu_has_bf16())
    count = torch.cuda.device_count()
    # Under CUDA_VISIBLE_DEVICES each process may see one GPU only: then it is device 0.
    index = local_rank if local_rank < count else 0
    props = torch.cuda.get_device_properties(index)
    return Hardware(
        cuda=True,
        device_count=count,
        local_rank=index,
        world_size=world_size,
        name=props.name,
        capability=(int(props.major), int(props.minor)),
        total_memory_gib=round(props.total_memory / 2**30, 2),
        cpu_bf16=cpu_has_bf16(),
    )


def assumed_hardware(cuda: bool, cpu_bf16: bool = False) -> Hardware:
    """What the older ``cuda=True/False`` flags of the config builders meant: an Ampere-class GPU
    (bf16) or this CPU. Callers that know the machine pass ``detect_hardware()`` instead."""
    if cuda:
        return Hardware(cuda=True, device_count=1, name="CUDA GPU (assumed Ampere)", capability=AMPERE,
                        cpu_bf16=cpu_bf16)
    return Hardware(cuda=False, cpu_bf16=cpu_bf16)


# --------------------------------------------------------------------------------------------
# Decisions: pure functions of (parameters, Hardware), each with the reason it was taken
# --------------------------------------------------------------------------------------------


# The weight dtypes flash-attention 2 has kernels for (torch dtype names).
FLASH_DTYPES = ("float16", "bfloat16")


class GPUOnlyError(RuntimeError):
    """A GPU-only option was asked for where it cannot run; the message says what to change."""


@dataclass(frozen=True)
class Decision:
    """One hardware-dependent choice: ``what`` was decided, the ``choice``, and why.

    ``downgraded`` marks a choice that overrides what the parameters asked for (bf16 asked on a
    T4 becomes fp16): it is logged as a warning, not as information.
    """

    what: str
    choice: Any
    reason: str
    downgraded: bool = False

    def __str__(self) -> str:
        return f"{self.what} {self.choice}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "choice": self.choice, "reason": self.reason, "downgraded": self.downgraded}


def _gpu(hw: Hardware) -> str:
    """'Tesla T4 has compute capability 7.5' (for reasons)."""
    cc = ".".join(str(v) for v in hw.capability) if hw.capability else "unknown"
    return f"{hw.name or 'the GPU'} has compute capability {cc}"


def choose_dtype(requested: str, hw: Hardware, *, for_training: bool = False,
                 trains_all_weights: bool = False) -> Decision:
    """The weights' dtype (a torch dtype name) for ``model.dtype: requested`` on ``hw``.

    - CPU training: fp32 weights always; bf16 there means autocast, decided by
      :func:`trainer_precision` (pure-bf16 weights would lose the small updates).
    - CPU inference: the parameter, or for ``auto`` bf16 where the CPU computes it natively.
    - GPU: ``auto``/``bfloat16`` is bf16 from compute capability 8.0 (Ampere) on, fp16 below
      (a T4 has no bf16; vLLM refuses it there). A weight that trains under fp16 mixed
      precision must be fp32 (the gradient scaler refuses fp16 gradients), so full-weight
      training on such a card keeps fp32 weights; LoRA adapters are upcast by PEFT itself.
    """
    asked = f"model.dtype: {requested}"
    if not hw.cuda:
        if for_training:
            return Decision("dtype", "float32", "CPU training keeps fp32 weights (bf16 only as autocast)")
        if requested != "auto":
            return Decision("dtype", requested, f"{asked} on the CPU")
        if hw.cpu_bf16:
            return Decision("dtype", "bfloat16", "the CPU computes bf16 natively (AVX512-BF16/AMX)")
        return Decision("dtype", "float32", "the CPU has no native bf16")
    if requested == "float32":
        return Decision("dtype", "float32", asked)
    if requested in ("auto", "bfloat16") and hw.bf16:
        return Decision("dtype", "bfloat16", f"{_gpu(hw)} >= 8.0: native bf16 ({asked})")
    if requested == "float16":
        reason = asked
        downgraded = False
    else:
        reason = f"{_gpu(hw)} < 8.0, no bf16"
        downgraded = requested == "bfloat16"
        if downgraded:
            reason += " (model.dtype: bfloat16 downgraded; set model.dtype: float16 or auto to silence this)"
    if for_training and trains_all_weights:
        return Decision("dtype", "float32", f"{reason}; all weights train under fp16 mixed precision, "
                        "which needs fp32 master weights", downgraded)
    return Decision("dtype", "float16", reason, downgraded)


def trainer_precision(requested: str, hw: Hardware) -> Decision:
    """``bf16`` / ``fp16`` (and ``use_cpu``) of a TRL/transformers training config.

    TRL defaults to bf16 and fails on a CPU unless ``use_cpu=True``; there bf16 runs as autocast
    over fp32 weights, worth it only where the CPU has native bf16 (or ``model.dtype: bfloat16``
    asks for it). On a GPU: bf16 from compute capability 8.0, fp16 below; ``model.dtype:
    float32`` turns mixed precision off everywhere.
    """
    if not hw.cuda:
        bf16 = requested == "bfloat16" or (requested == "auto" and hw.cpu_bf16)
        why = ("model.dtype: bfloat16" if requested == "bfloat16" else
               "the CPU computes bf16 natively" if bf16 else
               "model.dtype: float32" if requested == "float32" else "the CPU has no native bf16")
        return Decision("mixed_precision", {"use_cpu": True, "bf16": bf16, "fp16": False},
                        f"CPU training, bf16 autocast {'on' if bf16 else 'off'}: {why}")
    if requested == "float32":
        return Decision("mixed_precision", {"bf16": False, "fp16": False}, "model.dtype: float32: no mixed precision")
    weights = choose_dtype(requested, hw)
    bf16 = weights.choice == "bfloat16"
    return Decision("mixed_precision", {"bf16": bf16, "fp16": not bf16},
                    f"{'bf16' if bf16 else 'fp16'}: {weights.reason}", weights.downgraded)


def bnb_compute_dtype(hw: Hardware) -> Decision:
    """bitsandbytes' ``bnb_4bit_compute_dtype``: bf16 where the GPU has it, fp16 below 8.0."""
    if hw.bf16:
        return Decision("bnb_4bit_compute_dtype", "bfloat16", f"{_gpu(hw)} >= 8.0: native bf16")
    return Decision("bnb_4bit_compute_dtype", "float16", f"{_gpu(hw)} < 8.0, no bf16")


def choose_attention(requested: str, hw: Hardware, *, flash_installed: bool, dtype: str) -> Decision:
    """The ``attn_implementation``: flash-attention 2 only where it is installed, the GPU is
    Ampere or newer (compute capability >= 8.0, which it requires) and the weights are fp16 or
    bf16 (``dtype``: the torch dtype name :func:`choose_dtype` picked; flash-attn has no fp32
    kernels); SDPA otherwise.

    An explicit ``flash_attention_2`` that cannot run stops with :class:`GPUOnlyError` saying
    what to set instead.
    """
    what = "attn_implementation"
    if requested == "flash_attention_2":
        if not (hw.cuda and flash_installed):
            raise GPUOnlyError(
                "model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package "
                "(pip install flash-attn --no-build-isolation); set model.attn_implementation: sdpa "
                "(or auto) here"
            )
        if not hw.bf16:
            raise GPUOnlyError(
                f"model.attn_implementation: flash_attention_2 needs compute capability >= 8.0 (Ampere) "
                f"and {_gpu(hw)}; set model.attn_implementation: sdpa (or auto) on this GPU"
            )
        if dtype not in FLASH_DTYPES:
            raise GPUOnlyError(
                f"model.attn_implementation: flash_attention_2 runs in fp16/bf16 only, and the weights load "
                f"as {dtype} here; set model.dtype: auto or bfloat16 (not float32), or "
                "model.attn_implementation: sdpa (or auto)"
            )
        return Decision(what, "flash_attention_2", "model.attn_implementation: flash_attention_2")
    if requested != "auto":
        return Decision(what, requested, f"model.attn_implementation: {requested}")
    if not hw.cuda:
        return Decision(what, "sdpa", "no CUDA GPU: flash-attention 2 is GPU-only")
    if not flash_installed:
        return Decision(what, "sdpa", "flash-attn is not installed")
    if not hw.bf16:
        return Decision(what, "sdpa", f"{_gpu(hw)} < 8.0: flash-attention 2 needs Ampere or newer")
    if dtype not in FLASH_DTYPES:
        return Decision(what, "sdpa", f"the weights are {dtype} (model.dtype): flash-attention 2 runs in "
                        "fp16/bf16 only")
    return Decision(what, "flash_attention_2", f"flash-attn is installed, {_gpu(hw)} >= 8.0 and the "
                    f"weights are {dtype}")


def device_map(hw: Hardware, *, quantized: bool, for_training: bool) -> Decision:
    """``device_map`` for ``from_pretrained``: the local rank's GPU, or None.

    bitsandbytes weights are placed on the GPU at load time, on this process's own GPU (under
    DDP every rank has its own; ``{"": 0}`` on every rank is refused by accelerate). Inference
    models go to the GPU too; a model that trains without quantization is placed by the
    trainer (accelerate), so it loads on the CPU first.
    """
    what = "device_map"
    if not hw.cuda:
        return Decision(what, None, "no CUDA GPU: the model stays on the CPU")
    target = {"": hw.local_rank}
    rank = f"local rank {hw.local_rank}'s GPU (cuda:{hw.local_rank})"
    if quantized:
        return Decision(what, target, f"quantized weights load onto {rank}")
    if not for_training:
        return Decision(what, target, f"inference on {rank}")
    return Decision(what, None, "training: the trainer moves the model to its GPU")


# How activations are recomputed when gradient checkpointing is on: non-reentrant, which is
# transformers 5.17's own default (``PreTrainedModel.gradient_checkpointing_enable`` uses
# ``{"use_reentrant": False}`` when given None) and right for LoRA (no input-grad hook needed).
# TRL's configs therefore get no ``gradient_checkpointing_kwargs`` (train/common.py), which also
# lets TRL switch to reentrant for PEFT + DeepSpeed ZeRO-3 without warning; the one caller that
# would bypass the default, PEFT's ``prepare_model_for_kbit_training`` (it passes ``{}``, leaving
# the choice to torch), is given these explicitly (models.py).
GRADIENT_CHECKPOINTING_KWARGS = {"use_reentrant": False}


def choose_gradient_checkpointing(setting: bool | str, hw: Hardware, *, stage: str = "training") -> Decision:
    """``training.gradient_checkpointing``: true/false as given; ``auto``: on with CUDA (GRPO's
    16 sequences of ~1,200 tokens need tens of GB of activations otherwise), off on a CPU (where
    it only slows the steps down; docs/cpu-notes.md, gotcha 3)."""
    what = "gradient_checkpointing"
    if setting != "auto":
        return Decision(what, bool(setting), f"training.gradient_checkpointing: {str(bool(setting)).lower()}")
    if hw.cuda:
        return Decision(what, True, f"auto on a GPU: recomputing activations saves {stage} memory")
    return Decision(what, False, "auto on the CPU: memory is not the limit, and recomputing costs time")


def vllm_max_model_len(longest_prompt_tokens: int, max_new_tokens: int, *, headroom_tokens: int = 0,
                       model_max_positions: int | None = None) -> Decision:
    """vLLM's ``max_model_len``: the longest prompt the engine will get + the tokens it may
    generate (+ ``headroom_tokens`` for prompts not seen yet, e.g. revision prompts), capped at
    the model's ``max_position_embeddings``. vLLM refuses a prompt longer than this and stops
    the whole batch, so it is sized from the prompts, not from a fixed parameter."""
    wanted = longest_prompt_tokens + max_new_tokens + headroom_tokens
    parts = f"longest prompt {longest_prompt_tokens} + {max_new_tokens} new tokens"
    if headroom_tokens:
        parts += f" + {headroom_tokens} headroom"
    if model_max_positions is not None and wanted > model_max_positions:
        return Decision("max_model_len", model_max_positions,
                        f"{parts} = {wanted}, capped at the model's max_position_embeddings {model_max_positions}")
    return Decision("max_model_len", wanted, parts)


# --------------------------------------------------------------------------------------------
# Logging and recording: once per process, and into the stage's manifest
# --------------------------------------------------------------------------------------------

_recorded: list[Decision] = []


def log_decisions(decisions: Decision | list[Decision], logger: logging.Logger | None = None) -> None:
    """Log each decision the first time it is taken (a stage that loads four models logs the
    dtype once) and keep it for the stage's manifest (:func:`recorded_decisions`)."""
    logger = logger or log
    for decision in [decisions] if isinstance(decisions, Decision) else decisions:
        if decision in _recorded:
            continue
        _recorded.append(decision)
        (logger.warning if decision.downgraded else logger.info)("hardware: %s", decision)


def recorded_decisions() -> list[dict[str, Any]]:
    """The decisions logged since :func:`reset_decisions` (a stage's start), as dicts."""
    return [d.as_dict() for d in _recorded]


def reset_decisions() -> None:
    _recorded.clear()
