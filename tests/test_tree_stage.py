"""run_tree end to end on a tiny run folder: artifacts, metrics, resume, the model policy path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_lib.config import TreeParams, load_params
from nl2sql_lib.data.example import write_examples
from nl2sql_lib.data.prompts import sql_messages
from nl2sql_lib.io import read_jsonl
from nl2sql_lib.runs import MissingStageOutput, StageRun
from nl2sql_lib.tree.builder import ScriptedPolicy
from nl2sql_lib.tree.stage import policy_uses_reasoning, run_tree, schema_params_for, subsample
from nl2sql_lib.tree.shards import SchemaTextSource
from tests.test_tree_builder import SCRIPT
from tests.test_tree_support import make_shop_db, shop_examples

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_run(tmp_path, **params) -> TreeParams:
    db = make_shop_db(tmp_path / "dbs")
    write_examples(tmp_path / "outputs" / "t" / "data" / "train.jsonl", shop_examples(db))
    values = dict(run="t", output_root=str(tmp_path / "outputs"), num_roots=2, num_revisions=2, max_depth=2)
    return TreeParams(**{**values, **params})


def test_run_tree_writes_every_artifact_with_exact_metrics(tmp_path):
    cfg = make_run(tmp_path)
    stage = StageRun(cfg, "tree").start()
    policy = ScriptedPolicy(roots=SCRIPT.roots, revisions=SCRIPT.revisions)
    metrics = run_tree(cfg, stage, policy=policy)
    stage.finish(metrics)
    out = tmp_path / "outputs" / "t" / "tree"
    for name in ("trees.jsonl", "pairs_train.jsonl", "pairs_test.jsonl", "verification.json", "manifest.json"):
        assert (out / name).is_file(), name
    assert metrics["questions"] == 3 and metrics["nodes"] == 16
    assert metrics["repair_by_depth"] == {
        "0": {"roots": 6, "correct": 1, "accuracy": round(1 / 6, 4)},
        "1": {"revised": 3, "repaired": 2, "repair_rate": round(2 / 3, 4), "revisions": 6, "correct": 2,
              "revision_accuracy": round(2 / 6, 4)},
        "2": {"revised": 2, "repaired": 1, "repair_rate": 0.5, "revisions": 4, "correct": 2,
              "revision_accuracy": 0.5},
    }
    assert metrics["questions_solved_at_root"] == 1 and metrics["questions_solved_only_by_revision"] == 1
    train, test = read_jsonl(out / "pairs_train.jsonl"), read_jsonl(out / "pairs_test.jsonl")
    assert len(train) + len(test) == 9 == metrics["pairs_train"] + metrics["pairs_test"]
    assert {p["question_id"] for p in test} and not {p["question_id"] for p in train} & {p["question_id"] for p in test}
    verification = json.loads((out / "verification.json").read_text())
    assert verification["ok"] and verification["pairs"] == 9 and verification["nodes"] == 16
    # Each pair's prompt is exactly the SFT prompt of its question.
    examples = {e.question_id: e for e in shop_examples(tmp_path / "dbs" / "shop" / "shop.sqlite")}
    schema = SchemaTextSource(schema_params_for(cfg).model_dump(mode="json"))
    for pair in train + test:
        example = examples[pair["question_id"]]
        assert pair["prompt"] == sql_messages(example, schema(example))

    # A second run resumes from the shards: no generation at all, same trees.
    again = ScriptedPolicy(roots=SCRIPT.roots, revisions=SCRIPT.revisions)
    before = (out / "trees.jsonl").read_text()
    assert run_tree(cfg, StageRun(cfg, "tree").start(), policy=again)["nodes"] == 16
    assert again.calls == [] and (out / "trees.jsonl").read_text() == before


def test_missing_train_file_names_the_notebook_to_run(tmp_path):
    cfg = TreeParams(run="none", output_root=str(tmp_path))
    with pytest.raises(MissingStageOutput, match="01_data"):
        run_tree(cfg, StageRun(cfg, "tree").start(), policy=SCRIPT)


def test_subsample_is_seeded_and_keeps_file_order():
    items = list(range(20))
    assert subsample(items, 5, 0) == subsample(items, 5, 0) == sorted(subsample(items, 5, 0))
    assert len(subsample(items, 5, 0)) == 5 and subsample(items, None, 0) == items


def test_profile_parameter_files_are_valid():
    for profile in ("params/tree.yaml", "params/cpu/tree.yaml", "params/smoke/tree.yaml"):
        cfg = load_params("tree", PROJECT_ROOT / profile)
        assert cfg.policy.spec


@pytest.mark.slow
def test_run_tree_with_the_tiny_model_policy(tmp_path):
    cfg = make_run(tmp_path, policy={"spec": "tiny:smollm2"}, num_roots=2, num_revisions=1, max_depth=1,
                   max_new_tokens=12, max_questions=2)
    metrics = run_tree(cfg, StageRun(cfg, "tree").start())
    assert metrics["questions"] == 2 and metrics["verification"]["ok"]
    assert metrics["nodes_by_depth"]["0"] == 4


def test_prompt_settings_follow_what_the_policy_stage_trained(tmp_path):
    cfg = TreeParams(run="r", output_root=str(tmp_path))
    assert schema_params_for(cfg).style == "create_table" and not policy_uses_reasoning(cfg)
    data = tmp_path / "r" / "data" / "manifest.json"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"parameters": {"schema_render": {"style": "compact", "max_tokens": 300}}}))
    assert schema_params_for(cfg).max_tokens == 300
    sft = tmp_path / "r" / "sft" / "metrics.json"
    sft.parent.mkdir(parents=True)
    sft.write_text(json.dumps({"format": "reasoning", "schema_render": {"style": "compact", "sample_values": 0}}))
    assert schema_params_for(cfg).sample_values == 0 and policy_uses_reasoning(cfg)
    cfg.schema_render = {"style": "create_table"}  # validated on assignment
    assert schema_params_for(cfg).style == "create_table"


def test_command_line_runs_the_stage_with_overrides(tmp_path):
    import subprocess
    import sys

    make_run(tmp_path)
    command = [sys.executable, "-m", "nl2sql_lib.tree", "--params", "params/smoke/tree.yaml", "--run", "t",
               "--output-root", str(tmp_path / "outputs"), "--set", "policy.spec=tiny:smollm2",
               "--set", "max_questions=2"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["questions"] == 2 and summary["verification"]["ok"]
    manifest = json.loads((tmp_path / "outputs" / "t" / "tree" / "manifest.json").read_text())
    assert manifest["parameters"]["policy"]["spec"] == "tiny:smollm2"


def test_vllm_context_covers_root_and_revision_prompts(tmp_path):
    """With vLLM, each worker's engine is sized for the stage's longest prompt: root prompts and
    revision prompts (the frame here, plus headroom for the previous SQL and its feedback)."""
    from nl2sql_lib.data.prompts import revision_messages
    from nl2sql_lib.tree.stage import engine_context, model_policy_source

    cfg = make_run(tmp_path, use_vllm=True, max_new_tokens=96)
    examples = shop_examples(tmp_path / "dbs" / "shop" / "shop.sqlite")
    schema = SchemaTextSource(schema_params_for(cfg).model_dump(mode="json"))
    context = engine_context(cfg, examples, schema)
    assert context.max_new_tokens == 96
    assert context.headroom_tokens == 96 + 300 + 16  # the SQL, the feedback (cut to 300 characters), slack
    assert len(context.prompts) == 2 * len(examples)
    assert revision_messages(examples[0], schema(examples[0]), "", "") in context.prompts
    assert sql_messages(examples[0], schema(examples[0])) in context.prompts
    assert model_policy_source(cfg, examples, schema).context == context
    # roots only (max_depth 0): no revision headroom; without vLLM: no context at all
    assert engine_context(cfg.model_copy(update={"max_depth": 0}), examples, schema).headroom_tokens == 0
    assert model_policy_source(cfg.model_copy(update={"use_vllm": False}), examples, schema).context is None
