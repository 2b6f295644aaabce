"""The GPU memory plan (nl2sql_lib/memory_plan.py) on fake T4 / A100-40GB / A100-80GB cards.

The GPU reference parameter files (params/*.yaml, Qwen2.5-Coder-1.5B-Instruct) are planned on
each card; the expected outcomes are pinned, and every term is checked against a figure
computed here independently (parameter counts by hand, bytes per parameter, the activation
count against what autograd really saves in a small Qwen2 model).
"""

from __future__ import annotations

import json

import pytest

from nl2sql_lib.config import ParamsError, load_params
from nl2sql_lib.hardware import Hardware
from nl2sql_lib.memory_plan import (
    GIB, KNOWN_ARCHITECTURES, Architecture, activation_bytes_per_token_layer, base_spec_of, check_stage,
    find_architecture, lora_parameters, plan_stage,
)

QWEN_15B = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
# What torch.cuda.get_device_properties reports for these cards, in GiB.
T4 = Hardware(cuda=True, device_count=1, name="Tesla T4", capability=(7, 5), total_memory_gib=14.75)
A100_40 = Hardware(cuda=True, device_count=1, name="NVIDIA A100-SXM4-40GB", capability=(8, 0), total_memory_gib=39.39)
A100_80 = Hardware(cuda=True, device_count=1, name="NVIDIA A100-SXM4-80GB", capability=(8, 0), total_memory_gib=79.15)
CARDS = {"T4-16GB": T4, "A100-40GB": A100_40, "A100-80GB": A100_80}
CPU = Hardware(cuda=False)

# Qwen2.5-1.5B's shapes (its config.json): hidden 1536, 28 layers, MLP 8960, 12 query heads and
# 2 key/value heads of 128, vocabulary 151,936, tied embeddings, biases on q/k/v.
H, LAYERS, MLP, KV, VOCAB = 1536, 28, 8960, 256, 151936


def gpu_params(stage: str, **overrides):
    return load_params(stage, f"params/{stage}.yaml", **overrides)


def with_training(cfg, group: str = "training", **changes):
    """A copy of ``cfg`` with keys of one nested group changed (validated again)."""
    return cfg.model_copy(update={group: getattr(cfg, group).model_copy(update=changes)})


def the_plan(stage: str, cfg, hardware: Hardware, phase: str | None = None, **kwargs):
    plans = plan_stage(stage, cfg, hardware, **kwargs)
    return next(p for p in plans if phase is None or p.phase == phase)


# --------------------------------------------------------------------------------------------
# Architecture and parameter counts
# --------------------------------------------------------------------------------------------


def test_parameter_counts_match_the_published_models():
    # Hand count for Qwen2.5-1.5B: embeddings (tied) + 28 x (q, k, v with biases, o, three MLP
    # matrices, two norms) + the final norm; the model card says 1.54B.
    per_layer = (H * H + H) + 2 * (H * KV + KV) + H * H + 3 * H * MLP + 2 * H
    by_hand = VOCAB * H + LAYERS * per_layer + H
    assert by_hand == 1_543_714_304
    assert KNOWN_ARCHITECTURES[QWEN_15B].num_parameters == by_hand
    # The other table entries against their models' published sizes (model cards: 0.49B, 3.09B,
    # 7.61B, 135M).
    published = {"Qwen/Qwen2.5-Coder-0.5B-Instruct": 0.49e9, "Qwen/Qwen2.5-Coder-3B-Instruct": 3.09e9,
                 "Qwen/Qwen2.5-Coder-7B-Instruct": 7.61e9, "HuggingFaceTB/SmolLM2-135M-Instruct": 0.135e9}
    for name, size in published.items():
        assert KNOWN_ARCHITECTURES[name].num_parameters == pytest.approx(size, rel=0.01), name


