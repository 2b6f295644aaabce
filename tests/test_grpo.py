"""03_grpo: the GRPOConfig the parameters produce (GPU and CPU), metrics helpers, and a smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nl2sql_lib.config import GRPOParams, ModelParams, TrainingParams, load_params
from nl2sql_lib.data.example import Example, write_examples
from nl2sql_lib.train.grpo import (
    GRPOSetupError,
    SampleRecorder,
    check_hardware,
    curves_from_history,
    grpo_config_kwargs,
    summarize_training,
    tenth_trend,
)
from tests.test_rewards import GOLD, RIGHT, WRONG, make_db

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ---- configuration --------------------------------------------------------------------------


def test_gpu_params_produce_vllm_colocate_config_without_importing_gpu_packages():
    # A fresh interpreter, so that nothing another test imported can hide an import of vllm.
    code = """
import json, sys
from nl2sql_lib.config import load_params
from nl2sql_lib.models import unsloth_from_pretrained_kwargs
from nl2sql_lib.train.grpo import grpo_config_kwargs
cfg = load_params("grpo", "params/grpo.yaml")
kw = grpo_config_kwargs(cfg, "out", cuda=True, reward_weights=[1.0, 0.1, 0.3, 0.1])
unsloth = cfg.model.model_copy(update={"backend": "unsloth", "quantization": "4bit"})
print(json.dumps({"kw": kw, "unsloth": unsloth_from_pretrained_kwargs(unsloth, "<model folder>"),
                  "imported": sorted(m for m in ("vllm", "unsloth", "bitsandbytes") if m in sys.modules)}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    kw = result["kw"]
    assert kw["use_vllm"] is True and kw["vllm_mode"] == "colocate"
    assert kw["bf16"] is True and "use_cpu" not in kw
    assert kw["vllm_gpu_memory_utilization"] == 0.35  # training.extra wins over the default
    assert kw["vllm_max_model_length"] == 2048
    assert kw["num_generations"] == 8 and kw["beta"] == 0.0 and kw["loss_type"] == "dapo"
    assert kw["reward_weights"] == [1.0, 0.1, 0.3, 0.1]
    assert kw["remove_unused_columns"] is False
    assert (kw["per_device_train_batch_size"] * kw["gradient_accumulation_steps"]) % kw["num_generations"] == 0
    assert result["unsloth"]["load_in_4bit"] is True
    assert result["imported"] == []


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_cpu_params_build_a_valid_grpo_config(profile, tmp_path):
    from trl import GRPOConfig

    cfg = load_params("grpo", PROJECT_ROOT / "params" / profile / "grpo.yaml")
    kw = grpo_config_kwargs(cfg, tmp_path, cuda=False, reward_weights=[1.0, 0.1])
    assert kw["use_cpu"] is True and kw["use_vllm"] is False and "vllm_mode" not in kw
    assert kw["bf16"] is False and kw["gradient_checkpointing"] is False
    args = GRPOConfig(**kw)  # TRL's own checks: generation batch divisible by num_generations
    assert args.generation_batch_size % args.num_generations == 0
    assert args.max_completion_length == cfg.max_completion_length
    # bf16 autocast only where the CPU computes bf16 natively
    assert grpo_config_kwargs(cfg, tmp_path, cuda=False, cpu_bf16=True)["bf16"] is True


def test_prompts_follow_the_policy_stage(tmp_path):
    from nl2sql_lib.config import SchemaParams
    from nl2sql_lib.io import write_json
    from nl2sql_lib.train.grpo import schema_params_for

    cfg = GRPOParams(run="r", output_root=str(tmp_path))
    assert schema_params_for(cfg) == SchemaParams()
    write_json(tmp_path / "r" / "data" / "manifest.json", {"parameters": {"schema_render": {"style": "compact"}}})
    assert schema_params_for(cfg).style == "compact"
    write_json(tmp_path / "r" / "sft" / "metrics.json", {"schema_render": {"style": "create_table", "max_tokens": 256}})
    assert schema_params_for(cfg).max_tokens == 256  # what SFT trained on wins over the data stage
    explicit = SchemaParams(max_tokens=512)
    assert schema_params_for(cfg.model_copy(update={"schema_render": explicit})) == explicit


def test_cpu_profile_builds_a_grpo_config_on_a_cpu(tmp_path):
    # The profile's step time is measured, not asserted (docs/cpu-notes.md; the manifest's
    # seconds_per_step): here, that TRL accepts the profile on a CPU as it is.
    from trl import GRPOConfig

    cfg = load_params("grpo", PROJECT_ROOT / "params" / "cpu" / "grpo.yaml")
    check_hardware(cfg, cuda=False)  # nothing GPU-only (vLLM) is asked for
    args = GRPOConfig(**grpo_config_kwargs(cfg, tmp_path, cuda=False))  # TRL checks the batch/group sizes
    assert args.num_generations == cfg.num_generations
    assert args.beta == 0.0  # no reference model: a reference pass would double the step time
    assert args.gradient_checkpointing is False and args.use_vllm is False


def test_extra_keys_are_checked_against_grpo_config(tmp_path):
    cfg = GRPOParams(training=TrainingParams(extra={"top_p": 0.95}))
    assert grpo_config_kwargs(cfg, tmp_path, cuda=False)["top_p"] == 0.95
    cfg = GRPOParams(training=TrainingParams(extra={"top_pp": 0.95}))
    with pytest.raises(GRPOSetupError, match="top_pp"):
        grpo_config_kwargs(cfg, tmp_path, cuda=False)


def test_vllm_on_a_cpu_stops_with_what_to_change():
    with pytest.raises(GRPOSetupError, match="use_vllm: false"):
        check_hardware(GRPOParams(use_vllm=True), cuda=False)
    check_hardware(GRPOParams(use_vllm=False), cuda=False)


# ---- metrics helpers ------------------------------------------------------------------------


def test_curves_and_tenth_trend_from_log_history():
    history = [
        {"step": s, "loss": 0.1, "rewards/execution/mean": v, "rewards/partial/mean": 0.5, "entropy": 1.0 - s / 100,
         "reward": v + 0.1}
        for s, v in zip(range(1, 21), [0.0] * 2 + [0.5] * 16 + [1.0] * 2)
    ] + [{"step": 20, "train_runtime": 12.0, "train_loss": 0.1}]
    curves = curves_from_history(history)
    assert curves["rewards/execution/mean"][0] == [1, 0.0] and len(curves["rewards/execution/mean"]) == 20
    trend = tenth_trend(curves["rewards/execution/mean"])
    assert trend["per_tenth"] == 2 and trend["first_tenth"] == 0.0 and trend["last_tenth"] == 1.0 and trend["rose"]
    summary = summarize_training(history, ["execution", "partial"])
    assert summary["execution_trend"]["delta"] == 1.0
    assert summary["reward_trends"]["partial"]["rose"] is False
    assert summary["entropy_start"] == 0.99 and summary["train_runtime_s"] == 12.0
    assert tenth_trend([]) is None


def test_sample_recorder_joins_rewards_and_keeps_start_and_end():
    from nl2sql_lib.rewards import RewardFunction

    recorder = SampleRecorder(keep=2)
    funcs = [recorder.wrap(RewardFunction("syntax")), recorder.wrap(RewardFunction("format"))]
    assert [f.__name__ for f in funcs] == ["syntax", "format"]
    for step in range(5):
        batch = [f"SELECT {step}", "no sql"]
        kwargs = {"trainer_state": SimpleNamespace(global_step=step), "question": ["q1", "q2"]}
        for f in funcs:
            f(prompts=["p", "p"], completions=batch, **kwargs)
    tables = recorder.tables()
    assert recorder.signal() == {}  # no group size given: no counting
    assert [r["step"] for r in tables["start"]] == [0, 0]
    assert [r["step"] for r in tables["end"]] == [4, 4]
    assert tables["end"][0] == {"step": 4, "question": "q1", "completion": "SELECT 4", "syntax": 1.0, "format": 1.0}
    assert tables["end"][1]["syntax"] == 0.0


def test_sample_recorder_counts_groups_whose_rewards_differ():
    """Groups of 2 completions: a group teaches through a reward only when its values differ."""

    class Fixed:
        def __init__(self, name, values):
            self.__name__, self.values = name, values

        def __call__(self, prompts, completions, **kwargs):
            return self.values

    recorder = SampleRecorder(keep=0, group_size=2)
    funcs = [recorder.wrap(Fixed("execution", [1.0, 0.0, 1.0, 1.0])), recorder.wrap(Fixed("partial", [0.5, 0.2, 0.9, 0.3]))]
    for func in funcs:
        func(prompts=["p"] * 4, completions=["a", "b", "c", "d"], trainer_state=SimpleNamespace(global_step=1))
    assert recorder.signal() == {"execution": {"groups": 2, "varied": 1, "share": 0.5},
                                 "partial": {"groups": 2, "varied": 2, "share": 1.0}}


# ---- smoke run on the tiny model ------------------------------------------------------------


def _tiny_run(tmp_path: Path, max_steps: int) -> GRPOParams:
    db = make_db(tmp_path / "music.sqlite")
    examples = [
        Example(question_id=str(i), db_id="music", db_path=str(db), question=q, sql=sql, difficulty="simple")
        for i, (q, sql) in enumerate([
            ("Names of singers from France, youngest first?", GOLD),
            ("Names of singers from Spain?", WRONG),
            ("How many singers are there?", "SELECT count(*) FROM singer"),
            ("Venues of concerts in 2015?", "SELECT venue FROM concert WHERE year = 2015"),
        ])
    ]
    write_examples(tmp_path / "outputs" / "t" / "data" / "train.jsonl", examples)
    return GRPOParams(
        run="t", output_root=str(tmp_path / "outputs"), profile="smoke",
        model=ModelParams(spec="tiny:smollm2"),
        num_generations=2, max_completion_length=8, temperature=1.0, num_samples_shown=2,
        training=TrainingParams(max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-4,
                                max_length=1024, logging_steps=1, save_steps=1, save_total_limit=1, report_to=[]),
    )


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_grpo_on_tiny_model_trains_saves_and_resumes(tmp_path):
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.grpo import run_grpo

    cfg = _tiny_run(tmp_path, max_steps=2)
    stage = StageRun(cfg, "grpo").start()
    metrics = run_grpo(cfg, stage)
    adapter = stage.dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "nl2sql_base.json").read_text())["spec"] == "tiny:smollm2"
    assert not (adapter / "ref").exists()
    saved = json.loads((stage.dir / "metrics.json").read_text())
    assert saved["steps"] == 2 and metrics["steps"] == 2
    assert set(saved["rewards"]) == {"execution", "executable", "partial"}
    for name in saved["rewards"]:  # every reward logged as its own curve, one point per step
        points = saved["curves"][f"rewards/{name}/mean"]
        assert [p[0] for p in points] == [1, 2] and all(0.0 <= p[1] <= 1.0 for p in points)
    assert "entropy" in saved["curves"] and saved["execution_trend"]["points"] == 2
    assert saved["format"] == "plain" and saved["schema_render"]["style"] == "create_table"
    assert saved["steps_timed"] == 2 and saved["peak_rss_mb"] > 0
    assert len(saved["samples"]["start"]) == 2 and {"execution", "partial", "completion"} <= set(saved["samples"]["start"][0])

    # Extending the run resumes from the last checkpoint instead of starting over.
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 3})})
    again = run_grpo(cfg, StageRun(cfg, "grpo").start())
    assert again["resumed_from"].endswith("checkpoint-2") and again["steps"] == 3


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_grpo_with_the_pass_rate_filter_probes_before_training(tmp_path):
    """pass_rate_filter.enabled: the policy answers every question first; the random tiny model
    gets none right, so the filter falls back to all of them and says so."""
    from nl2sql_lib.config import PassRateFilterParams
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.grpo import headline, run_grpo

    cfg = _tiny_run(tmp_path, max_steps=1).model_copy(update={
        "pass_rate_filter": PassRateFilterParams(enabled=True, candidates=3, samples=2)})
    stage = StageRun(cfg, "grpo").start()
    metrics = run_grpo(cfg, stage)
    selection = metrics["pass_rate_selection"]
    assert selection["probed"] == 3 and selection["samples"] == 2
    assert selection["all_wrong"] + selection["all_right"] + selection["mixed"] + selection["unscorable"] == 3
    assert selection["kept"] == metrics["train_examples"] <= 3
    assert selection["fallback"] == (selection["mixed"] == 0)
    assert metrics["steps"] == 1 and 0.0 <= metrics["nonzero_advantage_share"] <= 1.0
    assert headline(metrics)["probe_probed"] == 3 and selection["reused"] == 0
    assert (stage.dir / "pass_rates.json").is_file()


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_grpo_with_a_trained_reward_model_as_a_reward(tmp_path):
    """rewards.reward_model > 0: 05's model scores every completion, logged as its own curve."""
    from nl2sql_lib.config import RewardWeights
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.grpo import run_grpo
    from nl2sql_lib.train.reward_model import run_reward_model
    from tests.test_reward_model import planted_database, planted_pairs, smoke_cfg

    db = planted_database(tmp_path / "planted.sqlite")
    rm_cfg = smoke_cfg(tmp_path, "rm", planted_pairs(16, 0, db_path=db), planted_pairs(8, 1, db_path=db))
    rm_cfg.training.max_steps = 2
    rm_stage = StageRun(rm_cfg, "reward_model").start()
    rm_stage.finish(run_reward_model(rm_cfg, rm_stage))

    cfg = _tiny_run(tmp_path, max_steps=1).model_copy(update={
        "rewards": RewardWeights(execution=1.0, executable=0.0, partial=0.0, reward_model=0.5),
        "reward_model": str(rm_stage.dir),  # another run's reward_model stage folder
    })
    stage = StageRun(cfg, "grpo").start()
    metrics = run_grpo(cfg, stage)
    assert metrics["rewards"] == {"execution": 1.0, "reward_model": 0.5}
    points = metrics["curves"]["rewards/reward_model/mean"]
    assert [p[0] for p in points] == [1] and 0.0 <= points[0][1] < 1.0
    assert "reward_model" in metrics["samples"]["start"][0]  # shown beside each sampled completion


