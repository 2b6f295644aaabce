"""The judge: is a predicted query right? Gold runs once per question, its result is reused.

    judge = Judge(semantics="spider")
    verdict = judge.judge(db_path, gold_sql, pred_sql)
    verdict.correct, verdict.pred.error, verdict.gold.rows

Under ``semantics="spider"`` both queries get the Spider evaluator's clean-up first
(``> =`` -> ``>=``) and, unless ``keep_distinct=True``, every DISTINCT is removed from both
before they run (the test-suite evaluator's default, kept so figures stay comparable with
published Spider numbers). ``keep_distinct`` has no effect under ``bird``, whose official
script runs the queries as written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .compare import SEMANTICS, query_orders, remove_distinct, results_match, spider_postprocess
from .execute import ExecResult, db_key, execute_sql

__all__ = ["Judge", "Verdict"]


@dataclass
class Verdict:
    correct: bool
    pred: ExecResult
    gold: ExecResult


def _same_text(a: str, b: str) -> bool:
    return a.strip().rstrip(";").strip() == b.strip().rstrip(";").strip()


class _LRU:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.data.get(key)
            if value is not None:
                self.data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.maxsize:
                self.data.popitem(last=False)


class Judge:
    """Executes and compares queries under one comparison rule, caching gold results.

    ``max_rows`` caps predictions (raised to the gold result's size when the gold is larger);
    gold queries run with ``gold_max_rows`` and ``gold_timeout``, which are generous because a
    gold result is computed once and must not be cut. ``tolerance``: see
    :func:`nl2sql_lib.sql.compare.results_match`.
    """

    def __init__(
        self,
        semantics: str = "bird",
        timeout: float = 5.0,
        max_rows: int = 10_000,
        keep_distinct: bool = False,
        *,
        tolerance: float | None = None,
        gold_timeout: float = 30.0,
        gold_max_rows: int = 1_000_000,
        gold_cache_size: int = 50_000,
        pred_cache_size: int = 4096,
    ):
        if semantics not in SEMANTICS:
            raise ValueError(f"Judge(semantics=...) must be one of {SEMANTICS}, got {semantics!r}")
        self.semantics = semantics
        self.timeout = timeout
        self.max_rows = max_rows
        self.keep_distinct = keep_distinct
        self.tolerance = tolerance
        self.gold_timeout = max(gold_timeout, timeout)
        self.gold_max_rows = max(gold_max_rows, max_rows)
        self._gold_cache = _LRU(gold_cache_size)
        self._pred_cache = _LRU(pred_cache_size)
        self.gold_executions = 0  # how many times a gold query really ran (for tests/benchmarks)

    # -- query preparation ---------------------------------------------------------------------

    def prepare(self, sql: str) -> str:
        """The SQL as it will run under this judge's rule (Spider clean-up / DISTINCT removal)."""
        sql = sql or ""
        if self.semantics == "spider":
            sql = spider_postprocess(sql)
            if not self.keep_distinct:
                sql = remove_distinct(sql)
        return sql

    @staticmethod
    def _key(db_path, sql: str) -> tuple[str, str]:
        return db_key(db_path), sql

    # -- execution -----------------------------------------------------------------------------

    def gold(self, db_path: str | Path, gold_sql: str) -> ExecResult:
        """The gold query's result, executed on first use and cached afterwards."""
        sql = self.prepare(gold_sql)
        key = self._key(db_path, sql)
        cached = self._gold_cache.get(key)
        if cached is not None:
            return cached
        result = execute_sql(db_path, sql, timeout=self.gold_timeout, max_rows=self.gold_max_rows)
        self.gold_executions += 1
        self._gold_cache.put(key, result)
        return result

    def execute(self, db_path: str | Path, sql: str, *, max_rows: int | None = None) -> ExecResult:
        """Run a predicted query (prepared like the gold) with the prediction limits.

        Small results are cached, since sampled candidates often repeat the same SQL.
        """
        sql = self.prepare(sql)
        cap = max_rows or self.max_rows
        key = self._key(db_path, sql) + (cap,)
        cached = self._pred_cache.get(key)
        if cached is not None:
            return cached
        result = execute_sql(db_path, sql, timeout=self.timeout, max_rows=cap)
        if result.rows is None or len(result.rows) <= 1000:
            self._pred_cache.put(key, result)
        return result

    def order_matters(self, gold_sql: str) -> bool:
        return self.semantics == "spider" and query_orders(self.prepare(gold_sql))

    # -- verdicts ------------------------------------------------------------------------------

    def judge(self, db_path: str | Path, gold_sql: str, pred_sql: str) -> Verdict:
        """Execute pred (and gold, once) and compare them under this judge's rule."""
        gold = self.gold(db_path, gold_sql)
        if _same_text(self.prepare(pred_sql), self.prepare(gold_sql)):
            # The very same query on the same database: its result is the gold's, no need to run it.
            return Verdict(self.matches(gold, gold, gold_sql), gold, gold)
        cap = self.max_rows if gold.rows is None else max(self.max_rows, len(gold.rows))
        pred = self.execute(db_path, pred_sql, max_rows=cap)
        return Verdict(self.matches(pred, gold, gold_sql), pred, gold)

    def matches(self, pred: ExecResult, gold: ExecResult, gold_sql: str) -> bool:
        """Compare two execution results (a failed or truncated one never matches)."""
        if not pred.ok or not gold.ok:
            return False
        return results_match(
            pred.rows, gold.rows, semantics=self.semantics,
            order_matters=self.order_matters(gold_sql), tolerance=self.tolerance,
        )

    def judge_many(self, items: Iterable[tuple[str | Path, str, str]]) -> list[Verdict]:
        """Judge ``(db_path, gold_sql, pred_sql)`` triples in order."""
        return [self.judge(db, gold, pred) for db, gold, pred in items]