def test_lora_r16_all_linear_parameter_count_by_hand():
    from nl2sql_lib.config import LoraParams

    r = 16
    per_layer = (r * (H + H) + r * (H + KV) * 2 + r * (H + H)  # q, k, v, o
                 + r * (H + MLP) * 3)  # gate, up, down
    assert per_layer * LAYERS == 18_464_768  # what PEFT prints for Qwen2.5-1.5B, r 16, all-linear
    assert lora_parameters(KNOWN_ARCHITECTURES[QWEN_15B], LoraParams(r=r)) == 18_464_768
    only_qv = LoraParams(r=r, target_modules=["q_proj", "v_proj"])
    assert lora_parameters(KNOWN_ARCHITECTURES[QWEN_15B], only_qv) == LAYERS * r * (2 * H + H + KV)


def test_a_local_config_json_wins_over_the_table(tmp_path):
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch, source = find_architecture(str(tmp_path))
    assert arch == Architecture(64, 2, 128, 4, 2, 1000, False)
    assert str(tmp_path) in source
    assert find_architecture("embedded:smollm2-135m-instruct")[0] is KNOWN_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert find_architecture("someone/unknown-model")[0] is None


def test_stage_specs_resolve_to_their_base(tmp_path):
    cfg = gpu_params("grpo", output_root=str(tmp_path), run="r")
    # No run folder yet: the same profile's sft.yaml names the base.
    assert base_spec_of("stage:sft", cfg)[0] == QWEN_15B
    # An explicit base wins.
    assert base_spec_of("stage:sft", cfg, "Qwen/Qwen2.5-Coder-7B-Instruct")[0] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    # The run's adapter records its base.
    adapter = tmp_path / "r" / "sft" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "nl2sql_base.json").write_text(json.dumps({"spec": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}))
    assert base_spec_of("stage:sft", cfg)[0] == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    # The current directory's params/ comes first (a notebook in a Colab clone has chdir'd there).
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "sft.yaml").write_text("model:\n  spec: Qwen/Qwen2.5-Coder-3B-Instruct\n")
    other_run = gpu_params("grpo", output_root=str(tmp_path), run="other")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert base_spec_of("stage:sft", other_run)[0] == "Qwen/Qwen2.5-Coder-3B-Instruct"
    # A profile without an sft.yaml: unknown.
    assert base_spec_of("stage:sft", cfg.model_copy(update={"profile": "nowhere", "output_root": "/nonexistent"}))[0] is None


# --------------------------------------------------------------------------------------------
# The reference parameter files on 16, 40 and 80 GB
# --------------------------------------------------------------------------------------------

# (stage, phase) -> the cards it fits on, by this estimate.
EXPECTED_FITS = {
    ("sft", "training"): {"T4-16GB", "A100-40GB", "A100-80GB"},
    ("grpo", "policy training + colocated vLLM"): {"A100-40GB", "A100-80GB"},
    ("reward_model", "reward model"): {"T4-16GB", "A100-40GB", "A100-80GB"},
    ("reward_model", "DPO"): {"T4-16GB", "A100-40GB", "A100-80GB"},
    ("tree", "generation"): {"T4-16GB", "A100-40GB", "A100-80GB"},
    ("eval", "generation"): {"T4-16GB", "A100-40GB", "A100-80GB"},
}


@pytest.mark.parametrize("stage,phase", sorted(EXPECTED_FITS))
def test_which_reference_plans_fit_which_card(stage, phase):
    cfg = gpu_params(stage)
    fits = {name for name, card in CARDS.items() if the_plan(stage, cfg, card, phase).fits}
    assert fits == EXPECTED_FITS[(stage, phase)]


