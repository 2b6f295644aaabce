"""Hardware-aware defaults: what a T4, an A100 and a multi-GPU node get, checked on a CPU.

The GPU is faked where it is read (``torch.cuda.is_available`` / ``device_count`` /
``get_device_properties`` and the launcher's LOCAL_RANK / WORLD_SIZE); every decision is a pure
function of (parameters, Hardware). The trainer configs are built with the REAL TRL dataclasses
of the installed versions from the GPU profile's parameter files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nl2sql_lib import hardware
from nl2sql_lib.config import ModelParams, TrainingParams, load_params
from nl2sql_lib.hardware import Decision, GPUOnlyError, Hardware, detect_hardware

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30

CPU = Hardware(cuda=False)
T4 = Hardware(cuda=True, device_count=1, name="Tesla T4", capability=(7, 5), total_memory_gib=14.7)
A100 = Hardware(cuda=True, device_count=1, name="NVIDIA A100-SXM4-40GB", capability=(8, 0), total_memory_gib=39.4)
A100_RANK3 = Hardware(cuda=True, device_count=8, local_rank=3, world_size=8, name="NVIDIA A100-SXM4-80GB",
                      capability=(8, 0), total_memory_gib=79.1)


def fake_gpus(monkeypatch, name: str, major: int, minor: int, *, count: int = 1, memory_gib: float = 16.0,
              local_rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Make torch.cuda report ``count`` GPUs of one kind; returns the indices asked about."""
    asked: list[int] = []

    def properties(index):
        asked.append(index)
        return SimpleNamespace(name=name, major=major, minor=minor, total_memory=int(memory_gib * GIB))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    for var, value in (("LOCAL_RANK", local_rank), ("WORLD_SIZE", world_size)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(value))
    return asked


def fake_t4(monkeypatch) -> Hardware:
    fake_gpus(monkeypatch, "Tesla T4", 7, 5, memory_gib=14.7)
    return detect_hardware()


def fake_a100(monkeypatch) -> Hardware:
    fake_gpus(monkeypatch, "NVIDIA A100-SXM4-40GB", 8, 0, memory_gib=39.4)
    return detect_hardware()


@pytest.fixture(autouse=True)
def fresh_decisions():
    hardware.reset_decisions()
    yield
    hardware.reset_decisions()


# ---------------------------------------------------------------------------- detect_hardware


def test_detect_cpu_reads_the_launcher_environment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    hw = detect_hardware()
    assert (hw.cuda, hw.local_rank, hw.world_size, hw.cpu_bf16) == (False, 1, 2, True)
    assert hw.device == "cpu" and not hw.bf16 and hw.distributed


def test_detect_t4(monkeypatch):
    hw = fake_t4(monkeypatch)
    assert (hw.name, hw.capability, hw.device_count) == ("Tesla T4", (7, 5), 1)
    assert hw.total_memory_gib == pytest.approx(14.7, abs=0.01)
    assert hw.bf16 is False and hw.device == "cuda:0" and not hw.distributed
    assert "Tesla T4 (compute capability 7.5" in hw.describe()


def test_detect_a100(monkeypatch):
    hw = fake_a100(monkeypatch)
    assert hw.bf16 is True and hw.capability == (8, 0)


def test_detect_on_a_multi_gpu_node_describes_the_local_ranks_gpu(monkeypatch):
    asked = fake_gpus(monkeypatch, "NVIDIA H100 80GB HBM3", 9, 0, count=8, memory_gib=79.6, local_rank=3, world_size=8)
    hw = detect_hardware()
    assert asked == [3]
    assert (hw.device_count, hw.local_rank, hw.world_size, hw.device) == (8, 3, 8, "cuda:3")
    assert hw.distributed and "rank 3 of 8" in hw.describe()


def test_detect_in_a_tree_worker_that_sees_one_gpu(monkeypatch):
    # tree/shards.py sets CUDA_VISIBLE_DEVICES to one GPU per worker: it is device 0 there
    asked = fake_gpus(monkeypatch, "NVIDIA L4", 8, 9, count=1, local_rank=5)
    hw = detect_hardware()
    assert asked == [0] and hw.device == "cuda:0"


