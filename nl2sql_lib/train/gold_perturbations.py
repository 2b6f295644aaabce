"""Wrong edits of gold SQL, checked by execution: the rejected side of gold_perturbed pairs
(05_reward_model, ``pairs_source: gold_perturbed``) and the failing queries of revision SFT.

    pairs = perturbed_gold_pairs(examples, schema_params=..., per_question=2, seed=0)
"""

from __future__ import annotations

from typing import Any, Sequence

# When the revision trees give few pairs (a small policy rarely gets a question right), the
# gold SQL gives the "chosen" side for every question, and an edit of it that executes to a
# different result (or fails) gives the "rejected" side: the kinds of mistakes a policy makes -
# a wrong column, a flipped comparison, a dropped condition, the wrong aggregate or order.
# Every rejected candidate is executed and judged against the gold result, so no pair has a
# correct query on its rejected side.

_FLIP = {"GT": "LT", "LT": "GT", "GTE": "LTE", "LTE": "GTE", "EQ": "NEQ", "NEQ": "EQ"}
_AGG_SWAP = {"Max": "Min", "Min": "Max", "Sum": "Avg", "Avg": "Sum"}


def _perturbations(tree: Any, schema: Any, rng: Any) -> list[tuple[str, Any]]:
    """(kind, edited copy of ``tree``) for every edit that applies to this query."""
    from sqlglot import exp

    out: list[tuple[str, Any]] = []

    def edit(kind: str, node_type: Any, change: Any) -> None:
        nodes = list(tree.find_all(node_type))
        if not nodes:
            return
        copy = tree.copy()
        target = list(copy.find_all(node_type))[rng.randrange(len(nodes))]
        if change(target) is not False:
            out.append((kind, copy))

    def flip(node):
        new_cls = getattr(exp, _FLIP[type(node).__name__])
        node.replace(new_cls(this=node.this.copy(), expression=node.expression.copy()))

    edit("flip_comparison", (exp.GT, exp.LT, exp.GTE, exp.LTE, exp.EQ, exp.NEQ), flip)

    def swap_agg(node):
        node.replace(getattr(exp, _AGG_SWAP[type(node).__name__])(this=node.this.copy()))

    edit("swap_aggregate", (exp.Max, exp.Min, exp.Sum, exp.Avg), swap_agg)

    def flip_order(node):
        desc = not node.args.get("desc")
        node.set("desc", desc)
        node.set("nulls_first", not desc)  # SQLite's default null order: no NULLS clause printed

    edit("flip_order", exp.Ordered, flip_order)

    def drop_condition(where):
        condition = where.this
        if isinstance(condition, (exp.And, exp.Or)):
            condition.replace(condition.this.copy() if rng.random() < 0.5 else condition.expression.copy())
        else:
            where.pop()

    edit("drop_condition", exp.Where, drop_condition)

    def change_number(literal):
        if literal.is_string:
            literal.replace(exp.Literal.string(literal.this + "x"))
        else:
            value = float(literal.this)
            literal.replace(exp.Literal.number(int(value) + 1 if value == int(value) else value * 2))

    edit("change_literal", exp.Literal, change_number)

    def change_limit(limit):
        number = limit.expression
        if not isinstance(number, exp.Literal) or number.is_string:
            return False
        limit.set("expression", exp.Literal.number(int(number.this) + 1))

    edit("change_limit", exp.Limit, change_limit)

    columns = {c.name.lower(): [x.name for x in t.columns] for t in schema.tables for c in t.columns}

    def wrong_column(column):
        others = [name for name in columns.get(column.name.lower(), []) if name.lower() != column.name.lower()]
        if not others:
            return False
        column.set("this", exp.to_identifier(rng.choice(others)))

    edit("wrong_column", exp.Column, wrong_column)

    def missing_column(column):
        column.set("this", exp.to_identifier(column.name + "_name"))

    edit("missing_column", exp.Column, missing_column)
    return out


def perturbed_gold_pairs(
    examples: Sequence[Any], *, schema_params: Any = None, per_question: int = 2, seed: int = 0,
    semantics: str = "bird", timeout: float = 2.0,
) -> list[dict[str, Any]]:
    """Pairs ``(gold SQL, a wrong edit of it)`` for each example, in the tree pairs' format.

    ``reason`` is ``perturbed:<kind>``; ``margin`` follows the tree pairs' rule: 1.0 when the
    rejected query executes (a wrong result), 2.0 when it fails.
    """
    import random

    from ..data.prompts import finish_sql, sql_messages
    from ..data.schema import read_schema, schema_text_for
    from ..sql.judge import Judge
    from ..sql.parse import parse_sql

    rng = random.Random(seed)
    judge = Judge(semantics=semantics, timeout=timeout)
    pairs: list[dict[str, Any]] = []
    for example in examples:
        tree = parse_sql(example.sql)
        if tree is None or not judge.gold(example.db_path, example.sql).ok:
            continue
        # Both sides are printed by sqlglot, so formatting (keyword case, <> vs !=) cannot tell
        # the rejected side from the chosen one.
        chosen = tree.sql(dialect="sqlite")
        if not judge.judge(example.db_path, example.sql, chosen).correct:
            chosen = example.sql
        schema = read_schema(example.db_path)
        candidates = _perturbations(tree, schema, rng)
        rng.shuffle(candidates)
        prompt = None
        seen: set[str] = set()
        kept = 0
        for kind, edited in candidates:
            sql = edited.sql(dialect="sqlite")
            if sql in seen:
                continue
            seen.add(sql)
            verdict = judge.judge(example.db_path, example.sql, sql)
            if verdict.correct:
                continue  # the edit did not change the answer: not a negative
            prompt = prompt or sql_messages(example, schema_text_for(example, schema_params))
            pairs.append({
                "prompt": prompt,
                "chosen": finish_sql(chosen),
                "rejected": finish_sql(sql),
                "reason": f"perturbed:{kind}",
                "question_id": example.question_id,
                "db_id": example.db_id,
                "difficulty": example.difficulty,
                "db_path": example.db_path,
                "margin": 1.0 if verdict.pred.ok else 2.0,
            })
            kept += 1
            if kept >= per_question:
                break
    return pairs
