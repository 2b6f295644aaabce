"""Pairwise evaluation of a reward model on preference pairs.

A pair is one prompt with a ``chosen`` SQL (correct, or better) and a ``rejected`` one. The
reward model gets the pair right when it scores chosen strictly above rejected. A tie counts as
wrong, so a model that gives every SQL the same score gets 0%, not 50%.

    python -m nl2sql_lib.evaluate.reward_model --model outputs/cpu/reward_model/adapter \\
        --pairs outputs/cpu/reward_model/test_pairs.jsonl --batch-size 8

Pair records (``tree/pairs_*.jsonl``): ``prompt`` (chat messages), ``chosen``, ``rejected``
(SQL), and optionally ``reason``, ``question_id``, ``difficulty``, ``margin``. A reward model
trained with execution feedback (its ``input_format.json``) also needs each side's execution
outcome: ``chosen_exec`` / ``rejected_exec`` (05_reward_model's ``test_pairs.jsonl`` has them),
else the pair's ``db_path``, else ``--run-dir``, whose ``data/*.jsonl`` and ``tree/trees.jsonl``
name each question's database; the SQL then runs there, read-only.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import DataFileError, iter_jsonl, write_json, write_jsonl

REQUIRED_PAIR_FIELDS = ("prompt", "chosen", "rejected")


# -------------------------------------------------------------------------------------------
# Pairs files
# -------------------------------------------------------------------------------------------


def validate_pair(record: dict[str, Any], origin: str) -> dict[str, Any]:
    """Check one pair record; the error names the file, line and field."""
    missing = [name for name in REQUIRED_PAIR_FIELDS if name not in record]
    if missing:
        raise DataFileError(f"{origin}: missing field(s) {', '.join(missing)} (a pair needs prompt, chosen, rejected)")
    prompt = record["prompt"]
    if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)):
        raise DataFileError(f"{origin}: field 'prompt' must be a non-empty list of chat messages {{role, content}}")
    for name in ("chosen", "rejected"):
        if not isinstance(record[name], str):
            raise DataFileError(f"{origin}: field {name!r} must be a SQL string, got {type(record[name]).__name__}")
    if record.get("margin") is not None and not isinstance(record["margin"], (int, float)):
        raise DataFileError(f"{origin}: field 'margin' must be a number")
    return record


def load_pairs(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and validate a pairs JSONL file (at most ``limit`` pairs, in file order)."""
    pairs = []
    for number, record in enumerate(iter_jsonl(path), start=1):
        pairs.append(validate_pair(record, f"{path}: line {number}"))
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise DataFileError(f"{path}: no preference pairs in the file")
    return pairs


def question_databases(*paths: str | Path) -> dict[str, str]:
    """``{question_id: db_path}`` from JSONL files of records with both (data/*.jsonl, trees.jsonl)."""
    found: dict[str, str] = {}
    for path in paths:
        if Path(path).is_file():
            for record in iter_jsonl(path):
                if record.get("question_id") is not None and record.get("db_path"):
                    found.setdefault(str(record["question_id"]), str(record["db_path"]))
    return found


def add_databases(pairs: Sequence[dict], databases: dict[str, str]) -> list[dict]:
    """Pairs with ``db_path`` filled in from ``databases`` where they had none (copies)."""
    out = []
    for pair in pairs:
        if not pair.get("db_path") and str(pair.get("question_id")) in databases:
            pair = {**pair, "db_path": databases[str(pair["question_id"])]}
        out.append(pair)
    return out


# -------------------------------------------------------------------------------------------
# Metrics
# -------------------------------------------------------------------------------------------


