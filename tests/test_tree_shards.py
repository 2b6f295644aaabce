"""Sharded tree building: split, resume, merge; a SIGKILLed run resumes without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nl2sql_lib.io import write_jsonl
from nl2sql_lib.tree.builder import BuildSettings, ScriptedPolicy
from nl2sql_lib.tree.shards import merge_shards, read_shard, read_trees, run_sharded, split_round_robin
from tests.test_tree_support import make_shop_db, numbered_examples

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SETTINGS = BuildSettings(num_roots=2, num_revisions=1, max_depth=1, chunk_questions=1)


def numbered_policy(count: int, delay: float = 0.0) -> ScriptedPolicy:
    """Every question's roots are wrong once and right once; the wrong one is revised right."""
    return ScriptedPolicy(
        roots={f"Question {i}: how many items?": ["SELECT count(*) FROM item", "SELECT count(*) FROM items"]
               for i in range(count)},
        revisions={"SELECT count(*) FROM item": ["SELECT count(id) FROM items"]},
        delay=delay,
    )


def ids_in(path) -> list[str]:
    return [r["question_id"] for r in read_shard(path)[0]]


def test_round_robin_split():
    assert split_round_robin(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]


def test_single_worker_resume_skips_done_questions_and_repairs_a_cut_line(tmp_path):
    db = make_shop_db(tmp_path)
    examples = numbered_examples(db, 5)
    paths = run_sharded(examples[:3], numbered_policy(5), SETTINGS, tmp_path / "shards", workers=1)
    # Same run extended? No: a different question list is a different run and starts over.
    assert ids_in(paths[0]) == ["n0", "n1", "n2"]
    policy = numbered_policy(5)
    run_sharded(examples[:3], policy, SETTINGS, tmp_path / "shards", workers=1)
    assert policy.calls == [] and ids_in(paths[0]) == ["n0", "n1", "n2"]  # all done: nothing to do
    # A kill can cut the last line: it is dropped and that question is built again.
    text = paths[0].read_text().splitlines(keepends=True)
    paths[0].write_text("".join(text[:2]) + text[2][: len(text[2]) // 2])
    policy = numbered_policy(5)
    run_sharded(examples[:3], policy, SETTINGS, tmp_path / "shards", workers=1)
    assert ids_in(paths[0]) == ["n0", "n1", "n2"] and len(policy.calls) == 2  # n2: roots + revision
    assert read_shard(paths[0])[1] == 0
    # resume=False starts over.
    policy = numbered_policy(5)
    run_sharded(examples[:3], policy, SETTINGS, tmp_path / "shards", workers=1, resume=False)
    assert len(policy.calls) == 6


def test_merge_validates_deduplicates_and_orders(tmp_path):
    db = make_shop_db(tmp_path)
    examples = numbered_examples(db, 4)
    paths = run_sharded(examples, numbered_policy(4), SETTINGS, tmp_path / "shards", workers=1)
    records = read_shard(paths[0])[0]
    broken = dict(records[1], question_id="bad", nodes=[dict(records[1]["nodes"][1], parent=7, depth=1)])
    extra = tmp_path / "extra.jsonl"
    write_jsonl(extra, [records[0], broken])  # a duplicate of n0 and a tree with a missing parent
    summary = merge_shards([extra, paths[0]], tmp_path / "trees.jsonl", order=["n3", "n2", "n1", "n0", "n9"])
    assert [t.question_id for t in read_trees(tmp_path / "trees.jsonl")] == ["n3", "n2", "n1", "n0"]
    assert summary["duplicates_dropped"] == 1 and summary["missing"] == ["n9"]
    assert [i["question_id"] for i in summary["invalid"]] == ["bad"]
    assert "parent 7 does not exist" in summary["invalid"][0]["problem"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nl2sql_lib.data.example import read_examples
    from nl2sql_lib.tree.shards import run_sharded
    from tests.test_tree_shards import SETTINGS, numbered_policy

    if __name__ == "__main__":
        examples = read_examples(sys.argv[1])
        run_sharded(examples, numbered_policy(len(examples), delay=0.4), SETTINGS, Path(sys.argv[2]), workers=2)
    """
)


def test_sigkilled_sharded_run_resumes_without_duplicates_or_loss(tmp_path):
    db = make_shop_db(tmp_path)
    examples = numbered_examples(db, 12)
    write_jsonl(tmp_path / "questions.jsonl", examples)
    (tmp_path / "run_shards.py").write_text(KILL_SCRIPT)
    shard_dir = tmp_path / "shards"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "run_shards.py"), str(tmp_path / "questions.jsonl"), str(shard_dir)],
        cwd=PROJECT_ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    shard_files = [shard_dir / "shard-00-of-02.jsonl", shard_dir / "shard-01-of-02.jsonl"]
    deadline = time.time() + 120
    try:
        # Kill the whole process group (parent and both workers) once both shards have progress.
        while time.time() < deadline:
            done = [len(ids_in(p)) for p in shard_files]
            if min(done) >= 2:
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = {p.name: ids_in(p) for p in shard_files}
    lines_before = {p.name: p.read_text().splitlines()[: len(before[p.name])] for p in shard_files}
    total_before = sum(len(v) for v in before.values())
    assert 4 <= total_before < 12, f"the kill should land midway, got {before}"

    # Resume in this process's children: only the missing questions are built.
    run_sharded(examples, numbered_policy(12), SETTINGS, shard_dir, workers=2)
    after = {p.name: ids_in(p) for p in shard_files}
    for name, ids in after.items():
        assert len(ids) == len(set(ids)), f"{name} has duplicates: {ids}"
        assert ids[: len(before[name])] == before[name]  # finished trees kept as they were
        assert Path(shard_dir / name).read_text().splitlines()[: len(before[name])] == lines_before[name]
    assert sorted(after["shard-00-of-02.jsonl"]) == sorted(f"n{i}" for i in range(0, 12, 2))
    assert sorted(after["shard-01-of-02.jsonl"]) == sorted(f"n{i}" for i in range(1, 12, 2))

    summary = merge_shards(shard_files, tmp_path / "trees.jsonl", order=[e.question_id for e in examples])
    trees = read_trees(tmp_path / "trees.jsonl")
    assert [t.question_id for t in trees] == [e.question_id for e in examples]
    assert summary["duplicates_dropped"] == 0 and summary["invalid"] == [] and summary["missing"] == []
    assert all(len(t.nodes) == 3 and t.solved for t in trees)
    assert json.loads((shard_dir / "run.json").read_text())["workers"] == 2


class DecidingPolicySource:
    """A policy source whose build(), in each worker process, takes a hardware decision as loading
    a model does (models.from_pretrained_kwargs logs dtype, attention and placement)."""

    def build(self, worker_index: int):
        from nl2sql_lib import hardware

        hardware.log_decisions(hardware.Decision("device_map", {"": 0}, "inference on local rank 0's GPU (cuda:0)"))
        return numbered_policy(12)

    def describe(self) -> str:
        return "deciding"


def test_worker_hardware_decisions_reach_the_parents_record(tmp_path):
    """With workers > 1 the model loads in spawned processes; the decisions they take are handed
    back and recorded in the parent, which writes the stage's manifest (runs.hardware_record)."""
    from nl2sql_lib import hardware

    db = make_shop_db(tmp_path)
    examples = numbered_examples(db, 4)
    hardware.reset_decisions()
    try:
        run_sharded(examples, DecidingPolicySource(), SETTINGS, tmp_path / "shards", workers=2)
        recorded = hardware.recorded_decisions()
    finally:
        hardware.reset_decisions()
    assert recorded == [{"what": "device_map", "choice": {"": 0}, "downgraded": False,
                         "reason": "inference on local rank 0's GPU (cuda:0) (tree shard workers)"}]