def test_records_carry_the_reward_columns_and_long_prompts_are_dropped(tmp_path):
    from nl2sql_lib.config import SchemaParams
    from nl2sql_lib.data.example import read_examples
    from nl2sql_lib.models import load_tokenizer
    from nl2sql_lib.train.grpo import build_records, drop_long_prompts

    cfg = _tiny_run(tmp_path, max_steps=1)
    examples = read_examples(tmp_path / "outputs" / "t" / "data" / "train.jsonl")
    records = build_records(examples, cfg, SchemaParams())
    assert records[0]["prompt"][-1]["role"] == "user" and "singer" in records[0]["prompt"][-1]["content"]
    assert {"db_path", "sql", "db_id", "question"} <= set(records[0])
    assert records[0]["sql"] == GOLD and records[0]["db_path"] == examples[0].db_path
    tokenizer = load_tokenizer("tiny:smollm2")
    kept, dropped = drop_long_prompts(records, tokenizer, 10_000)
    assert (len(kept), dropped) == (4, 0)
    kept, dropped = drop_long_prompts(records, tokenizer, 20)
    assert (len(kept), dropped) == (0, 4)


def test_grpo_loads_the_policy_with_the_trainers_checkpointing_decision(tmp_path, stub_load_model):
    """QLoRA's prepare_model_for_kbit_training turns checkpointing on by itself: load_model must
    get GRPO's decision (here false, set explicitly), or a 'false' in the parameter file is lost."""
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.grpo import run_grpo
    from tests.conftest import ModelLoaded

    cfg = _tiny_run(tmp_path, max_steps=1)
    for setting, expected in ((False, False), (True, True), ("auto", False)):  # auto: off on this CPU
        cfg.training.gradient_checkpointing = setting
        with pytest.raises(ModelLoaded):
            run_grpo(cfg, StageRun(cfg, "grpo").start())
        assert stub_load_model["gradient_checkpointing"] is expected and stub_load_model["for_training"] is True