# (stage, phase) -> the estimated peak, GiB, by card (fused LM head): params/*.yaml on a T4,
# an A100-40GB and an A100-80GB, and params/t4/*.yaml on a T4 (the README's table).
PINNED_TOTALS = {
    ("sft", "training"): (6.71, 6.71, 6.71, 5.77),
    ("grpo", "policy training + colocated vLLM"): (17.05, 25.67, 39.59, 12.09),
    ("reward_model", "reward model"): (11.62, 11.62, 11.62, 7.05),
    ("reward_model", "DPO"): (8.66, 8.66, 8.66, 5.61),
    ("tree", "generation"): (12.54, 33.48, 67.28, 12.54),
    ("eval", "generation"): (12.54, 33.48, 67.28, 12.54),
}


@pytest.mark.parametrize("stage,phase", sorted(PINNED_TOTALS))
def test_pinned_totals_per_card(stage, phase):
    reference = gpu_params(stage)
    t4_profile = load_params(stage, f"params/t4/{stage}.yaml")
    got = tuple(the_plan(stage, cfg, card, phase, fused_head=True).total_gib
                for cfg, card in ((reference, T4), (reference, A100_40), (reference, A100_80), (t4_profile, T4)))
    assert got == pytest.approx(PINNED_TOTALS[(stage, phase)], rel=0.05)


def test_sft_terms_are_in_sane_bounds():
    plan = the_plan("sft", gpu_params("sft"), A100_80)
    assert plan.model == QWEN_15B and plan.known
    assert plan.gib("weights") == pytest.approx(1_543_714_304 * 2 / GIB, rel=1e-6)  # bf16: ~2.88 GiB
    assert plan.gib("LoRA weights") == pytest.approx(18_464_768 * 4 / GIB, rel=1e-3)  # fp32 adapters
    assert plan.gib("gradients") == pytest.approx(18_464_768 * 4 / GIB, rel=1e-3)
    assert plan.gib("optimizer") == pytest.approx(18_464_768 * 8 / GIB, rel=1e-3)  # two fp32 moments
    # Activations with checkpointing (8 x 1024 tokens): at least every layer's 16-bit input
    # (Korthikanti's 2·s·b·h·L), at most that plus three GPT layers (34·s·b·h each) recomputed.
    tokens = 8 * 1024
    floor = tokens * 2 * H * LAYERS
    assert floor / GIB < plan.gib("activations") < (floor + 3 * 34 * H * tokens) / GIB
    assert 4 < plan.total_gib < 12


def test_grpo_terms_include_vllm_share_and_no_reference():
    cfg = gpu_params("grpo")
    plan = the_plan("grpo", cfg, A100_80)
    assert plan.gib("vLLM (colocated)") == pytest.approx(0.35 * 79.15)
    assert plan.gib("reference model") == 0  # beta 0: no reference pass
    # 16 rows of 2048 tokens, checkpointed: every layer's input (16*2048*2*1536*28 bytes) plus
    # one layer recomputed, at most three GPT layers' worth (34·h bytes per token each).
    tokens = 16 * 2048
    floor = tokens * 2 * H * LAYERS
    assert floor / GIB < plan.gib("activations") < (floor + 3 * 34 * H * tokens) / GIB
    assert any("KV cache room" in note for note in plan.notes)


def test_grpo_without_checkpointing_does_not_fit_80gb_and_says_so():
    cfg = with_training(gpu_params("grpo"), gradient_checkpointing=False)
    plan = the_plan("grpo", cfg, A100_80)
    assert not plan.fits
    # Korthikanti's lower bound for 16 x 2048 tokens and 28 layers, 34·h bytes per token and layer:
    assert plan.gib("activations") > 16 * 2048 * LAYERS * 34 * H / GIB
    with pytest.raises(ParamsError) as err:
        check_stage("grpo", cfg, A100_80, print_fn=lambda _: None)
    message = str(err.value)
    assert "stage grpo" in message and "79.2 GiB" in message
    assert "training.gradient_checkpointing: true" in message


