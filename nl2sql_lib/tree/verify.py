"""Verify a trees file (and its pairs): re-execute every node and check every invariant.

    python -m nl2sql_lib.tree.verify outputs/cpu/tree/trees.jsonl \\
        --db-root outputs/cpu/data/databases --out outputs/cpu/tree/verification.json \\
        --pairs outputs/cpu/tree/pairs_train.jsonl outputs/cpu/tree/pairs_test.jsonl

Checks, each a discrepancy kind in the report:

- ``structure``: node ids unique, each parent exists, roots at depth 0, each other node at its
  parent's depth + 1;
- ``label``: the stored ``correct`` equals a fresh execution judged against the gold result;
- ``distance``: stored distances to parent and gold equal freshly computed ones;
- ``duplicate_question``: a question id appears in two trees;
- ``pair_chosen`` / ``pair_rejected``: a pair's chosen SQL is not correct, or its rejected SQL is
  correct, on fresh execution; ``pair_question``: a pair's question has no tree;
  ``pair_same_sql``: both sides normalize to the same SQL; ``split_leak``: a question has pairs in
  more than one pairs file (train and test must be split by question).

A change of error kind with an unchanged label (a timeout on a loaded machine) is a *warning*,
not a discrepancy. The report: ``{"trees", "nodes", "pairs", "checked": {...}, "discrepancies":
[{"question_id", "kind", "detail"}...], "warnings": [...], "ok": bool}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..io import iter_jsonl, write_json
from .builder import _normalized, sql_distance
from .nodes import Tree, resolve_db_path, structure_problems


def _discrepancy(question_id: str, kind: str, detail: str) -> dict[str, str]:
    return {"question_id": str(question_id), "kind": kind, "detail": detail}


def verify_trees(
    trees: Sequence[Tree],
    *,
    db_root: str | Path | None = None,
    pairs_files: dict[str, list[dict[str, Any]]] | None = None,
    semantics: str = "bird",
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Re-execute and check ``trees`` (and pairs, by file name); return the report dict."""
    from ..sql.judge import Judge

    judge = Judge(semantics=semantics, timeout=timeout)
    discrepancies: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    checked = {"nodes_executed": 0, "pairs_executed": 0}
    by_question: dict[str, Tree] = {}
    db_of: dict[str, str] = {}

    for tree in trees:
        qid = tree.question_id
        if qid in by_question:
            discrepancies.append(_discrepancy(qid, "duplicate_question", "question id in more than one tree"))
        by_question[qid] = tree
        db_path = str(resolve_db_path(tree.db_id, tree.db_path, db_root))
        db_of[qid] = db_path
        for problem in structure_problems(tree):
            discrepancies.append(_discrepancy(qid, "structure", problem))
        sql_of = {n.id: n.sql for n in tree.nodes}
        for node in tree.nodes:
            verdict = judge.judge(db_path, tree.gold_sql, node.sql)
            checked["nodes_executed"] += 1
            fresh_error = getattr(verdict.pred.error, "value", str(verdict.pred.error))
            if bool(verdict.correct) != node.correct:
                discrepancies.append(
                    _discrepancy(
                        qid, "label",
                        f"node {node.id}: stored correct={node.correct}, fresh execution "
                        f"correct={verdict.correct} (error {fresh_error!r}) for SQL {node.sql!r}",
                    )
                )
            elif fresh_error != node.error:
                warnings.append(
                    _discrepancy(qid, "error_kind", f"node {node.id}: stored {node.error!r}, fresh {fresh_error!r}")
                )
            gold_distance = sql_distance(node.sql, tree.gold_sql)
            if node.dist_gold != gold_distance:
                discrepancies.append(
                    _discrepancy(qid, "distance", f"node {node.id}: dist_gold {node.dist_gold} != {gold_distance}")
                )
            if node.parent is not None and node.parent in sql_of:
                parent_distance = sql_distance(node.sql, sql_of[node.parent])
                if node.dist_parent != parent_distance:
                    discrepancies.append(
                        _discrepancy(
                            qid, "distance", f"node {node.id}: dist_parent {node.dist_parent} != {parent_distance}"
                        )
                    )

    n_pairs = 0
    files_of_question: dict[str, set[str]] = {}
    for name, pairs in (pairs_files or {}).items():
        for pair in pairs:
            n_pairs += 1
            qid = str(pair.get("question_id"))
            files_of_question.setdefault(qid, set()).add(name)
            tree = by_question.get(qid)
            if tree is None:
                discrepancies.append(_discrepancy(qid, "pair_question", f"{name}: pair's question has no tree"))
                continue
            chosen, rejected = pair.get("chosen", ""), pair.get("rejected", "")
            if _normalized(chosen) == _normalized(rejected):
                discrepancies.append(_discrepancy(qid, "pair_same_sql", f"{name}: chosen and rejected are the same SQL"))
            for side, sql, want in (("chosen", chosen, True), ("rejected", rejected, False)):
                verdict = judge.judge(db_of[qid], tree.gold_sql, sql)
                checked["pairs_executed"] += 1
                if bool(verdict.correct) != want:
                    discrepancies.append(
                        _discrepancy(
                            qid, f"pair_{side}",
                            f"{name}: {side} SQL is {'correct' if verdict.correct else 'wrong'} on fresh "
                            f"execution: {sql!r}",
                        )
                    )
    for qid, names in files_of_question.items():
        if len(names) > 1:
            discrepancies.append(_discrepancy(qid, "split_leak", f"pairs in {sorted(names)}"))

    counts: dict[str, int] = {}
    for item in discrepancies:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return {
        "trees": len(trees),
        "nodes": sum(len(t.nodes) for t in trees),
        "pairs": n_pairs,
        "checked": checked,
        "discrepancy_counts": counts,
        "discrepancies": discrepancies,
        "warnings": warnings,
        "ok": not discrepancies,
    }


