"""02_sft: TRL arguments, records with the loss on the answer only, a smoke run, resume."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from nl2sql_lib.config import ModelParams, SFTParams, load_params
from nl2sql_lib.data.example import Example, read_examples, write_examples
from nl2sql_lib.runs import StageRun
from nl2sql_lib.train.common import TrainingSetupError, loss_curve
from nl2sql_lib.data.linking import parse_links, score_linking
from nl2sql_lib.train.sft import build_records, run_sft, schema_params_for, sft_config_kwargs

from tests.test_hardware import A100, CPU, T4

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "params" / "smoke" / "sft.yaml"

TEMPLATES = [
    ("How many singers are there?", "SELECT count(*) FROM singer"),
    ("List the names of singers from {c}.", "SELECT name FROM singer WHERE country = '{c}'"),
    ("What is the average age of singers from {c}?", "SELECT avg(age) FROM singer WHERE country = '{c}'"),
    ("How many concerts were held in {y}?", "SELECT count(*) FROM concert WHERE year = {y}"),
    ("Name the singers older than {a}.", "SELECT name FROM singer WHERE age > {a}"),
    ("Which years had a concert by {n}?",
     "SELECT T2.year FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T1.name = '{n}'"),
]
VALUES = [dict(c="France", y=2014, a=30, n="Ann"), dict(c="Spain", y=2015, a=40, n="Bob"),
          dict(c="Italy", y=2016, a=50, n="Cid"), dict(c="Peru", y=2013, a=35, n="Dee")]


def make_run(run_dir: Path, n_train: int = 24, n_dev: int = 4) -> Path:
    """A run folder as 01_data leaves it: data/train.jsonl and dev.jsonl over one SQLite file."""
    db = run_dir / "data" / "databases" / "concert" / "concert.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY,
                              singer_id INTEGER REFERENCES singer(singer_id), year INTEGER);
        INSERT INTO singer VALUES (1,'Ann','France',30),(2,'Bob','Spain',45),(3,'Cid','France',52);
        INSERT INTO concert VALUES (1,1,2014),(2,2,2015),(3,1,2015);
    """)
    con.commit()
    con.close()
    examples = []
    for i in range(n_train + n_dev):
        question, sql = TEMPLATES[i % len(TEMPLATES)]
        values = VALUES[(i // len(TEMPLATES)) % len(VALUES)]
        examples.append(Example(
            question_id=str(i), db_id="concert", db_path=str(db), question=question.format(**values),
            sql=sql.format(**values), difficulty="simple", source="test",
        ))
    write_examples(run_dir / "data" / "train.jsonl", examples[:n_train])
    write_examples(run_dir / "data" / "dev.jsonl", examples[n_train:])
    return run_dir


def smoke_params(output_root: Path, run: str = "t", **overrides) -> SFTParams:
    cfg = load_params("sft", SMOKE, run=run, output_root=str(output_root))
    return cfg.model_copy(update=overrides)


def _training(cfg: SFTParams, **changes) -> SFTParams:
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=changes)})


# ---------------------------------------------------------------------------- TRL arguments


def test_config_kwargs_on_cpu(tmp_path):
    cfg = smoke_params(tmp_path)
    kwargs = sft_config_kwargs(cfg, tmp_path / "ck", cuda=False, cpu_bf16=True)
    assert kwargs["use_cpu"] is True
    assert kwargs["bf16"] is False  # model.dtype: float32 turns CPU autocast off
    assert kwargs["gradient_checkpointing"] is False  # TRL's default is True (docs/cpu-notes.md, gotcha 3)
    assert kwargs["completion_only_loss"] is True
    assert kwargs["max_length"] == cfg.training.max_length
    assert kwargs["report_to"] == ["tensorboard"]
    assert kwargs["optim"] == "adamw_torch"
    auto = cfg.model_copy(update={"model": ModelParams(spec="tiny:smollm2")})
    assert sft_config_kwargs(auto, tmp_path, cuda=False, cpu_bf16=True)["bf16"] is True
    assert sft_config_kwargs(auto, tmp_path, cuda=False, cpu_bf16=False)["bf16"] is False
    from trl import SFTConfig

    SFTConfig(**kwargs)  # TRL accepts them on this CPU machine