def test_reward_model_pairs_double_the_rows_and_have_no_lm_head():
    cfg = gpu_params("reward_model")
    rm = the_plan("reward_model", cfg, A100_80, "reward model")
    assert "16 rows" in rm.term("activations").how  # 8 pairs = 16 sequences
    assert rm.gib("loss / logits") == 0
    dpo = the_plan("reward_model", cfg, A100_80, "DPO")
    assert "8 rows" in dpo.term("activations").how  # 4 pairs
    # LoRA: TRL adds a frozen "ref" copy of the adapter to the PEFT model it is given, not a model
    assert 0 < dpo.gib("reference adapter") < 0.1


def test_revision_sft_is_planned_when_on():
    cfg = gpu_params("reward_model")
    assert all(p.phase != "revision SFT" for p in plan_stage("reward_model", cfg, A100_80))
    on = cfg.model_copy(update={"revision_sft": True})
    revision = the_plan("reward_model", on, A100_80, "revision SFT")
    rows = on.revision_training.per_device_train_batch_size
    assert f"{rows} rows" in revision.term("activations").how  # one sequence per record
    assert revision.gib("loss / logits") > 0  # an LM head, unlike the reward model


# --------------------------------------------------------------------------------------------
# Each lever moves its term
# --------------------------------------------------------------------------------------------


def test_gradient_checkpointing_lowers_activations():
    cfg = gpu_params("sft")
    on = the_plan("sft", with_training(cfg, gradient_checkpointing=True), A100_80)
    off = the_plan("sft", with_training(cfg, gradient_checkpointing=False), A100_80)
    assert on.gib("activations") < off.gib("activations") / 5
    assert "without gradient checkpointing" in off.term("activations").how


def test_four_bit_lowers_weights_and_switches_to_8bit_adam():
    cfg = gpu_params("sft")
    quantized = cfg.model_copy(update={"model": cfg.model.model_copy(update={"quantization": "4bit"})})
    full, qlora = the_plan("sft", cfg, T4), the_plan("sft", quantized, T4)
    assert qlora.gib("weights") < 0.6 * full.gib("weights")
    # NF4 linear weights (~0.52 B) + fp32 embeddings (PEFT's prepare_model_for_kbit_training).
    arch = KNOWN_ARCHITECTURES[QWEN_15B]
    assert qlora.gib("weights") == pytest.approx((arch.linear_parameters * 0.516 + arch.other_parameters * 4) / GIB, rel=0.01)
    assert qlora.gib("optimizer") == pytest.approx(18_464_768 * 2 / GIB, rel=1e-3)


def test_full_logits_dominate_without_the_fused_head():
    cfg = gpu_params("sft")
    fused = the_plan("sft", cfg, T4, fused_head=True)
    unfused = the_plan("sft", cfg, T4, fused_head=False)
    # 8 x 1024 tokens x 151,936 entries x (2 + 4 + 4) bytes: ~11.6 GiB, the largest term.
    assert unfused.gib("loss / logits") == pytest.approx(8 * 1024 * VOCAB * 10 / GIB)
    assert max(unfused.terms, key=lambda t: t.gib).name == "loss / logits"
    assert fused.gib("loss / logits") < 1
    assert fused.fits and not unfused.fits


def test_full_finetune_on_a_t4_keeps_fp32_weights():
    # hardware.choose_dtype: all weights train under fp16 mixed precision -> fp32 weights (the
    # gradient scaler refuses fp16 gradients); with bf16 (A100) they stay 16-bit.
    n = 1_543_714_304
    cfg = load_params("sft", "params/t4/sft.yaml", full_finetune=True)
    t4 = the_plan("sft", cfg, T4)
    assert t4.gib("weights") == pytest.approx(n * 4 / GIB, rel=1e-6)  # 5.75 GiB
    assert t4.gib("gradients") == pytest.approx(n * 4 / GIB, rel=1e-6)
    assert t4.gib("optimizer") == pytest.approx(n * 8 / GIB, rel=1e-6)  # 11.5 GiB
    assert "float32" in t4.term("weights").how and not t4.fits
    a100 = the_plan("sft", gpu_params("sft", full_finetune=True), A100_80)  # model.dtype auto: bf16
    assert a100.gib("weights") == pytest.approx(n * 2 / GIB, rel=1e-6)
    assert a100.gib("optimizer") == pytest.approx(n * 4 / GIB, rel=1e-6)
    # LoRA on a T4: fp16 base weights, as loaded.
    assert the_plan("sft", load_params("sft", "params/t4/sft.yaml"), T4).gib("weights") == pytest.approx(n * 2 / GIB)
    # fp32 residual stream: the checkpointed layer inputs are 4 B per element.
    tokens = 4 * 1024
    assert t4.gib("activations") > tokens * 4 * H * LAYERS / GIB