def verify_files(
    trees_path: str | Path,
    *,
    db_root: str | Path | None,
    out: str | Path | None = None,
    pairs_paths: Sequence[str | Path] = (),
    semantics: str = "bird",
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Read a trees file (lines that do not parse are discrepancies), verify, write ``out``."""
    trees: list[Tree] = []
    unreadable: list[dict[str, str]] = []
    for number, record in enumerate(iter_jsonl(trees_path), start=1):
        try:
            trees.append(Tree.from_dict(record, origin=f"{trees_path}: line {number}"))
        except ValueError as exc:
            unreadable.append(_discrepancy(record.get("question_id"), "unreadable", str(exc)))
    pairs_files = {Path(p).name: list(iter_jsonl(p)) for p in pairs_paths}
    report = verify_trees(trees, db_root=db_root, pairs_files=pairs_files, semantics=semantics, timeout=timeout)
    if unreadable:
        report["discrepancies"] = unreadable + report["discrepancies"]
        report["discrepancy_counts"]["unreadable"] = len(unreadable)
        report["ok"] = False
    report["trees_file"] = str(trees_path)
    report["pairs_files"] = [str(p) for p in pairs_paths]
    if out is not None:
        write_json(out, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nl2sql_lib.tree.verify",
        description="Re-execute every node of a trees file and check the tree and pair invariants.",
    )
    parser.add_argument("trees", help="trees JSONL (one tree a line)")
    parser.add_argument("--db-root", required=True, help="folder holding <db_id>/<db_id>.sqlite")
    parser.add_argument("--out", required=True, help="where to write the JSON report")
    parser.add_argument("--pairs", nargs="*", default=[], help="pairs JSONL file(s) to check too")
    parser.add_argument("--semantics", choices=["bird", "spider"], default="bird")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per query")
    args = parser.parse_args(argv)
    report = verify_files(
        args.trees, db_root=args.db_root, out=args.out, pairs_paths=args.pairs,
        semantics=args.semantics, timeout=args.timeout,
    )
    print(
        f"{report['trees']} trees, {report['nodes']} nodes, {report['pairs']} pairs: "
        f"{len(report['discrepancies'])} discrepancies {report['discrepancy_counts']} -> {args.out}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