# ---------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("requested, hw, for_training, expected", [
    ("auto", T4, False, "float16"),
    ("bfloat16", T4, False, "float16"),
    ("bfloat16", T4, True, "float16"),
    ("float16", T4, False, "float16"),
    ("float32", T4, False, "float32"),
    ("auto", A100, False, "bfloat16"),
    ("bfloat16", A100, True, "bfloat16"),
    ("float16", A100, False, "float16"),
    ("auto", CPU, True, "float32"),
    ("bfloat16", CPU, True, "float32"),
    ("auto", CPU, False, "float32"),
    ("auto", Hardware(cuda=False, cpu_bf16=True), False, "bfloat16"),
    ("float16", CPU, False, "float16"),
])
def test_dtype_rule(requested, hw, for_training, expected):
    assert hardware.choose_dtype(requested, hw, for_training=for_training).choice == expected


def test_bf16_asked_on_a_t4_is_downgraded_with_its_reason():
    decision = hardware.choose_dtype("bfloat16", T4)
    assert decision.downgraded
    assert "Tesla T4 has compute capability 7.5 < 8.0, no bf16" in decision.reason
    assert "model.dtype: float16" in decision.reason  # what to set to silence it
    assert str(decision).startswith("dtype float16: Tesla T4 has compute capability 7.5 < 8.0")
    assert not hardware.choose_dtype("auto", T4).downgraded  # auto was never a request for bf16


def test_full_weight_training_under_fp16_keeps_fp32_master_weights():
    assert hardware.choose_dtype("auto", T4, for_training=True, trains_all_weights=True).choice == "float32"
    assert hardware.choose_dtype("auto", A100, for_training=True, trains_all_weights=True).choice == "bfloat16"


@pytest.mark.parametrize("requested, hw, expected", [
    ("auto", T4, {"bf16": False, "fp16": True}),
    ("bfloat16", T4, {"bf16": False, "fp16": True}),
    ("auto", A100, {"bf16": True, "fp16": False}),
    ("float16", A100, {"bf16": False, "fp16": True}),
    ("float32", A100, {"bf16": False, "fp16": False}),
    ("auto", CPU, {"use_cpu": True, "bf16": False, "fp16": False}),
    ("auto", Hardware(cuda=False, cpu_bf16=True), {"use_cpu": True, "bf16": True, "fp16": False}),
    ("bfloat16", CPU, {"use_cpu": True, "bf16": True, "fp16": False}),
])
def test_trainer_precision_rule(requested, hw, expected):
    assert hardware.trainer_precision(requested, hw).choice == expected


def test_bnb_compute_dtype():
    assert hardware.bnb_compute_dtype(T4).choice == "float16"
    assert hardware.bnb_compute_dtype(A100).choice == "bfloat16"


def test_attention_rule():
    t4 = hardware.choose_attention("auto", T4, flash_installed=True, dtype="float16")
    assert t4.choice == "sdpa" and "7.5 < 8.0" in t4.reason
    assert hardware.choose_attention("auto", A100, flash_installed=True, dtype="bfloat16").choice == "flash_attention_2"
    assert hardware.choose_attention("auto", A100, flash_installed=True, dtype="float16").choice == "flash_attention_2"
    not_installed = hardware.choose_attention("auto", A100, flash_installed=False, dtype="bfloat16")
    assert not_installed.choice == "sdpa" and "not installed" in not_installed.reason
    assert hardware.choose_attention("auto", CPU, flash_installed=True, dtype="float32").choice == "sdpa"
    assert hardware.choose_attention("eager", T4, flash_installed=True, dtype="float16").choice == "eager"
    explicit = hardware.choose_attention("flash_attention_2", A100, flash_installed=True, dtype="bfloat16")
    assert explicit.choice == "flash_attention_2"


def test_auto_attention_with_fp32_weights_on_an_a100_falls_back_to_sdpa():
    """flash-attn has fp16/bf16 kernels only: model.dtype: float32 on an A100 gets SDPA, with why."""
    fp32 = hardware.choose_attention("auto", A100, flash_installed=True, dtype="float32")
    assert fp32.choice == "sdpa" and "float32" in fp32.reason and "fp16/bf16" in fp32.reason