def test_config_kwargs_on_gpu_with_qlora(tmp_path):
    cfg = smoke_params(tmp_path).model_copy(update={"model": ModelParams(spec="x/y", quantization="4bit")})
    cfg = _training(cfg, gradient_checkpointing=True)
    kwargs = sft_config_kwargs(cfg, tmp_path, cuda=True, cpu_bf16=False)
    assert kwargs["bf16"] is True and "use_cpu" not in kwargs
    assert kwargs["optim"] == "paged_adamw_8bit"
    assert kwargs["gradient_checkpointing"] is True
    # transformers 5.17's default (non-reentrant) applies, as for every trainer (train/common.py)
    assert "gradient_checkpointing_kwargs" not in kwargs


def test_every_trainer_gets_the_same_checkpointing_keys(tmp_path):
    """One rule (train/common.gradient_checkpointing_kwargs): SFT, GRPO and the reward model/DPO
    configs get gradient_checkpointing only, no kwargs of their own."""
    from trl import RewardConfig

    from nl2sql_lib.train.grpo import grpo_config_kwargs
    from nl2sql_lib.train.common import trl_config

    cfg = _training(smoke_params(tmp_path), gradient_checkpointing=True)
    keys = {k: v for k, v in sft_config_kwargs(cfg, tmp_path, cuda=True).items() if "checkpointing" in k}
    grpo = load_params("grpo", PROJECT_ROOT / "params" / "smoke" / "grpo.yaml", run="t", output_root=str(tmp_path))
    grpo = grpo.model_copy(update={"training": grpo.training.model_copy(update={"gradient_checkpointing": True})})
    grpo_keys = {k: v for k, v in grpo_config_kwargs(grpo, tmp_path, cuda=True, reward_weights=[1.0]).items()
                 if "checkpointing" in k}
    reward = trl_config(RewardConfig, cfg.training, cfg.model, tmp_path / "rm", 0, hardware=A100)
    assert keys == grpo_keys == {"gradient_checkpointing": True}
    assert reward.gradient_checkpointing is True and not reward.gradient_checkpointing_kwargs


def test_unknown_extra_key_and_missing_tracker_are_clear_errors(tmp_path, monkeypatch):
    cfg = _training(smoke_params(tmp_path), extra={"not_a_field": 1})
    with pytest.raises(TrainingSetupError, match="not_a_field"):
        sft_config_kwargs(cfg, tmp_path, cuda=False, cpu_bf16=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    cfg = _training(smoke_params(tmp_path), report_to=["tensorboard", "wandb"])
    with pytest.raises(TrainingSetupError, match=r"wandb.*not installed.*remove it from training.report_to"):
        sft_config_kwargs(cfg, tmp_path, cuda=False, cpu_bf16=False)


# ---------------------------------------------------------------------------- records


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("outputs") / "t")


