"""Revision SFT (05_reward_model, revision_sft: true) and how 06_eval reports a revision round.

The records are checked on a real SQLite database: every "previous SQL" in a revision prompt
fails to run there, its error reads exactly as 06_eval's ``+revise`` shows it, and the answer
is the gold SQL. The smoke test trains the tiny model on them and 06_eval's system resolves it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nl2sql_lib.config import load_params
from nl2sql_lib.data.example import read_examples
from nl2sql_lib.data.prompts import NO_SQL_FEEDBACK, failure_feedback
from nl2sql_lib.io import write_jsonl
from nl2sql_lib.tree.nodes import Node, Tree
from tests.test_sft import make_run

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _tree(example, sqls: list[tuple[str, str]]) -> Tree:
    """A tree of root nodes with the given (sql, error kind) attempts."""
    nodes = [Node(id=i, parent=None, depth=0, sql=sql, error=error) for i, (sql, error) in enumerate(sqls)]
    return Tree(question_id=example.question_id, db_id=example.db_id, db_path=example.db_path,
                gold_sql=example.sql, question=example.question, nodes=nodes)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_run(tmp_path / "outputs" / "rev", n_train=12, n_dev=2)


def test_failure_feedback_is_the_error_or_none(run_dir):
    db = read_examples(run_dir / "data" / "train.jsonl")[0].db_path
    assert failure_feedback(db, "SELECT name FROM singer", timeout=2.0) is None
    assert failure_feedback(db, "SELECT nickname FROM singer", timeout=2.0) == \
        "error (no_such_column): no such column: nickname"
    assert failure_feedback(db, "SELEC name FROM singer", timeout=2.0) == 'error (syntax): near "SELEC": syntax error'
    assert failure_feedback(db, "  ", timeout=2.0) == NO_SQL_FEEDBACK
    # 81 rows: more than the check fetches, but the query runs, so it is not sent for revision
    assert failure_feedback(db, "SELECT 1 FROM singer AS a, singer AS b, singer AS c, singer AS d",
                            timeout=2.0) is None


def test_tree_records_take_failing_nodes_once_each_and_answer_with_gold(run_dir):
    from nl2sql_lib.train.revision_sft import tree_revision_records

    examples = read_examples(run_dir / "data" / "train.jsonl")
    first, second = examples[1], examples[2]
    trees = [
        _tree(first, [("SELECT nickname FROM singer", "no_such_column"),   # fails: kept
                      ("SELECT name FROM singer", "ok"),                     # runs: never a revision prompt
                      ("SELECT nickname FROM singer", "no_such_column"),   # the same SQL again: once
                      ("SELECT name FROM singers", "no_such_table"),       # fails: kept
                      ("SELECT age FROM nowhere", "no_such_table")]),      # over per_question=2
        _tree(second, [("SELECT name FROM singer", "ok")]),                # nothing fails: no record
    ]
    by_id = {ex.question_id: ex for ex in examples}
    records = tree_revision_records(trees, by_id, None, per_question=2, timeout=2.0)
    assert [r["question_id"] for r in records] == [first.question_id] * 2
    users = [r["prompt"][-1]["content"] for r in records]
    assert "Previous SQL:\nSELECT nickname FROM singer" in users[0]
    assert "Result: error (no_such_column): no such column: nickname" in users[0]
    assert "Previous SQL:\nSELECT name FROM singers" in users[1] and "no such table: singers" in users[1]
    assert all(r["completion"] == [{"role": "assistant", "content": first.sql + ";"}] for r in records)
    assert all(r["source"] == "tree" for r in records)
    # a question of a tree that data/train.jsonl does not hold is left out, not an error
    assert tree_revision_records(trees, {}, None, per_question=2, timeout=2.0) == []


def test_perturbed_records_show_gold_sql_made_to_fail(run_dir):
    from nl2sql_lib.train.revision_sft import perturbed_revision_records

    examples = read_examples(run_dir / "data" / "train.jsonl")
    records = perturbed_revision_records(examples, None, per_question=1, seed=0, timeout=2.0)
    assert records, "the edits of at least some gold queries must fail to run"
    by_id = {ex.question_id: ex for ex in examples}
    assert len({r["question_id"] for r in records}) == len(records)  # per_question=1
    for record in records:
        example = by_id[record["question_id"]]
        user = record["prompt"][-1]["content"]
        previous = user.split("Previous SQL:\n", 1)[1].split("\n\nResult: ", 1)[0]
        feedback = user.rsplit("\n\nResult: ", 1)[1]
        assert failure_feedback(example.db_path, previous, timeout=2.0) == feedback  # fails, as shown
        assert record["completion"][0]["content"] == example.sql + ";"


def _cfg(tmp_path, **overrides):
    values = dict(run="rev", output_root=str(tmp_path / "outputs"), pairs_source="tree", revision_sft=True,
                  revision_policy={"spec": "tiny:smollm2"}, revision_questions=4,
                  revision_training={"max_steps": 2, "per_device_train_batch_size": 4, "report_to": [],
                                     "max_length": 512, "save_steps": 2, "learning_rate": 1e-3})
    values.update(overrides)
    return load_params("reward_model", PROJECT_ROOT / "params/smoke/reward_model.yaml", **values)


def test_build_records_mixes_tree_perturbed_and_first_answers(run_dir, tmp_path):
    from nl2sql_lib.runs import StageRun
    from nl2sql_lib.train.revision_sft import build_revision_records

    examples = read_examples(run_dir / "data" / "train.jsonl")
    (run_dir / "tree").mkdir()
    write_jsonl(run_dir / "tree" / "trees.jsonl",
                [_tree(examples[0], [("SELECT nickname FROM singer", "no_such_column")]).to_dict()])
    cfg = _cfg(tmp_path)
    records, counts = build_revision_records(cfg, StageRun(cfg, "revision_sft").start())
    assert counts["tree"] == 1 and 1 <= counts["perturbed"] <= 2 * 4
    # one first-answer record per question that gave a revision record; the tree's question is not
    # sampled again for perturbed records
    assert counts["first_answer"] == counts["questions"] == len({r["question_id"] for r in records})
    perturbed_ids = {r["question_id"] for r in records if r["source"] == "perturbed"}
    assert examples[0].question_id not in perturbed_ids
    first = [r for r in records if r["source"] == "first_answer"]
    assert all("Previous SQL" not in r["prompt"][-1]["content"] for r in first)


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_revision_sft_saves_a_policy_that_eval_resolves(run_dir, tmp_path):
    from nl2sql_lib.config import EvalParams
    from nl2sql_lib.evaluate.systems import parse_system, resolve_systems
    from nl2sql_lib.models import resolve_spec
    from nl2sql_lib.runs import MissingStageOutput, StageRun
    from nl2sql_lib.train.revision_sft import run_revision_sft

    examples = read_examples(run_dir / "data" / "train.jsonl")
    (run_dir / "tree").mkdir()
    write_jsonl(run_dir / "tree" / "trees.jsonl",
                [_tree(ex, [("SELECT nickname FROM singer", "no_such_column")]).to_dict() for ex in examples[:3]])
    cfg = _cfg(tmp_path)
    metrics = run_revision_sft(cfg, StageRun(cfg, "reward_model").start())
    assert metrics["global_step"] == 2 and metrics["records"]["tree"] == 3
    assert metrics["records"]["trained"] == sum(metrics["records"][k] for k in ("tree", "perturbed", "first_answer"))
    folder = run_dir / "revision_sft"
    assert (folder / "manifest.json").is_file() and (folder / "adapter" / "adapter_config.json").is_file()
    assert metrics["format"] == "plain" and metrics["schema_render"]  # what 06_eval prompts it with
    assert resolve_spec("stage:revision_sft", run_dir=run_dir).base_spec == "tiny:smollm2"

    eval_cfg = EvalParams(run="rev", output_root=str(tmp_path / "outputs"),
                          systems=["sft+revise", "revision_sft+revise"], best_of_n_systems=[])
    system = parse_system("revision_sft+revise", eval_cfg)
    assert system.stage == "revision_sft" and system.revise
    # sft never ran in this folder: it is named as missing, revision_sft is found
    with pytest.raises(MissingStageOutput, match="'sft'"):
        resolve_systems(eval_cfg)
    found, _ = resolve_systems(eval_cfg.model_copy(update={"systems": ["revision_sft+revise"]}))
    assert [s.name for s in found] == ["revision_sft+revise"]


def test_a_reasoning_policy_is_refused_and_a_perturbed_record_has_no_semicolon(run_dir, tmp_path):
    from nl2sql_lib.io import write_json
    from nl2sql_lib.train.revision_sft import perturbed_revision_records, revision_schema

    cfg = _cfg(tmp_path, revision_policy={"spec": "stage:sft"})
    write_json(run_dir / "sft" / "metrics.json", {"format": "reasoning"})
    with pytest.raises(ValueError, match="reasoning format"):
        revision_schema(cfg)
    examples = read_examples(run_dir / "data" / "train.jsonl")
    for record in perturbed_revision_records(examples, None, per_question=2, seed=0, timeout=2.0):
        previous = record["prompt"][-1]["content"].split("Previous SQL:\n", 1)[1].split("\n\nResult: ", 1)[0]
        assert not previous.endswith(";")


def test_revision_summary_counts_revised_and_repaired():
    from nl2sql_lib.evaluate.stage import comparison_plan, revision_summary

    records = [{"revised": True}, {"revised": True}, {"revised": False}, {}]
    items = [{"correct": True}, {"correct": False}, {"correct": True}, {"correct": False}]
    assert revision_summary(records, items) == {"revised": 2, "repaired": 1, "repair_rate": 0.5}
    assert revision_summary([{"revised": False}], [{"correct": True}]) == \
        {"revised": 0, "repaired": 0, "repair_rate": None}
    plan = comparison_plan(["sft/greedy", "sft+revise/greedy", "revision_sft/greedy", "revision_sft+revise/greedy"])
    assert ("sft+revise/greedy", "revision_sft+revise/greedy") in plan
    assert ("sft/greedy", "revision_sft/greedy") in plan
    assert ("revision_sft/greedy", "revision_sft+revise/greedy") in plan


def test_report_shows_the_revision_round():
    from nl2sql_lib.evaluate.report import report_markdown

    entry = {"n": 4, "ex": 0.5, "revision": {"revised": 2, "repaired": 1, "repair_rate": 0.5}}
    text = report_markdown({"dev": {"sft+revise/greedy": entry, "sft/greedy": {"n": 4, "ex": 0.25}}})
    assert "### Revision on error" in text
    assert "| sft+revise/greedy | 2 | 1 | 50.0 |" in text