def test_explicit_flash_attention_on_a_t4_says_what_to_set():
    with pytest.raises(GPUOnlyError, match=r"compute capability >= 8.0.*Tesla T4.*attn_implementation: sdpa"):
        hardware.choose_attention("flash_attention_2", T4, flash_installed=True, dtype="float16")
    with pytest.raises(GPUOnlyError, match="flash-attn package.*attn_implementation: sdpa"):
        hardware.choose_attention("flash_attention_2", A100, flash_installed=False, dtype="bfloat16")


def test_explicit_flash_attention_with_fp32_weights_names_model_dtype():
    with pytest.raises(GPUOnlyError, match=r"fp16/bf16 only.*float32.*model\.dtype: auto.*attn_implementation: sdpa"):
        hardware.choose_attention("flash_attention_2", A100, flash_installed=True, dtype="float32")


def test_device_map_rule():
    assert hardware.device_map(A100_RANK3, quantized=True, for_training=True).choice == {"": 3}
    assert hardware.device_map(A100_RANK3, quantized=False, for_training=False).choice == {"": 3}
    assert hardware.device_map(T4, quantized=False, for_training=False).choice == {"": 0}
    assert hardware.device_map(A100_RANK3, quantized=False, for_training=True).choice is None
    assert hardware.device_map(CPU, quantized=False, for_training=False).choice is None


def test_gradient_checkpointing_rule():
    assert hardware.choose_gradient_checkpointing("auto", T4).choice is True
    assert hardware.choose_gradient_checkpointing("auto", CPU).choice is False
    assert hardware.choose_gradient_checkpointing(True, CPU).choice is True
    assert hardware.choose_gradient_checkpointing(False, A100).choice is False
    assert TrainingParams().gradient_checkpointing == "auto"  # the safe default


def test_vllm_max_model_len_rule():
    sized = hardware.vllm_max_model_len(1050, 256)
    assert sized.choice == 1306 and "longest prompt 1050" in sized.reason
    assert hardware.vllm_max_model_len(1050, 256, headroom_tokens=572).choice == 1878
    capped = hardware.vllm_max_model_len(30000, 4096, model_max_positions=32768)
    assert capped.choice == 32768 and "max_position_embeddings" in capped.reason


def test_decisions_are_logged_once_and_recorded(caplog):
    caplog.set_level(logging.INFO, logger="nl2sql_lib.hardware")
    decision = hardware.choose_dtype("bfloat16", T4)
    hardware.log_decisions(decision)
    hardware.log_decisions([decision, hardware.choose_dtype("bfloat16", T4)])
    lines = [r for r in caplog.records if "dtype float16" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # a downgrade warns
    hardware.log_decisions(hardware.choose_attention("auto", T4, flash_installed=False, dtype="float16"))
    recorded = hardware.recorded_decisions()
    assert [d["what"] for d in recorded] == ["dtype", "attn_implementation"]
    assert recorded[0]["choice"] == "float16" and recorded[0]["downgraded"] is True
    hardware.reset_decisions()
    assert hardware.recorded_decisions() == []


# ---------------------------------------------------------------------------- through models.py


def test_models_pick_fp16_and_sdpa_on_a_faked_t4(monkeypatch):
    from nl2sql_lib import models

    fake_t4(monkeypatch)
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else None)
    asked_bf16 = ModelParams(dtype="bfloat16")  # as a parameter file may ask (params/tree.yaml did)
    assert models.choose_dtype(asked_bf16) == torch.float16
    assert models.choose_attention(asked_bf16) == "sdpa"
    tree = load_params("tree", PROJECT_ROOT / "params" / "tree.yaml")
    assert models.choose_dtype(tree.policy) == torch.float16
    with pytest.raises(GPUOnlyError, match="attn_implementation: sdpa"):
        models.choose_attention(ModelParams(attn_implementation="flash_attention_2"))
    assert models.bnb_config_kwargs(ModelParams(quantization="4bit"))["bnb_4bit_compute_dtype"] == "float16"