def test_grpo_with_the_reward_model_pays_for_the_scorer():
    cfg = gpu_params("grpo", rewards={"reward_model": 0.5}, reward_model="stage:reward_model")
    plain = the_plan("grpo", gpu_params("grpo"), A100_80)
    plan = the_plan("grpo", cfg, A100_80)
    assert plain.gib("reward model (scoring)") == 0
    # Qwen2.5-1.5B (the profile's reward_model.yaml; tied embeddings: no LM head to drop) in
    # fp32, RewardScorer.from_spec's default dtype, plus 8 x 1024 tokens scored at once.
    weights = 1_543_714_304 * 4 / GIB
    scorer = plan.gib("reward model (scoring)")
    assert weights < scorer < weights + 2.5
    assert "float32" in plan.term("reward model (scoring)").how
    assert plan.total_gib == pytest.approx(plain.total_gib + scorer * 1.05, rel=1e-3)


def test_ddp_adds_gradient_buckets_per_process():
    two = Hardware(cuda=True, device_count=2, world_size=2, name="A100", capability=(8, 0), total_memory_gib=79.15)
    plan = the_plan("sft", gpu_params("sft"), two)
    assert plan.gib("DDP buckets") == pytest.approx(plan.gib("gradients"))
    assert the_plan("sft", gpu_params("sft"), A100_80).gib("DDP buckets") == 0


# --------------------------------------------------------------------------------------------
# check_stage: print, return, stop
# --------------------------------------------------------------------------------------------


def test_check_stage_prints_the_plan_and_returns_it():
    lines = []
    plan = check_stage("sft", gpu_params("sft"), A100_80, print_fn=lines.append)
    assert plan is not None and plan.fits
    text = "\n".join(lines)
    for word in ("weights", "optimizer", "activations", "total", "79.2 GiB", "headroom"):
        assert word in text


def test_a_plan_that_cannot_fit_stops_naming_the_parameter():
    with pytest.raises(ParamsError) as err:
        check_stage("grpo", gpu_params("grpo"), T4, print_fn=lambda _: None)
    message = str(err.value)
    assert "stage grpo" in message and "14.8 GiB" in message
    assert "training.per_device_train_batch_size" in message
    assert "training.extra.vllm_gpu_memory_utilization" in message


def test_the_suggested_batch_size_fits():
    # GRPO: the micro-batch counts completions and keeps whole groups of num_generations (8).
    cfg = gpu_params("grpo")
    plan = the_plan("grpo", cfg, T4)
    fix = plan.term("activations").fix
    smaller = int(fix.split(" to ")[1].split()[0])  # "lower ... from 16 to N or less ..."
    assert 1 <= smaller < 16 and smaller % cfg.num_generations == 0, fix
    assert "multiples of num_generations (8)" in fix
    assert the_plan("grpo", with_training(cfg, per_device_train_batch_size=smaller), T4).fits
    # Without the multiple rule the row count alone would say 10 (TRL wants whole groups).
    assert the_plan("grpo", with_training(cfg, per_device_train_batch_size=10), T4).fits
    assert not the_plan("grpo", with_training(cfg, per_device_train_batch_size=smaller + 8), T4).fits
    # SFT has no groups: the largest row count that fits.
    sft = gpu_params("sft", training={"per_device_train_batch_size": 32, "max_length": 2048,
                                      "gradient_checkpointing": True})
    sft_fix = the_plan("sft", sft, T4).term("activations").fix
    rows = int(sft_fix.split(" to ")[1].split()[0])
    assert 1 <= rows < 32 and the_plan("sft", with_training(sft, per_device_train_batch_size=rows), T4).fits


