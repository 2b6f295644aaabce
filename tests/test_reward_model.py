"""05_reward_model: pair files, pairwise accuracy, the scorer, and a smoke reward model.

The smoke model is the tiny random model trained on planted pairs that are easy to separate
(a well-formed SELECT against chatty garbage). It must rank held-out planted pairs correctly,
and a model trained on the same pairs with the sides swapped must rank them the other way:
that shows the ranking comes from the labels, not from a lucky random head.

The planted pairs name a database holding their tables, so the smoke model trains and scores
in the default format, with each SQL's execution outcome (tests/test_scoring.py checks that
text); the swapped-labels model trains on the plain prompt + SQL format.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from nl2sql_lib.config import load_params
from nl2sql_lib.evaluate.reward_model import (
    load_pairs,
    main as evaluate_main,
    pairwise_accuracy,
    summarize_pairs,
    pair_items,
)
from nl2sql_lib.io import DataFileError, read_json, read_jsonl, write_jsonl
from nl2sql_lib.runs import StageRun

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLES = ["singer", "concert", "stadium", "student", "teacher", "course", "car", "city", "airport", "flight"]
COLUMNS = ["name", "age", "year", "capacity", "price", "salary"]
GARBAGE = ["I am not sure what you mean.", "Sorry, no idea here!!", "the the the the", "maybe ask later?"]


def planted_database(path: Path) -> Path:
    """A database with every planted table, so planted SQL executes (and garbage fails)."""
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {', '.join(COLUMNS)})")
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                             [(i, *[i * 7 % 100 for _ in COLUMNS]) for i in range(1, 6)])
    return path


def planted_pairs(n: int, seed: int, *, swap: bool = False, db_path: Path | None = None) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        table, column, value = rng.choice(TABLES), rng.choice(COLUMNS), rng.randint(1, 99)
        prompt = [
            {"role": "system", "content": "You write SQLite queries."},
            {"role": "user", "content": f"Schema: {table}({column}, id)\n\nQuestion: which {column} of {table} is above {value}?"},
        ]
        good, bad = f"SELECT {column} FROM {table} WHERE {column} > {value};", rng.choice(GARBAGE)
        chosen, rejected = (bad, good) if swap else (good, bad)
        pairs.append({
            "prompt": prompt, "chosen": chosen, "rejected": rejected, "question_id": f"s{seed}-{i}",
            "difficulty": ["simple", "moderate"][i % 2], "reason": "planted", "margin": 1.0,
        })
        if db_path is not None:
            pairs[-1]["db_path"] = str(db_path)
    return pairs


def smoke_cfg(tmp_path: Path, name: str, train: list[dict], test: list[dict], **overrides):
    write_jsonl(tmp_path / f"{name}_train.jsonl", train)
    write_jsonl(tmp_path / f"{name}_test.jsonl", test)
    values = dict(
        run=name, output_root=str(tmp_path / "outputs"), pairs_source="tree",
        pairs_train=str(tmp_path / f"{name}_train.jsonl"), pairs_test=str(tmp_path / f"{name}_test.jsonl"),
        max_train_pairs=None, max_test_pairs=None,
    )
    values.update(overrides)
    cfg = load_params("reward_model", PROJECT_ROOT / "params/smoke/reward_model.yaml", **values)
    cfg.training.max_steps = 12
    cfg.training.per_device_train_batch_size = 8
    cfg.training.report_to = []
    return cfg


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def test_pairwise_accuracy_on_known_scores():
    items = pair_items([{}] * 4, [3.0, 1.0, 2.0, 0.5], [1.0, 2.0, 2.0, -1.0])
    assert pairwise_accuracy(items) == 0.5  # the tie is wrong
    assert pairwise_accuracy(pair_items([{}], [1.0], [0.0])) == 1.0
    assert pairwise_accuracy([]) is None


def test_summary_by_difficulty_and_gaps():
    pairs = [{"question_id": "a", "difficulty": "simple"}, {"question_id": "a", "difficulty": "simple"},
             {"question_id": "b", "difficulty": "challenging"}]
    items = pair_items(pairs, [2.0, 0.0, 1.0], [1.0, 1.0, -1.0])
    summary = summarize_pairs(items)
    assert summary["n"] == 3 and summary["n_questions"] == 2
    assert summary["pairwise_accuracy"] == round(2 / 3, 4)
    assert summary["by_difficulty"]["simple"] == {"n": 2, "pairwise_accuracy": 0.5}
    assert summary["by_difficulty"]["challenging"] == {"n": 1, "pairwise_accuracy": 1.0}
    assert [item["gap"] for item in items] == [1.0, -1.0, 2.0]


def test_load_pairs_names_file_line_and_field(tmp_path):
    good = planted_pairs(1, 0)[0]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [good, {k: v for k, v in good.items() if k != "rejected"}])
    with pytest.raises(DataFileError, match=r"pairs.jsonl: line 2: missing field\(s\) rejected"):
        load_pairs(path)
    write_jsonl(path, [{**good, "prompt": "not messages"}])
    with pytest.raises(DataFileError, match="line 1: field 'prompt'"):
        load_pairs(path)
    path.write_text("")
    with pytest.raises(DataFileError, match="no preference pairs"):
        load_pairs(path)


def test_tokenizer_pads_with_a_token_that_is_not_end_of_turn():
    """docs/cpu-notes.md, gotcha 9: SmolLM2 pads with <|im_end|>; the scorer must read the last real token."""
    from nl2sql_lib.models import load_tokenizer
    from nl2sql_lib.scoring import encode_conversation, prepare_tokenizer

    tokenizer = prepare_tokenizer(load_tokenizer("tiny:smollm2"))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    prompt = planted_pairs(1, 0)[0]["prompt"]
    ids, cut = encode_conversation(tokenizer, prompt, "SELECT 1;")
    assert not cut and tokenizer.pad_token_id not in ids
    assert tokenizer.eos_token_id in ids[-3:]  # the assistant's end of turn is at the very end
    short, cut = encode_conversation(tokenizer, prompt, "SELECT 1;", max_length=12)
    assert cut and short == ids[-12:]  # cut from the left: the SQL survives
    assert "SELECT" in tokenizer.decode(short)


# ---------------------------------------------------------------------------------------------
# Gold-perturbed pairs
# ---------------------------------------------------------------------------------------------


def test_perturbed_gold_pairs_are_wrong_and_formatted_alike(tmp_path):
    from nl2sql_lib.data.example import Example
    from nl2sql_lib.sql.judge import Judge
    from nl2sql_lib.train.gold_perturbations import perturbed_gold_pairs

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL, stock INTEGER)")
        conn.executemany("INSERT INTO item VALUES (?, ?, ?, ?)",
                         [(i, f"item{i}", 1.5 * i, 10 - i) for i in range(1, 9)])
    examples = [
        Example("q1", "shop", str(db), "Names of items cheaper than 5?", "SELECT name FROM item WHERE price < 5"),
        Example("q2", "shop", str(db), "Most expensive item?", "select name from item order by price desc limit 1"),
    ]
    pairs = perturbed_gold_pairs(examples, per_question=3, seed=0)
    assert {p["question_id"] for p in pairs} == {"q1", "q2"}
    judge = Judge()
    for pair in pairs:
        assert pair["reason"].startswith("perturbed:")
        assert judge.judge(str(db), examples[0].sql if pair["question_id"] == "q1" else examples[1].sql,
                           pair["chosen"]).correct
        verdict = judge.judge(str(db), pair["chosen"], pair["rejected"])
        assert not verdict.correct
        assert pair["margin"] == (1.0 if verdict.pred.ok else 2.0)
        assert pair["prompt"][-1]["content"].endswith(examples[0].question if pair["question_id"] == "q1" else examples[1].question)
    q2 = [p for p in pairs if p["question_id"] == "q2"]
    assert q2[0]["chosen"].startswith("SELECT name FROM item ORDER BY price DESC")  # both sides via sqlglot


# ---------------------------------------------------------------------------------------------
# A smoke reward model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from nl2sql_lib.train.reward_model import run_reward_model

    tmp_path = tmp_path_factory.mktemp("rm")
    db = planted_database(tmp_path / "planted.sqlite")
    cfg = smoke_cfg(tmp_path, "planted", planted_pairs(48, 0, db_path=db), planted_pairs(24, 1, db_path=db))
    assert cfg.execution_feedback  # the smoke profile's default
    stage = StageRun(cfg, "reward_model").start()
    metrics = run_reward_model(cfg, stage)
    stage.finish(metrics)
    return cfg, stage, metrics


@pytest.mark.slow
def test_smoke_reward_model_ranks_planted_pairs(trained):
    cfg, stage, metrics = trained
    assert metrics["pairwise_accuracy"] >= 0.9
    assert metrics["n"] == 24 and set(metrics["by_difficulty"]) == {"simple", "moderate"}
    assert metrics["train"]["steps"] == 12 and metrics["train"]["with_margin"] == 1
    saved = read_json(stage.dir / "metrics.json")
    assert saved["pairwise_accuracy"] == metrics["pairwise_accuracy"]
    assert read_json(stage.dir / "manifest.json")["metrics"]["pairwise_accuracy"] == metrics["pairwise_accuracy"]
    adapter = stage.dir / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "reward_model.json", "tokenizer_config.json",
                 "input_format.json"):
        assert (adapter / name).is_file(), name
    assert read_json(adapter / "input_format.json")["execution_feedback"] is True
    assert metrics["input_format"] == "prompt+sql+execution"
    assert metrics["pairs"]["execution"]["train"]["executed"] > 0
    tested = read_jsonl(stage.dir / "test_pairs.jsonl")  # the outcomes evaluated are kept
    assert tested[0]["rejected_exec"]["error"] != "ok" and tested[0]["chosen_exec"]["error"] == "ok"
    assert (stage.dir / "plots" / "score_gap.png").stat().st_size > 1000
    # The score head is saved with the adapter (modules_to_save), not left random.
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
        assert any(key.endswith("score.weight") for key in handle.keys())


@pytest.mark.slow
def test_swapped_labels_give_the_opposite_ranking(tmp_path):
    from nl2sql_lib.train.reward_model import run_reward_model

    cfg = smoke_cfg(tmp_path, "swapped", planted_pairs(48, 0, swap=True), planted_pairs(24, 1),
                    execution_feedback=False)  # the plain prompt + SQL format: no database needed
    metrics = run_reward_model(cfg, StageRun(cfg, "reward_model").start())
    assert metrics["pairwise_accuracy"] <= 0.1  # it learned garbage > SQL, as labelled
    assert metrics["input_format"] == "prompt+sql"
    assert read_json(cfg.run_dir / "reward_model" / "adapter" / "input_format.json")["execution_feedback"] is False


@pytest.mark.slow
def test_scorer_reloads_the_saved_model_and_batches_equal_singles(trained, tmp_path):
    import shutil

    from nl2sql_lib.scoring import INPUT_FORMAT_FILE, PLAIN_FORMAT, RewardScorer

    cfg, stage, _ = trained
    batched = RewardScorer.from_spec("stage:reward_model", run_dir=cfg.run_dir, batch_size=4)
    single = RewardScorer.from_spec(stage.dir / "adapter", batch_size=1)
    from_stage_folder = RewardScorer.from_spec(str(stage.dir), run_dir=cfg.run_dir, batch_size=2)  # as 06_eval calls it
    assert batched.input_format.execution_feedback and from_stage_folder.input_format == batched.input_format
    pair = read_jsonl(cfg.pairs_test)[0]
    db = pair["db_path"]
    sqls = [pair["chosen"], pair["rejected"], "SELECT 1;", "SELECT name FROM singer WHERE age > 30 ORDER BY name;", ""]
    a, b = batched.score(pair["prompt"], sqls, db_path=db), single.score(pair["prompt"], sqls, db_path=db)
    assert len(a) == len(sqls)
    assert a == pytest.approx(b, abs=1e-4)
    assert from_stage_folder.score(pair["prompt"], sqls, db_path=db) == pytest.approx(a, abs=1e-4)
    assert a[0] > a[1]
    # The stage's test scores are those of the saved model.
    first = read_jsonl(stage.dir / "test_scores.jsonl")[0]
    assert batched.score(pair["prompt"], [pair["chosen"]], db_path=db)[0] == pytest.approx(first["chosen_score"], abs=1e-3)
    # A model folder from before input_format.json existed is scored as prompt + SQL, as then.
    old = tmp_path / "old_adapter"
    shutil.copytree(stage.dir / "adapter", old)
    (old / INPUT_FORMAT_FILE).unlink()
    legacy = RewardScorer.from_spec(old, batch_size=4)
    assert legacy.input_format == PLAIN_FORMAT
    assert len(legacy.score(pair["prompt"], sqls)) == len(sqls)


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained, tmp_path):
    from nl2sql_lib.train.reward_model import run_reward_model

    cfg, stage, _ = trained
    again = cfg.model_copy(deep=True)
    again.training.max_steps = 14
    metrics = run_reward_model(again, StageRun(again, "reward_model").start())
    assert metrics["train"]["resumed_from"].endswith("checkpoint-12")
    assert metrics["train"]["steps"] == 14


@pytest.mark.slow
def test_evaluate_cli(trained, capsys, tmp_path):
    cfg, stage, metrics = trained
    pairs = cfg.pairs_test
    out = tmp_path / "eval.json"
    code = evaluate_main(["--model", "stage:reward_model", "--run-dir", str(cfg.run_dir),
                          "--pairs", pairs, "--batch-size", "3", "--out", str(out)])
    assert code == 0
    assert "pairwise accuracy" in capsys.readouterr().out
    assert read_json(out)["pairwise_accuracy"] == pytest.approx(metrics["pairwise_accuracy"], abs=0.05)
    code = evaluate_main(["--model", "stage:reward_model", "--run-dir", str(tmp_path / "nowhere"), "--pairs", pairs])
    assert code == 2
    assert "05_reward_model" in capsys.readouterr().err


def test_missing_tree_pairs_name_the_notebook(tmp_path):
    from nl2sql_lib.runs import MissingStageOutput
    from nl2sql_lib.train.reward_model import pairs_paths

    cfg = load_params("reward_model", PROJECT_ROOT / "params/smoke/reward_model.yaml", output_root=str(tmp_path))
    with pytest.raises(MissingStageOutput, match="04_revision_tree"):
        pairs_paths(cfg)


@pytest.mark.parametrize("profile", ["", "cpu/", "smoke/"])
def test_parameter_files_validate(profile):
    cfg = load_params("reward_model", PROJECT_ROOT / f"params/{profile}reward_model.yaml")
    assert cfg.training.max_length >= 128


@pytest.mark.slow
@pytest.mark.policy_training
def test_dpo_saves_a_policy_that_stage_dpo_loads(tmp_path):
    from nl2sql_lib.models import load_model, resolve_spec
    from nl2sql_lib.config import ModelParams
    from nl2sql_lib.train.dpo import dpo_dataset, run_dpo

    pairs = planted_pairs(8, 0)
    records = dpo_dataset(pairs)
    assert records[0]["prompt"] == pairs[0]["prompt"]  # explicit prompt (docs/cpu-notes.md, gotcha 8)
    assert records[0]["chosen"] == [{"role": "assistant", "content": pairs[0]["chosen"]}]
    cfg = smoke_cfg(tmp_path, "dpo", pairs, pairs, dpo=True, dpo_policy={"spec": "tiny:smollm2"},
                    dpo_training={"max_steps": 2, "per_device_train_batch_size": 4, "report_to": [],
                                  "max_length": 256, "save_steps": 2})
    metrics = run_dpo(cfg, StageRun(cfg, "reward_model").start(), pairs)
    assert metrics["steps"] == 2 and metrics["pairs"] == 8
    folder = cfg.run_dir / "dpo"
    assert (folder / "manifest.json").is_file() and (folder / "adapter" / "adapter_config.json").is_file()
    resolved = resolve_spec("stage:dpo", run_dir=cfg.run_dir)
    assert resolved.adapter_path == folder / "adapter" and resolved.base_spec == "tiny:smollm2"
    model, _ = load_model(ModelParams(spec="stage:dpo"), run_dir=cfg.run_dir)
    assert model is not None


def test_trailing_semicolon_does_not_change_the_encoding():
    from nl2sql_lib.models import load_tokenizer
    from nl2sql_lib.scoring import encode_conversation, prepare_tokenizer

    tokenizer = prepare_tokenizer(load_tokenizer("tiny:smollm2"))
    prompt = planted_pairs(1, 0)[0]["prompt"]
    a = encode_conversation(tokenizer, prompt, "SELECT 1")[0]
    assert a == encode_conversation(tokenizer, prompt, " SELECT 1 ;; ")[0]
    assert a != encode_conversation(tokenizer, prompt, "SELECT 2")[0]


@pytest.mark.slow
def test_full_finetuning_saves_model_folder_that_the_scorer_loads(tmp_path):
    from nl2sql_lib.scoring import RewardScorer
    from nl2sql_lib.train.reward_model import run_reward_model

    db = planted_database(tmp_path / "planted.sqlite")
    cfg = smoke_cfg(tmp_path, "full", planted_pairs(16, 0, db_path=db), planted_pairs(8, 1, db_path=db),
                    lora={"enabled": False})
    cfg.training.max_steps = 2
    cfg.training.learning_rate = 1e-4
    metrics = run_reward_model(cfg, StageRun(cfg, "reward_model").start())
    folder = cfg.run_dir / "reward_model" / "model"
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()
    scorer = RewardScorer.from_spec("stage:reward_model", run_dir=cfg.run_dir)
    pair = planted_pairs(1, 1, db_path=db)[0]
    assert scorer.input_format.execution_feedback  # read from model/input_format.json
    assert len(scorer.score(pair["prompt"], [pair["chosen"], pair["rejected"]], db_path=db)) == 2
    assert metrics["n"] == 8


def test_dpo_loads_the_policy_with_the_trainers_checkpointing_decision(tmp_path, stub_load_model):
    """As for GRPO: QLoRA's preparation must not turn on checkpointing that dpo_training turns off."""
    from nl2sql_lib.config import RewardModelParams
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.dpo import run_dpo
    from tests.conftest import ModelLoaded

    cfg = RewardModelParams(run="dpo", output_root=str(tmp_path), profile="smoke")
    for setting, expected in ((False, False), (True, True)):
        cfg.dpo_training.gradient_checkpointing = setting
        with pytest.raises(ModelLoaded):
            run_dpo(cfg, StageRun(cfg, "reward_model").start(), [])
        assert stub_load_model["gradient_checkpointing"] is expected