def pair_items(pairs: Sequence[dict], chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> list[dict]:
    """One record per pair: ids, scores, gap (chosen - rejected) and whether it was ranked right."""
    items = []
    for index, (pair, c, r) in enumerate(zip(pairs, chosen_scores, rejected_scores)):
        items.append({
            "index": index,
            "question_id": pair.get("question_id"),
            "difficulty": pair.get("difficulty") or "unknown",
            "reason": pair.get("reason"),
            "chosen_score": round(c, 5),
            "rejected_score": round(r, 5),
            "gap": round(c - r, 5),
            "correct": c > r,
            "chosen": pair.get("chosen"),
            "rejected": pair.get("rejected"),
        })
    return items


def summarize_pairs(items: Sequence[dict]) -> dict[str, Any]:
    """Overall and per-difficulty (and per-reason) pairwise accuracy, and the score gaps."""
    gaps = [item["gap"] for item in items]
    summary: dict[str, Any] = {
        "n": len(items),
        "pairwise_accuracy": pairwise_accuracy(items),
        "mean_gap": round(sum(gaps) / len(gaps), 5) if gaps else None,
        "median_gap": round(sorted(gaps)[len(gaps) // 2], 5) if gaps else None,
        "ties": sum(1 for g in gaps if g == 0),
        "n_questions": len({item["question_id"] for item in items if item["question_id"] is not None}),
    }
    for key, out_key in (("difficulty", "by_difficulty"), ("reason", "by_reason")):
        groups: dict[str, list[dict]] = defaultdict(list)
        for item in items:
            if item.get(key) is not None:
                groups[str(item[key])].append(item)
        if groups:
            summary[out_key] = {
                name: {"n": len(group), "pairwise_accuracy": pairwise_accuracy(group)} for name, group in sorted(groups.items())
            }
    return summary


def pairwise_accuracy(items: Iterable[dict]) -> float | None:
    """Fraction of :func:`pair_items` records ranked right (chosen strictly above rejected: a
    tie counts as wrong), to 4 decimals; None without pairs."""
    items = list(items)
    return round(sum(item["correct"] for item in items) / len(items), 4) if items else None


def evaluate_pairs(scorer: Any, pairs: Sequence[dict], *, progress: bool = False) -> tuple[dict, list[dict]]:
    """Score every pair's chosen and rejected SQL with ``scorer`` (a RewardScorer), in batches.

    Returns ``(summary, items)``: see :func:`summarize_pairs` and :func:`pair_items`.
    """
    prompts = [pair["prompt"] for pair in pairs]
    sqls = [pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs]
    # One call: the scorer sorts all 2n conversations by length, so batches pad little.
    fmt = getattr(scorer, "input_format", None)
    if fmt is not None and fmt.execution_feedback:
        from ..scoring import pair_outcomes

        chosen_outcomes, rejected_outcomes = pair_outcomes(pairs, fmt)
        scores = scorer.score_conversations(prompts + prompts, sqls, outcomes=chosen_outcomes + rejected_outcomes)
    else:
        scores = scorer.score_conversations(prompts + prompts, sqls)
    chosen, rejected = scores[: len(pairs)], scores[len(pairs) :]
    items = pair_items(pairs, chosen, rejected)
    return summarize_pairs(items), items


# -------------------------------------------------------------------------------------------
# Plots
# -------------------------------------------------------------------------------------------


def plot_pair_results(items: Sequence[dict], summary: dict, path: str | Path) -> Path:
    """Two panels: histogram of score gaps (chosen - rejected), accuracy by difficulty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    gaps = [item["gap"] for item in items]
    left.hist(gaps, bins=min(30, max(5, len(gaps) // 3)), color="#4c72b0")
    left.axvline(0, color="black", linewidth=1)
    left.set_title(f"score gap, chosen - rejected (n={len(gaps)})")
    left.set_xlabel("gap (right of 0: ranked correctly)")
    left.set_ylabel("pairs")
    groups = summary.get("by_difficulty", {})
    names = list(groups)
    right.bar(names, [groups[n]["pairwise_accuracy"] for n in names], color="#55a868")
    for x, name in enumerate(names):
        right.text(x, groups[name]["pairwise_accuracy"] + 0.02, f"n={groups[name]['n']}", ha="center", fontsize=8)
    right.axhline(summary["pairwise_accuracy"], color="black", linestyle="--", linewidth=1, label="overall")
    right.set_ylim(0, 1.1)
    right.set_title("pairwise accuracy by difficulty")
    right.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nl2sql_lib.evaluate.reward_model",
        description="Pairwise accuracy of a reward model on a preference-pairs JSONL file.",
    )
    parser.add_argument("--model", required=True, help="stage:reward_model (with --run-dir) or a reward model folder")
    parser.add_argument("--pairs", required=True, help="pairs JSONL (prompt, chosen, rejected[, difficulty, margin])")
    parser.add_argument("--batch-size", type=int, default=8, help="conversations per forward pass")
    parser.add_argument("--run-dir", default=None,
                        help="outputs/<run>: needed by stage: specs; its data/*.jsonl and tree/trees.jsonl "
                             "give pairs without db_path their database (execution-feedback models)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--max-length", type=int, default=None, help="token limit (default: the training one)")
    parser.add_argument("--out", default=None, help="write the summary JSON (and <out>.items.jsonl) here")
    args = parser.parse_args(argv)

    from ..scoring import RewardModelNotFound, RewardScorer

    try:
        pairs = load_pairs(args.pairs, limit=args.limit)
        if args.run_dir:
            run = Path(args.run_dir)
            pairs = add_databases(pairs, question_databases(
                run / "data" / "train.jsonl", run / "data" / "dev.jsonl", run / "tree" / "trees.jsonl"))
        scorer = RewardScorer.from_spec(
            args.model, run_dir=args.run_dir, batch_size=args.batch_size, max_length=args.max_length
        )
        summary, items = evaluate_pairs(scorer, pairs)
    except (DataFileError, RewardModelNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pairs: {summary['n']}  pairwise accuracy: {summary['pairwise_accuracy']:.3f}  mean gap: {summary['mean_gap']}")
    for name, group in summary.get("by_difficulty", {}).items():
        print(f"  {name:<12} n={group['n']:<5} accuracy={group['pairwise_accuracy']:.3f}")
    if args.out:
        write_json(args.out, summary)
        write_jsonl(Path(args.out).with_suffix(".items.jsonl"), items)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