def test_models_pick_bf16_and_flash_attention_on_a_faked_a100(monkeypatch):
    from nl2sql_lib import models

    fake_a100(monkeypatch)
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn" else None)
    assert models.choose_dtype(ModelParams()) == torch.bfloat16
    assert models.choose_attention(ModelParams()) == "flash_attention_2"
    # fp32 weights: flash-attn cannot run them; from_pretrained gets SDPA, an explicit ask stops
    fp32 = ModelParams(spec="x/y", dtype="float32")
    assert models.choose_attention(fp32) == "sdpa"
    kwargs = models.from_pretrained_kwargs(fp32, hardware=detect_hardware())
    assert kwargs["dtype"] == torch.float32 and kwargs["attn_implementation"] == "sdpa"
    assert models.from_pretrained_kwargs(ModelParams(spec="x/y"), hardware=detect_hardware())[
        "attn_implementation"] == "flash_attention_2"
    with pytest.raises(GPUOnlyError, match="model.dtype"):
        models.from_pretrained_kwargs(fp32.model_copy(update={"attn_implementation": "flash_attention_2"}),
                                      hardware=detect_hardware())


def test_vllm_engine_arguments_on_a_t4_and_an_a100():
    from nl2sql_lib.generate import vllm_llm_kwargs

    tree = load_params("tree", PROJECT_ROOT / "params" / "tree.yaml")
    assert vllm_llm_kwargs(tree.policy, "/m", hardware=T4, max_model_len=1878)["dtype"] == "float16"
    a100 = vllm_llm_kwargs(tree.policy, "/m", hardware=A100, max_model_len=1878)
    assert a100["dtype"] == "bfloat16" and a100["max_model_len"] == 1878


# ---------------------------------------------------------------------------- real TRL configs


@pytest.fixture
def bf16_device_check_passes(monkeypatch):
    """transformers' TrainingArguments.__post_init__ refuses bf16 without a bf16 GPU unless
    use_cpu is set; this CPU machine has none, so for the A100 configs only that one device
    check is patched (the function it calls). Everything else is the real dataclass."""
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda *a, **k: True)


def _grpo(hw: Hardware, tmp_path, **update):
    from trl import GRPOConfig

    from nl2sql_lib.train.grpo import grpo_config_kwargs

    cfg = load_params("grpo", PROJECT_ROOT / "params" / "grpo.yaml")
    if update:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=update)})
    kwargs = grpo_config_kwargs(cfg, tmp_path, hardware=hw, reward_weights=[1.0, 0.1, 0.3, 0.0, 0.1],
                                longest_prompt_tokens=1050)
    return GRPOConfig(**kwargs)


def test_grpo_config_on_a_t4(tmp_path):
    # fp16 needs no patch: TrainingArguments has no device check for it
    args = _grpo(T4, tmp_path)
    assert args.fp16 is True and args.bf16 is False
    assert args.gradient_checkpointing is True
    assert args.optim == "adamw_torch"
    assert args.use_vllm is True and args.vllm_mode == "colocate"
    assert args.vllm_max_model_length == 1050 + 256  # longest kept prompt + max_completion_length
    qlora = _grpo(T4, tmp_path, quantization="4bit")
    assert qlora.optim == "paged_adamw_8bit"  # the README's QLoRA recipe, now also for GRPO


def test_grpo_config_on_an_a100(tmp_path, bf16_device_check_passes):
    args = _grpo(A100, tmp_path)
    assert args.bf16 is True and args.fp16 is False
    assert args.gradient_checkpointing is True
    assert args.vllm_max_model_length == 1306 and args.vllm_gpu_memory_utilization == 0.35


def test_grpo_gradient_checkpointing_auto_is_on_with_cuda_and_off_on_cpu(tmp_path):
    from nl2sql_lib.train.grpo import grpo_config_kwargs

    cfg = load_params("grpo", PROJECT_ROOT / "params" / "grpo.yaml")
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"gradient_checkpointing": "auto"})})
    assert grpo_config_kwargs(cfg, tmp_path, hardware=T4)["gradient_checkpointing"] is True
    assert grpo_config_kwargs(cfg, tmp_path, hardware=CPU)["gradient_checkpointing"] is False
    # without measured prompts the context is training.max_length (every kept prompt fits it)
    assert grpo_config_kwargs(cfg, tmp_path, hardware=T4)["vllm_max_model_length"] == cfg.training.max_length


