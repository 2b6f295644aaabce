"""Execution accuracy and friends over a list of questions.

    items = score_items(examples, predictions, judge)   # one dict per question, in order
    summary = summarize(items)                           # n, ex, by_difficulty, by_db, errors, ...

Each item records why a miss is a miss (``error``): the prediction's execution error class
(``syntax``, ``no_such_table``, ``no_such_column``, ``timeout``, ``too_many_rows``,
``forbidden``, ``empty``, ``other``), ``wrong_result`` when it ran but its rows differ, or
``gold_failed`` when the gold query itself could not run (a data problem, counted as a miss so
it stays visible). Correct items have ``error`` None.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

from ..data.example import Example
from ..sql.parse import COMPONENTS, component_scores, exact_match, partial_match_score

__all__ = ["score_items", "score_item", "summarize", "WRONG_RESULT", "GOLD_FAILED"]

WRONG_RESULT = "wrong_result"
GOLD_FAILED = "gold_failed"


def miss_reason(verdict) -> str | None:
    """The error taxonomy label of one verdict (None when correct)."""
    if verdict.correct:
        return None
    if not verdict.gold.ok:
        return GOLD_FAILED
    if not verdict.pred.ok:
        return verdict.pred.error.value
    return WRONG_RESULT


def score_item(index: int, example: Example, pred_sql: str, judge, *, components: bool = True) -> dict[str, Any]:
    """Judge one prediction and describe it as a JSON-ready record."""
    verdict = judge.judge(example.db_path, example.sql, pred_sql)
    item: dict[str, Any] = {
        "index": index,
        "question_id": example.question_id,
        "db_id": example.db_id,
        "difficulty": example.difficulty,
        "correct": bool(verdict.correct),
        "error": miss_reason(verdict),
        "message": "" if verdict.correct else (verdict.gold.message if not verdict.gold.ok else verdict.pred.message),
        "pred_sql": pred_sql,
    }
    if components:
        item["exact_match"] = exact_match(pred_sql, example.sql)
        item["partial"] = partial_match_score(pred_sql, example.sql)
        item["components"] = component_scores(pred_sql, example.sql)
    return item


def score_items(
    examples: Sequence[Example], predictions: Sequence[str], judge, *, components: bool = True
) -> list[dict[str, Any]]:
    """One record per question: index, question_id, db_id, difficulty, correct, error, pred_sql, ..."""
    if len(examples) != len(predictions):
        raise ValueError(
            f"score_items: {len(predictions)} predictions for {len(examples)} examples; "
            "there must be exactly one prediction per example, in the same order"
        )
    return [
        score_item(i, ex, pred or "", judge, components=components)
        for i, (ex, pred) in enumerate(zip(examples, predictions))
    ]


def _rate(items: list[dict]) -> dict[str, float | int]:
    n = len(items)
    return {"n": n, "ex": (sum(1 for it in items if it["correct"]) / n) if n else 0.0}


def _group(items: Iterable[dict], key: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        groups[str(item.get(key, "unknown"))].append(item)
    return {name: _rate(group) for name, group in sorted(groups.items())}


def summarize(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"n", "ex", "by_difficulty": {d: {"n", "ex"}}, "by_db": {...}, "errors": {kind: count}}``.

    When the items carry them, also ``exact_match`` and ``partial`` (means) and ``components``
    (mean F1 per clause).
    """
    items = list(items)
    summary: dict[str, Any] = _rate(items)
    summary["by_difficulty"] = _group(items, "difficulty")
    summary["by_db"] = _group(items, "db_id")
    errors = Counter(it["error"] for it in items if not it["correct"] and it.get("error"))
    summary["errors"] = dict(errors.most_common())
    scored = [it for it in items if "components" in it]
    if scored:
        n = len(scored)
        summary["exact_match"] = sum(bool(it["exact_match"]) for it in scored) / n
        summary["partial"] = sum(it["partial"] for it in scored) / n
        summary["components"] = {c: sum(it["components"][c] for it in scored) / n for c in COMPONENTS}
    return summary