def test_grpo_when_not_even_one_group_fits_suggests_fewer_generations():
    cfg = gpu_params("grpo", num_generations=16)
    cfg = with_training(cfg, per_device_train_batch_size=32)
    plan = the_plan("grpo", cfg, T4)
    assert not plan.fits
    assert plan.term("activations").fix.startswith("lower num_generations from 16")
    at_one_group = the_plan("grpo", with_training(cfg, per_device_train_batch_size=16), T4)
    assert "max_completion_length" in at_one_group.term("activations").fix


def test_a_vllm_share_too_small_for_the_weights_is_a_problem():
    cfg = gpu_params("grpo")
    tiny_share = with_training(cfg, extra={**cfg.training.extra, "vllm_gpu_memory_utilization": 0.05})
    plan = the_plan("grpo", tiny_share, A100_40)
    assert not plan.fits and plan.total_gib < 39.39
    with pytest.raises(ParamsError, match="raise training.extra.vllm_gpu_memory_utilization to at least"):
        check_stage("grpo", tiny_share, A100_40, print_fn=lambda _: None)


def test_no_cuda_returns_none_with_one_line():
    lines = []
    assert check_stage("sft", gpu_params("sft"), CPU, print_fn=lines.append) is None
    assert lines == ["no CUDA GPU: memory plan not checked"]


def test_a_stage_without_a_gpu_phase_says_nothing():
    lines = []
    data = load_params("data", "params/data.yaml")
    assert check_stage("data", data, CPU, print_fn=lines.append) is None
    assert check_stage("data", data, T4, print_fn=lines.append) is None
    assert lines == []


def test_the_error_starts_with_the_origin():
    with pytest.raises(ParamsError) as err:
        check_stage("grpo", gpu_params("grpo"), T4, print_fn=lambda _: None, origin="params/grpo.yaml")
    assert str(err.value).startswith("params/grpo.yaml: stage grpo")
    with pytest.raises(ParamsError) as err:
        check_stage("grpo", gpu_params("grpo"), T4, print_fn=lambda _: None)
    assert str(err.value).startswith("stage grpo")


def test_only_local_rank_zero_prints_and_every_rank_stops():
    from dataclasses import replace

    lines = []
    rank1 = replace(A100_80, local_rank=1, world_size=2, device_count=2)
    assert check_stage("sft", gpu_params("sft"), rank1, print_fn=lines.append) is not None
    assert lines == []
    with pytest.raises(ParamsError):
        check_stage("grpo", gpu_params("grpo"), replace(T4, local_rank=1, world_size=2), print_fn=lines.append)
    assert lines == []
    check_stage("sft", gpu_params("sft"), replace(rank1, local_rank=0), print_fn=lines.append)
    assert any("total" in line for line in lines)


def test_unknown_architecture_is_reported_and_stops_nothing():
    cfg = gpu_params("sft")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"spec": "someone/unknown-model"})})
    lines = []
    plan = check_stage("sft", cfg, T4, print_fn=lines.append)
    assert plan is not None and not plan.known and plan.fits
    assert "not estimated" in lines[0] and "someone/unknown-model" in lines[0]


# --------------------------------------------------------------------------------------------
# The activation count against what autograd saves
# --------------------------------------------------------------------------------------------