def _sft(hw: Hardware, tmp_path):
    from trl import SFTConfig

    from nl2sql_lib.train.sft import sft_config_kwargs

    cfg = load_params("sft", PROJECT_ROOT / "params" / "sft.yaml")
    return SFTConfig(**sft_config_kwargs(cfg, tmp_path, hardware=hw))


def test_sft_config_on_a_t4(tmp_path):
    args = _sft(T4, tmp_path)
    assert (args.fp16, args.bf16) == (True, False)
    # transformers 5.17's default (non-reentrant) applies: no kwargs, as for GRPO and the reward model
    assert args.gradient_checkpointing is True and not args.gradient_checkpointing_kwargs
    assert args.optim == "adamw_torch" and args.use_cpu is False


def test_sft_config_on_an_a100(tmp_path, bf16_device_check_passes):
    args = _sft(A100, tmp_path)
    assert (args.fp16, args.bf16) == (False, True)
    assert args.gradient_checkpointing is True


def _reward_and_dpo(hw: Hardware, tmp_path):
    from trl import DPOConfig, RewardConfig

    from nl2sql_lib.train.reward_model import trl_config

    cfg = load_params("reward_model", PROJECT_ROOT / "params" / "reward_model.yaml")
    # what the file asks (auto since 51b3c66; bfloat16 before): fp16 on a T4, bf16 on an A100 either way
    assert {cfg.model.dtype, cfg.dpo_policy.dtype} <= {"auto", "bfloat16"}
    reward = trl_config(RewardConfig, cfg.training, cfg.model, tmp_path / "rm", cfg.seed, hardware=hw)
    dpo = trl_config(DPOConfig, cfg.dpo_training, cfg.dpo_policy, tmp_path / "dpo", cfg.seed, hardware=hw,
                     beta=cfg.dpo_beta)
    return reward, dpo


def test_reward_and_dpo_configs_on_a_t4_downgrade_bf16(tmp_path):
    reward, dpo = _reward_and_dpo(T4, tmp_path)
    for args in (reward, dpo):
        assert (args.fp16, args.bf16, args.use_cpu) == (True, False, False)
        assert args.gradient_checkpointing is True and args.optim == "adamw_torch"
    assert dpo.beta == 0.1


def test_reward_and_dpo_configs_on_an_a100(tmp_path, bf16_device_check_passes):
    reward, dpo = _reward_and_dpo(A100, tmp_path)
    for args in (reward, dpo):
        assert (args.fp16, args.bf16) == (False, True)


def test_qlora_reward_model_uses_the_paged_optimizer(tmp_path):
    from trl import RewardConfig

    from nl2sql_lib.train.reward_model import trl_config

    cfg = load_params("reward_model", PROJECT_ROOT / "params" / "reward_model.yaml")
    model = cfg.model.model_copy(update={"quantization": "4bit"})
    assert trl_config(RewardConfig, cfg.training, model, tmp_path, 0, hardware=T4).optim == "paged_adamw_8bit"


# ---------------------------------------------------------------------------- 06_eval's vLLM engines


def test_eval_gives_the_default_vllm_factory_every_prompt(monkeypatch, tmp_path):
    from nl2sql_lib.config import EvalParams
    from nl2sql_lib.data.example import Example
    from nl2sql_lib.evaluate import systems

    seen = {}

    def recording_factory(system, cfg, *, prompts=None, max_new_tokens=None):
        seen["prompts"] = prompts
        return "generator"

    monkeypatch.setattr(systems, "default_generator_factory", recording_factory)
    monkeypatch.setattr(systems, "build_messages", lambda examples, schema, **kw: [[{"q": e.question}] for e in examples])
    examples = [Example(question_id=str(i), db_id="d", db_path="x.sqlite", question=f"q{i}", sql="SELECT 1")
                for i in range(3)]
    todo = [(SimpleNamespace(name="dev"), ex) for ex in examples]
    system = systems.System("sft", "stage:sft")
    cfg = EvalParams(use_vllm=True)
    assert systems._open_generator(systems.default_generator_factory, system, cfg, todo, {}) == "generator"
    assert seen["prompts"] == [[{"q": "q0"}], [{"q": "q1"}], [{"q": "q2"}]]
    # a test's own factory keeps its two-argument signature
    assert systems._open_generator(lambda s, c: "own", system, cfg, todo, {}) == "own"
