"""Result comparison: the BIRD and Spider execution-accuracy rules.

``bird`` (BIRD's official ``evaluation.py``): the prediction is right when
``set(pred_rows) == set(gold_rows)``: row order and duplicate rows are ignored, column order
matters.

``spider`` (the Spider test-suite evaluator's ``result_eq`` in ``exec_eval.py``, as it runs by
default): rows compare as multisets (duplicates count), in order only when the gold query has an
ORDER BY, and the columns may come in any order (a column permutation that makes the two results
equal is searched for). Its DISTINCT quirk (the word removed from both queries before they run)
is applied by :class:`nl2sql_lib.sql.judge.Judge` through :func:`remove_distinct`.

Values compare with Python equality as in both official scripts: ``1 == 1.0`` (int and float
match, also inside sets since their hashes agree), ``None == None`` (NULLs match each other),
and ``'1' != 1`` (text never equals a number). With ``tolerance=t`` every number (not bool) is
first replaced by ``round(x / t)``, so numbers closer than about ``t`` compare equal (two
values straddling a rounding boundary still differ).
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import product
from typing import Iterable, Sequence

import sqlglot
from sqlglot.tokens import TokenType

__all__ = ["results_match", "query_orders", "remove_distinct", "spider_postprocess", "SEMANTICS"]

SEMANTICS = ("bird", "spider")
_DIALECT = "sqlite"


# ---------------------------------------------------------------------------------------------
# Query-side helpers
# ---------------------------------------------------------------------------------------------


def query_orders(sql: str) -> bool:
    """Whether rows compare in order under "spider": test-suite's own test, ``'order by' in
    gold.lower()`` on the gold after its clean-up (:func:`spider_postprocess`, DISTINCT removed).

    Text, not a parse: an ORDER BY inside a subquery (which does not order the final result)
    counts too, and ``ORDER  BY`` with two spaces does not - exactly as the official evaluator
    decides, so the verdicts are the same as its own (``make bench BENCH=evaluator`` checks all
    7,776 of its workload).
    """
    return "order by" in sql.lower()


def remove_distinct(sql: str) -> str:
    """Remove every DISTINCT keyword, as the Spider test-suite evaluator does before running.

    Spider's ``remove_distinct`` drops each token spelled DISTINCT anywhere in the query
    (``SELECT DISTINCT``, ``COUNT(DISTINCT x)``, in subqueries). We find the same tokens with
    sqlglot's tokenizer and cut them out of the original text, so nothing else in the query is
    rewritten. If the text cannot be tokenized it is returned unchanged.

    Spider's version also keeps only the first statement (``sqlparse.parse(s)[0]``): the text is
    cut after the first semicolon outside strings, comments and parentheses, so that
    ``SELECT ...;;`` or ``SELECT ...; SELECT 1`` runs as ``SELECT ...;``. This does the same.
    """
    try:
        tokens = sqlglot.tokenize(sql, read=_DIALECT)
    except (sqlglot.errors.SqlglotError, ValueError):
        return sql
    spans, depth, end = [], 0, len(sql)
    for t in tokens:
        if t.token_type == TokenType.DISTINCT:
            spans.append((t.start, t.end + 1))
        elif t.token_type == TokenType.L_PAREN:
            depth += 1
        elif t.token_type == TokenType.R_PAREN:
            depth -= 1
        elif t.token_type == TokenType.SEMICOLON and depth <= 0:
            end = t.end + 1  # sqlparse's splitter: a ';' at parenthesis level <= 0 ends a statement
            break
    if not spans and end == len(sql):
        return sql
    pieces, last = [], 0
    for start, stop in spans:
        pieces.append(sql[last:start])
        last = stop
    pieces.append(sql[last:end])
    return "".join(pieces)


def spider_postprocess(sql: str) -> str:
    """The Spider evaluator's clean-up of both queries: ``> =`` -> ``>=`` and friends."""
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


# ---------------------------------------------------------------------------------------------
# Result-side rules
# ---------------------------------------------------------------------------------------------


def _quantize(rows: Sequence[tuple], tolerance: float | None) -> list[tuple]:
    if not tolerance:
        return rows if isinstance(rows, list) else list(rows)  # copies references only

    def q(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                return round(v / tolerance)
            except (OverflowError, ValueError):  # inf / nan stay as they are
                return v
        return v

    return [tuple(q(v) for v in r) for r in rows]


def _unorder_row(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def _quick_reject_passes(result1: list[tuple], result2: list[tuple], order_matters: bool) -> bool:
    """Necessary condition: same bag (or sequence) of rows once each row's values are sorted."""
    s1 = [_unorder_row(r) for r in result1]
    s2 = [_unorder_row(r) for r in result2]
    if order_matters:
        return s1 == s2
    return set(s1) == set(s2)


def _candidate_permutations(tab1_sets_by_columns: list[set], result2: list[tuple]) -> Iterable[tuple]:
    """Column permutations worth trying, pruned by sampled rows (Spider's method)."""
    num_cols = len(result2[0])
    constraints = [set(range(num_cols)) for _ in range(num_cols)]
    if num_cols <= 3:
        return product(*constraints)
    rng = random.Random(0)  # sampling only prunes impossible permutations; seeded for repeatability
    for _ in range(20):
        row = rng.choice(result2)
        for col1 in range(num_cols):
            for col2 in set(constraints[col1]):
                if row[col2] not in tab1_sets_by_columns[col1]:
                    constraints[col1].remove(col2)
    return product(*constraints)


def spider_result_eq(result1: list[tuple], result2: list[tuple], order_matters: bool) -> bool:
    """Spider test-suite ``result_eq``: result1 is the gold denotation, result2 the prediction."""
    if len(result1) == 0 and len(result2) == 0:
        return True
    if len(result1) != len(result2):
        return False
    num_cols = len(result1[0])
    if len(result2[0]) != num_cols:
        return False
    if not _quick_reject_passes(result1, result2, order_matters):
        return False
    tab1_sets_by_columns = [{row[i] for row in result1} for i in range(num_cols)]
    counts1 = Counter(result1) if not order_matters else None
    for perm in _candidate_permutations(tab1_sets_by_columns, result2):
        if len(perm) != len(set(perm)):
            continue
        permuted = result2 if num_cols == 1 else [tuple(row[i] for i in perm) for row in result2]
        if order_matters:
            if result1 == permuted:
                return True
        elif Counter(permuted) == counts1:
            return True
    return False


def results_match(
    pred_rows: Sequence[tuple] | None,
    gold_rows: Sequence[tuple] | None,
    *,
    semantics: str = "bird",
    order_matters: bool = False,
    tolerance: float | None = None,
) -> bool:
    """Whether predicted rows match gold rows under ``semantics`` ("bird" or "spider").

    ``order_matters`` is used by "spider" only (pass ``query_orders(gold_sql)``); "bird" always
    ignores row order. A missing result (None) never matches.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
    if pred_rows is None or gold_rows is None:
        return False
    if semantics == "bird" and not tolerance:
        return set(pred_rows) == set(gold_rows)  # the common case, without copying the rows first
    pred = _quantize(pred_rows, tolerance)
    gold = _quantize(gold_rows, tolerance)
    if semantics == "bird":
        return set(pred) == set(gold)
    return spider_result_eq(gold, pred, order_matters)
