"""The verifier: a clean trees file passes; planted faults are each reported with their question."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nl2sql_lib.io import write_jsonl
from nl2sql_lib.sql.judge import Judge
from nl2sql_lib.tree.builder import BuildSettings, build_trees
from nl2sql_lib.tree.pairs import PairRules, pairs_for_trees
from nl2sql_lib.tree.verify import verify_files, verify_trees
from tests.test_tree_builder import SCRIPT
from tests.test_tree_support import make_shop_db, schema_text, shop_examples


@pytest.fixture()
def clean(tmp_path):
    db = make_shop_db(tmp_path / "dbs")
    trees = build_trees(
        shop_examples(db), SCRIPT, Judge(), schema_text, BuildSettings(num_roots=2, num_revisions=2, max_depth=2)
    )
    pairs = pairs_for_trees(trees, PairRules())
    assert pairs, "the scripted trees must yield pairs for these tests to mean anything"
    return trees, pairs, tmp_path


def kinds(report):
    return [(d["question_id"], d["kind"]) for d in report["discrepancies"]]


def test_clean_trees_and_pairs_pass(clean):
    trees, pairs, _ = clean
    report = verify_trees(trees, pairs_files={"pairs.jsonl": pairs})
    assert report["ok"] and report["discrepancies"] == []
    assert report["nodes"] == sum(len(t.nodes) for t in trees) == report["checked"]["nodes_executed"]
    assert report["pairs"] == len(pairs) and report["checked"]["pairs_executed"] == 2 * len(pairs)


def test_planted_wrong_label_is_caught(clean):
    trees, _, _ = clean
    trees[0].nodes[3].correct = True  # "SELECT id FROM items" is wrong
    report = verify_trees(trees)
    assert not report["ok"] and kinds(report) == [("q1", "label")]
    assert "node 3" in report["discrepancies"][0]["detail"]


def test_missing_parent_is_caught(clean):
    trees, _, _ = clean
    del trees[1].nodes[2]  # node 2 of q2 is the parent of nodes 4 and 5
    report = verify_trees(trees)
    assert kinds(report) == [("q2", "structure"), ("q2", "structure")]
    assert all("parent 2 does not exist" in d["detail"] for d in report["discrepancies"])


def test_wrong_depth_and_distance_are_caught(clean):
    trees, _, _ = clean
    trees[0].nodes[4].depth = 1
    trees[0].nodes[2].dist_parent = 99
    report = verify_trees(trees)
    assert sorted(kinds(report)) == [("q1", "distance"), ("q1", "structure")]


def test_pair_whose_chosen_is_wrong_is_caught(clean):
    trees, pairs, _ = clean
    bad = dict(pairs[0], chosen="SELECT id FROM items;")
    report = verify_trees(trees, pairs_files={"pairs_train.jsonl": pairs + [bad]})
    assert kinds(report) == [(bad["question_id"], "pair_chosen")]
    leak = verify_trees(trees, pairs_files={"train": pairs[:1], "test": pairs[:1]})
    assert kinds(leak) == [(pairs[0]["question_id"], "split_leak")]


def test_cli_writes_the_report_and_fails_on_discrepancies(clean):
    trees, pairs, tmp_path = clean
    trees_path, pairs_path, out = tmp_path / "trees.jsonl", tmp_path / "pairs.jsonl", tmp_path / "report.json"
    # Stored paths point nowhere: the CLI must find the databases under --db-root.
    for tree in trees:
        tree.db_path = "/nonexistent/shop.sqlite"
    write_jsonl(trees_path, trees)
    write_jsonl(pairs_path, pairs)
    command = [sys.executable, "-m", "nl2sql_lib.tree.verify", str(trees_path), "--db-root",
               str(tmp_path / "dbs"), "--out", str(out), "--pairs", str(pairs_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["ok"] is True

    trees[2].nodes[0].correct = True
    write_jsonl(trees_path, trees)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())
    assert done.returncode == 1 and kinds(report) == [("q3", "label")]
    assert verify_files(trees_path, db_root=tmp_path / "dbs")["discrepancy_counts"] == {"label": 1}