def _saved_bytes_per_token(layers: int, target_modules, attn: str, rows: int, length: int,
                           weights: str = "bfloat16") -> float:
    """Bytes of the tensors a small bf16 Qwen2 saves for backward, per token, under bf16 autocast
    (as the Trainer runs), parameters and their per-step casts left out."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=256, intermediate_size=1024, num_attention_heads=8, num_key_value_heads=2,
                         num_hidden_layers=layers, vocab_size=512, tie_word_embeddings=True, attn_implementation=attn)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, weights))
    if target_modules is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=target_modules))
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        # Per-token tensors only: weight casts (r x in ...) are not multiples of rows x length.
        if tensor.numel() % (rows * length) == 0 and storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 512, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, :5] = 0  # padding, as in a real batch: SDPA then gets k and v repeated per head
    decoder = model.get_base_model().model if target_modules is not None else model.model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        decoder(input_ids=ids, attention_mask=mask)
    return sum(saved.values()) / (rows * length)


# Measured deviations of the estimate (torch 2.x CPU, bf16 autocast): bf16 weights, full / all-
# linear LoRA / q,v LoRA: sdpa -0.8 / -0.8 / -1.1 %, eager 0.0 / +3.0 / +4.0 %; fp32 weights
# (full fine-tuning on a T4, fp16 autocast there): sdpa -0.7 %, eager 0.0 %.
@pytest.mark.parametrize("target_modules,weights", [(None, "bfloat16"), ("all-linear", "bfloat16"),
                                                    (["q_proj", "v_proj"], "bfloat16"), (None, "float32")])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_activation_count_matches_what_autograd_saves(target_modules, weights, attn):
    from nl2sql_lib.config import LoraParams

    rows, length = 3, 40
    # One layer's share: the difference between 3 and 1 layers (the first layer differs: with
    # LoRA its input needs no gradient), halved.
    measured = (_saved_bytes_per_token(3, target_modules, attn, rows, length, weights)
                - _saved_bytes_per_token(1, target_modules, attn, rows, length, weights)) / 2
    arch = Architecture(256, 3, 1024, 8, 2, 512, True, attention_bias=True)
    lora = None if target_modules is None else LoraParams(r=8, dropout=0.0, target_modules=target_modules)
    estimate = activation_bytes_per_token_layer(arch, width=2, lora=lora, attn_implementation=attn,
                                                sequence_length=length,
                                                residual_width=4 if weights == "float32" else 2)
    assert estimate == pytest.approx(measured, rel=0.05)


def test_eval_without_vllm_counts_the_fast_greedy_rows():
    """Without vLLM, greedy answers take the fast path: 8 x batch_size rows, each holding its
    question (256 tokens allowed) and answer as float32 keys and values, a shared prefix, and the
    first step's attention scores over it; the plan counts the larger of that and the sampling
    batch's KV cache (the two never run at once)."""
    for best_of_n in ([], None):  # greedy systems only; and the reference file's best-of-N pools
        cfg = gpu_params("eval", use_vllm=False, **({"best_of_n_systems": best_of_n} if best_of_n == [] else {}))
        plan = the_plan("eval", cfg, A100_80, "generation")
        rows, tokens = 8 * cfg.batch_size, 256 + cfg.max_new_tokens
        context = 1024  # ModelParams.max_seq_length, the default the eval plan assumes
        fast = (rows * tokens * 2 * LAYERS * KV * 4  # each row's K and V, every layer, float32
                + context * 2 * LAYERS * KV * 4  # one shared prefix
                + 3 * rows * 12 * 256 * context * 4)  # the first step's scores over it (12 heads)
        sampling = plan.gib("KV cache") * GIB
        assert plan.gib("fast greedy path (float32)") == pytest.approx(max(0, fast - sampling) / GIB, abs=1e-9)
        if best_of_n == []:  # 256 rows in fp32 outweigh 32 sequences of the context
            assert fast > sampling and plan.gib("fast greedy path (float32)") > 1
    with_vllm = the_plan("eval", gpu_params("eval"), A100_80, "generation")
    assert with_vllm.gib("fast greedy path (float32)") == 0  # vLLM answers: no such rows
