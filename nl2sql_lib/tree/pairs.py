"""Preference pairs from revision trees: chosen is a correct node, rejected a wrong one.

The rules (``TreeParams.pair_rules``, applied in the order given, and documented here):

``revision``
    A wrong node and a correct node that revises it directly (its child). The pair a policy
    learns most from: the same attempt before and after the execution feedback fixed it.
``hard_negative``
    A wrong node close to a correct node of the same question: token edit distance (on
    sqlglot-normalized tokens) at most ``hard_negative_max_distance``, closest first. These
    teach a reward model the small differences that decide correctness.
``other``
    Any remaining correct/wrong combination of the question, closest first.

Always, whatever the rules:

- both SQLs are non-empty, and the two sides of a pair are from the same question;
- nodes are deduplicated by normalized SQL first (``normalize_sql``): one representative per
  distinct query, so no pair repeats and no pair has the same query on both sides;
- at most ``max_pairs_per_question`` pairs per question, taken in rule order;
- chosen and rejected are written as the SFT target is (``finish_sql``: one statement, one ``;``);
- ``margin`` is 1.0 when the rejected SQL executes (a wrong result) and 2.0 when it fails to
  execute: a reward model may separate broken SQL more than subtly wrong SQL.

Pairs are split into train and test *by question* (:func:`split_by_question`): every pair of a
question lands on the same side.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..data.prompts import finish_sql
from .builder import _normalized, sql_distance
from .nodes import Node, Tree

PAIR_RULES = ("revision", "hard_negative", "other")


@dataclass(frozen=True)
class PairRules:
    rules: tuple[str, ...] = PAIR_RULES
    hard_negative_max_distance: int = 6
    max_pairs_per_question: int = 8

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in PAIR_RULES]
        if unknown:
            raise ValueError(f"pair_rules: unknown rule(s) {unknown}; known: {', '.join(PAIR_RULES)}")

    @classmethod
    def from_params(cls, params: Any) -> "PairRules":
        return cls(
            rules=tuple(getattr(params, "pair_rules", PAIR_RULES)),
            hard_negative_max_distance=getattr(params, "hard_negative_max_distance", 6),
            max_pairs_per_question=params.max_pairs_per_question,
        )


def _representatives(nodes: Iterable[Node]) -> dict[str, Node]:
    """One node per distinct normalized non-empty SQL: the first (lowest id) that wrote it."""
    chosen: dict[str, Node] = {}
    for node in sorted(nodes, key=lambda n: n.id):
        if not node.sql.strip():
            continue
        chosen.setdefault(_normalized(node.sql), node)
    return chosen


def select_pairs(tree: Tree, rules: PairRules) -> list[dict[str, Any]]:
    """The pairs of one tree, as dicts with node ids, SQLs, reason, distance and margin."""
    reps = _representatives(tree.nodes)
    # A query judged both ways (e.g. a timeout once) is ambiguous: keep it out of pairs.
    labels: dict[str, set[bool]] = {}
    for node in tree.nodes:
        if node.sql.strip():
            labels.setdefault(_normalized(node.sql), set()).add(node.correct)
    correct = {k: n for k, n in reps.items() if labels[k] == {True}}
    wrong = {k: n for k, n in reps.items() if labels[k] == {False}}
    if not correct or not wrong:
        return []

    distances: dict[tuple[str, str], int] = {}

    def distance(ck: str, wk: str) -> int:
        if (ck, wk) not in distances:
            distances[(ck, wk)] = sql_distance(correct[ck].sql, wrong[wk].sql)
        return distances[(ck, wk)]

    candidates: list[tuple[str, str, str]] = []  # (reason, correct key, wrong key), in order
    for rule in rules.rules:
        if rule == "revision":
            found = []
            for wk, w in wrong.items():
                for child in tree.children(w.id):
                    ck = _normalized(child.sql) if child.sql.strip() else None
                    if child.correct and ck in correct:
                        found.append((w.depth, distance(ck, wk), w.id, ck, wk))
            candidates += [("revision", ck, wk) for *_, ck, wk in sorted(found)]
        else:
            combos = sorted(
                ((distance(ck, wk), correct[ck].id, wrong[wk].id, ck, wk) for ck in correct for wk in wrong)
            )
            for d, _, _, ck, wk in combos:
                if rule == "hard_negative" and d > rules.hard_negative_max_distance:
                    continue
                candidates.append((rule, ck, wk))

    pairs: list[dict[str, Any]] = []
    used: set[tuple[str, str]] = set()
    for reason, ck, wk in candidates:
        if (ck, wk) in used:
            continue
        used.add((ck, wk))
        c, w = correct[ck], wrong[wk]
        pairs.append(
            {
                "question_id": tree.question_id,
                "db_id": tree.db_id,
                "difficulty": tree.difficulty,
                # Both sides in the SFT target's form (one statement ending in ";"), so that
                # formatting never tells chosen from rejected.
                "chosen": finish_sql(c.sql),
                "rejected": finish_sql(w.sql),
                "reason": reason,
                "chosen_node": c.id,
                "rejected_node": w.id,
                "rejected_error": w.error,
                "distance": distance(ck, wk),
                "margin": 1.0 if w.executes else 2.0,
            }
        )
        if len(pairs) >= rules.max_pairs_per_question:
            break
    return pairs


def pairs_for_trees(
    trees: Iterable[Tree],
    rules: PairRules,
    prompt_for: Callable[[str], list[dict[str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """Pairs of every tree; ``prompt_for(question_id)`` gives the SQL-task chat prompt."""
    pairs = []
    for tree in trees:
        selected = select_pairs(tree, rules)
        if selected and prompt_for is not None:
            prompt = prompt_for(tree.question_id)
            for pair in selected:
                pair["prompt"] = prompt
        pairs += selected
    return pairs


def split_by_question(
    pairs: Sequence[dict[str, Any]], test_fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split pairs into (train, test) so that each question's pairs stay on one side.

    The questions that have pairs are shuffled with ``seed``; the first
    ``ceil(test_fraction * questions)`` go to test (at least one when there are two questions
    or more, none when there is only one).
    """
    questions = sorted({p["question_id"] for p in pairs})
    random.Random(seed).shuffle(questions)
    n_test = math.ceil(test_fraction * len(questions)) if len(questions) > 1 else 0
    n_test = min(n_test, len(questions) - 1) if questions else 0
    test_ids = set(questions[:n_test])
    train = [p for p in pairs if p["question_id"] not in test_ids]
    test = [p for p in pairs if p["question_id"] in test_ids]
    return train, test


def pair_stats(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by reason, by difficulty, and by the rejected SQL's error kind."""
    stats: dict[str, Any] = {"pairs": len(pairs), "questions": len({p["question_id"] for p in pairs})}
    for key in ("reason", "difficulty", "rejected_error"):
        counts: dict[str, int] = {}
        for pair in pairs:
            counts[str(pair.get(key))] = counts.get(str(pair.get(key)), 0) + 1
        stats[f"by_{key}"] = dict(sorted(counts.items()))
    distances = [p["distance"] for p in pairs]
    stats["mean_distance"] = round(sum(distances) / len(distances), 2) if distances else None
    return stats