def test_records_put_the_loss_on_the_answer_only(run_dir):
    """TRL's own dataset preparation: the tokens that carry loss are exactly the answer + end."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from nl2sql_lib.models import load_model

    cfg = smoke_params(run_dir.parent)
    examples = read_examples(run_dir / "data" / "train.jsonl")[:3]
    records = build_records(examples, cfg, schema_params_for(cfg))
    assert records[0]["prompt"][0]["role"] == "system" and records[0]["prompt"][-1]["role"] == "user"
    assert "CREATE TABLE" in records[0]["prompt"][-1]["content"]
    assert records[0]["completion"] == [{"role": "assistant", "content": examples[0].sql + ";"}]
    model, tokenizer = load_model(cfg.model, lora=cfg.lora, for_training=True)
    kwargs = sft_config_kwargs(cfg, run_dir / "scratch", cuda=False, cpu_bf16=False)
    trainer = SFTTrainer(model=model, args=SFTConfig(**{**kwargs, "report_to": "none"}),
                         train_dataset=Dataset.from_list(records), processing_class=tokenizer)
    row = trainer.train_dataset[1]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tokenizer.decode(trained) == examples[1].sql + ";<|im_end|>\n"
    assert len(trained) < len(row["input_ids"]) / 3


def test_reasoning_and_linking_records(run_dir):
    cfg = smoke_params(run_dir.parent)
    examples = read_examples(run_dir / "data" / "train.jsonl")[5:6]  # the join question
    reasoning = build_records(examples, cfg.model_copy(update={"format": "reasoning"}), schema_params_for(cfg))
    answer = reasoning[0]["completion"][0]["content"]
    assert answer.startswith("<think>") and answer.endswith(examples[0].sql + ";")
    linking = build_records(examples, cfg.model_copy(update={"task": "schema_linking"}), schema_params_for(cfg))
    links = json.loads(linking[0]["completion"][0]["content"])
    assert sorted(links["tables"]) == ["concert", "singer"]
    assert "singer.name" in links["columns"]


def test_pruned_prompt_shows_only_linked_tables(run_dir):
    cfg = smoke_params(run_dir.parent)
    ex = read_examples(run_dir / "data" / "train.jsonl")[0]  # count(*) FROM singer
    full = build_records([ex], cfg, schema_params_for(cfg))[0]["prompt"][-1]["content"]
    pruned = build_records([ex], cfg, schema_params_for(cfg), keeps=[{"tables": ["singer"], "columns": []}])
    pruned_text = pruned[0]["prompt"][-1]["content"]
    assert "concert" in full and "concert" not in pruned_text.split("Question:")[0]
    assert "singer" in pruned_text


def test_linking_scores():
    gold = [{"tables": ["singer", "concert"], "columns": ["singer.name", "concert.year"]},
            {"tables": ["singer"], "columns": ["singer.age"]}]
    pred = [{"tables": ["Singer"], "columns": ["singer.name", "singer.bogus"]}, None]
    scores = score_linking(pred, gold)
    assert scores["table_precision"] == 1.0 and scores["table_recall"] == round(1 / 3, 4)
    assert scores["column_precision"] == 0.5 and scores["column_recall"] == round(1 / 3, 4)
    assert scores["valid_json"] == 0.5
    assert parse_links('x {"tables": ["a"], "columns": ["a.b"]} y') == {"tables": ["a"], "columns": ["a.b"]}
    assert parse_links("SELECT 1") is None and parse_links("{not json}") is None


def test_loss_curve_leaves_out_the_summary_row():
    history = [{"loss": 3.0, "step": 1, "learning_rate": 0.1}, {"loss": 2.0, "step": 2},
               {"train_runtime": 5.0, "train_loss": 2.5, "step": 2}]
    assert loss_curve(history) == [{"step": 1, "loss": 3.0, "learning_rate": 0.1}, {"step": 2, "loss": 2.0}]


def test_missing_training_data_names_the_notebook(tmp_path):
    cfg = smoke_params(tmp_path, run="empty")
    with pytest.raises(FileNotFoundError, match=r"01_data\.ipynb"):
        run_sft(cfg, StageRun(cfg, "sft").start())


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def smoke_run(run_dir):
    cfg = smoke_params(run_dir.parent, run=run_dir.name)
    stage = StageRun(cfg, "sft").start()
    metrics = run_sft(cfg, stage)
    stage.finish(metrics)
    return cfg, metrics


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_sft_lowers_the_loss_and_saves_an_adapter(smoke_run, run_dir):
    cfg, metrics = smoke_run
    assert metrics["global_step"] == cfg.training.max_steps
    assert metrics["loss_last"] < metrics["loss_first"] - 1.0
    saved = json.loads((run_dir / "sft" / "metrics.json").read_text())
    assert [row["step"] for row in saved["loss_curve"]][:2] == [1, 2]
    assert saved["peak_rss_mb"] > 0 and saved["train_examples"] == 24
    assert len(saved["samples"]) == cfg.sample_dev_questions and "before" in saved["samples"][0]
    assert (run_dir / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "sft" / "model").exists()
    assert any((run_dir / "sft" / "logs").iterdir())  # TensorBoard events


@pytest.mark.slow
@pytest.mark.policy_training
def test_saved_adapter_loads_back_with_the_trained_weights(smoke_run, run_dir):
    from nl2sql_lib.models import load_model, resolve_spec

    resolved = resolve_spec("stage:sft", run_dir=run_dir)
    assert resolved.adapter_path == run_dir / "sft" / "adapter" and resolved.base_spec == "tiny:smollm2"
    trained, tokenizer = load_model(ModelParams(spec="stage:sft", dtype="float32"), run_dir=run_dir)
    base, _ = load_model(ModelParams(spec="tiny:smollm2", dtype="float32"))
    ex = read_examples(run_dir / "data" / "train.jsonl")[0]
    text = f"<|im_start|>assistant\n{ex.sql};<|im_end|>"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss_trained = trained(input_ids=ids, labels=ids).loss
        loss_base = base(input_ids=ids, labels=ids).loss
    assert loss_trained < loss_base  # it learned the training answers


@pytest.mark.slow
@pytest.mark.policy_training
def test_resume_from_last_checkpoint(tmp_path):
    """An interrupted run (its last checkpoint lost) resumes from the one before, not from zero."""
    run_dir = make_run(tmp_path / "outputs" / "r", n_train=8, n_dev=0)
    cfg = _training(smoke_params(tmp_path / "outputs", run="r", sample_dev_questions=0),
                    max_steps=4, save_steps=2, logging_steps=1)
    first = run_sft(cfg, StageRun(cfg, "sft").start())
    assert first["resumed_from"] is None and first["global_step"] == 4
    checkpoints = run_dir / "sft" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    import shutil

    shutil.rmtree(checkpoints / "checkpoint-4")  # as if killed before step 4 was saved
    second = run_sft(cfg, StageRun(cfg, "sft").start())
    assert second["resumed_from"].endswith("checkpoint-2")
    assert second["global_step"] == 4 and second["steps_timed"] == 2  # only steps 3 and 4 ran
    assert [r["step"] for r in second["loss_curve"]] == [1, 2, 3, 4]  # history kept
    # Changed parameters: the old checkpoints are not resumed.
    changed = _training(cfg, learning_rate=1e-3, max_steps=2)
    third = run_sft(changed, StageRun(changed, "sft").start())
    assert third["resumed_from"] is None and third["steps_timed"] == 2


@pytest.mark.slow
@pytest.mark.policy_training
def test_full_finetune_saves_full_weights(tmp_path):
    run_dir = make_run(tmp_path / "outputs" / "f", n_train=8, n_dev=0)
    cfg = _training(smoke_params(tmp_path / "outputs", run="f", full_finetune=True, sample_dev_questions=0),
                    max_steps=2, save_steps=10, learning_rate=1e-3)
    metrics = run_sft(cfg, StageRun(cfg, "sft").start())
    assert metrics["method"] == "full" and metrics["trainable_params"] == metrics["total_params"]
    assert (run_dir / "sft" / "model" / "model.safetensors").is_file()
    assert not (run_dir / "sft" / "adapter").exists()
    from nl2sql_lib.models import resolve_spec

    assert resolve_spec("stage:sft", run_dir=run_dir).path == run_dir / "sft" / "model"


def test_merge_adapter_saves_equivalent_full_weights(tmp_path):
    from nl2sql_lib.config import LoraParams
    from nl2sql_lib.models import load_model, resolve_spec
    from nl2sql_lib.train.sft import merge_adapter

    model, tokenizer = load_model(ModelParams(spec="tiny:smollm2", dtype="float32"),
                                  lora=LoraParams(r=4, dropout=0.0), for_training=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.eval()
    cfg = smoke_params(tmp_path, run="m")
    stage = StageRun(cfg, "sft").start()
    folder = merge_adapter(model, tokenizer, stage)
    assert hasattr(model, "peft_config")  # the PEFT model itself is left as it was
    merged, _ = load_model(ModelParams(spec="stage:sft", dtype="float32"), run_dir=cfg.run_dir)
    assert resolve_spec("stage:sft", run_dir=cfg.run_dir).path == Path(folder)
    ids = tokenizer("SELECT name FROM singer;", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- dev samples on the GPU


def test_before_samples_run_on_the_gpu_the_trainer_will_use(tmp_path, monkeypatch):
    """A full-precision training model loads on the CPU (the trainer places it); on a GPU machine
    the "before" dev samples must not generate there: it is moved to cuda:{LOCAL_RANK} first."""
    from nl2sql_lib import models
    from nl2sql_lib.train import sft

    make_run(tmp_path / "t", n_train=6, n_dev=2)
    cfg = smoke_params(tmp_path)
    monkeypatch.setattr(models, "detect_hardware", lambda: T4)  # run_sft and load_model read it
    monkeypatch.setattr(sft, "_is_main_process", lambda: True)
    real_load = models.load_model
    moves: list = []

    def loading(*args, **kwargs):
        model, tokenizer = real_load(*args, **kwargs)
        assert model.device.type == "cpu"  # device_map None for training
        model.to = lambda *to_args, **to_kwargs: moves.append(to_args) or model  # no real GPU here
        return model, tokenizer

    class Sampled(Exception):
        pass

    def sampling(model, *args, **kwargs):
        raise Sampled

    monkeypatch.setattr(models, "load_model", loading)
    monkeypatch.setattr(sft, "sample_answers", sampling)
    with pytest.raises(Sampled):
        run_sft(cfg, StageRun(cfg, "sft").start())
    assert moves == [("cuda:0",)]


def test_place_for_samples_moves_only_a_cpu_model_on_a_cuda_machine():
    from types import SimpleNamespace

    from nl2sql_lib.hardware import Hardware
    from nl2sql_lib.train.sft import place_for_samples

    def model_on(device_type: str):
        moves: list = []
        return SimpleNamespace(device=torch.device(device_type), to=lambda device: moves.append(device)), moves

    rank3 = Hardware(cuda=True, device_count=4, local_rank=3, world_size=4, name="NVIDIA A100", capability=(8, 0))
    on_cpu, moves = model_on("cpu")
    assert place_for_samples(on_cpu, rank3) == "cuda:3" and moves == ["cuda:3"]
    on_cpu, moves = model_on("cpu")
    assert place_for_samples(on_cpu, CPU) is None and moves == []  # a CPU machine: stays
    quantized, moves = model_on("meta")  # loaded onto its GPU already (meta: no CUDA here)
    assert place_for_samples(quantized, rank3) is None and moves == []


def test_sharded_launch_is_recognised(monkeypatch):
    """Under FSDP/DeepSpeed no process holds the whole model: dev samples are skipped, before and after."""
    from types import SimpleNamespace

    from nl2sql_lib.train.sft import sharded_training

    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    assert sharded_training(SimpleNamespace(fsdp=[], deepspeed=None)) is False
    assert sharded_training(SimpleNamespace(fsdp=["full_shard"], deepspeed=None)) is True
    assert sharded_training(SimpleNamespace(fsdp=[], deepspeed="ds_zero3.json")) is True
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharded_training() is True


# ---------------------------------------------------------------------------- linking prompts, shared


def test_eval_linking_engine_is_sized_by_what_predict_links_sends(run_dir, monkeypatch):
    """06_eval's linked systems size their vLLM engine with SFT's linking prompts and budget (one
    function and one constant in data/linking.py), so the two cannot drift apart."""
    from types import SimpleNamespace

    from nl2sql_lib.data import linking
    from nl2sql_lib.evaluate import systems

    examples = read_examples(run_dir / "data" / "dev.jsonl")[:2]
    monkeypatch.setattr(linking, "LINKING_MAX_NEW_TOKENS", 77)
    engines, asked = [], []

    class Linker:
        def generate(self, messages, *, max_new_tokens, desc=""):
            asked.append((messages, max_new_tokens))
            return [['{"tables": ["singer"], "columns": ["singer.name"]}'] for _ in messages]

    def factory(system, cfg, *, prompts=None, max_new_tokens=None):
        engines.append((system.task, prompts, max_new_tokens))
        return Linker()

    monkeypatch.setattr(systems, "default_generator_factory", factory)
    system = systems.System("sft", "stage:sft", linking_model="stage:linker")
    dataset = SimpleNamespace(name="dev")
    keeps = systems._predict_keeps(system, [(dataset, ex) for ex in examples], SimpleNamespace(use_vllm=True),
                                   factory)
    expected = linking.linking_prompts(examples, system.schema())
    assert engines == [("schema_linking", expected, 77)]
    assert asked == [(expected, 77)]
    assert all(keep == {"tables": ["singer"], "columns": ["singer.name"]} for keep in keeps.values())
