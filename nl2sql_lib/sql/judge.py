"""The judge: is a predicted query right? Gold runs once per question, its result is reused.

    judge = Judge(semantics="spider")
    verdict = judge.judge(db_path, gold_sql, pred_sql)
    verdict.correct, verdict.pred.error, verdict.gold.rows

Under ``semantics="spider"`` both queries get the Spider evaluator's clean-up first
(``> =`` -> ``>=``) and, unless ``keep_distinct=True``, every DISTINCT is removed from both
before they run (the test-suite evaluator's default, kept so figures stay comparable with
published Spider numbers). ``keep_distinct`` has no effect under ``bird``, whose official
script runs the queries as written.

What is cached, per judge: every gold result (``gold_cache_size``), and complete prediction
results of up to 1,000 rows, keyed by database and SQL as run (``pred_cache_size``; 0 turns it
off), so a candidate repeated across samples or questions runs once whatever its row cap. A
prediction whose text equals the gold's up to surrounding blanks and one trailing semicolon
reuses the gold result without running.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .compare import SEMANTICS, query_orders, remove_distinct, results_match, spider_postprocess
from .execute import ExecResult, db_key, execute_sql

__all__ = ["Judge", "Verdict"]

# Prediction results up to this many rows are kept in the judge's result cache.
_CACHED_ROWS = 1000


@dataclass
class Verdict:
    correct: bool
    pred: ExecResult
    gold: ExecResult


def _cacheable(result: ExecResult) -> bool:
    """Complete (never truncated) prediction results of at most _CACHED_ROWS rows are kept."""
    return not result.truncated and (result.rows is None or len(result.rows) <= _CACHED_ROWS)


def _trimmed(sql: str) -> str:
    """The query without surrounding blanks and one trailing semicolon (it runs the same).

    Only one: ``SELECT 1;;`` is two statements, which sqlite3's ``execute`` refuses (so BIRD's
    evaluator scores it wrong), and it must run to get that verdict, not borrow the gold's result.
    """
    sql = sql.strip()
    return sql[:-1].strip() if sql.endswith(";") else sql


@lru_cache(maxsize=65536)
def _spider_prepared(sql: str, keep_distinct: bool) -> str:
    # Cached: remove_distinct runs sqlglot's tokenizer, and one gold query is prepared once per
    # candidate it is compared with.
    sql = spider_postprocess(sql)
    return sql if keep_distinct else remove_distinct(sql)


class _LRU:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        # No lock: each OrderedDict operation is atomic under the GIL, and a key evicted by
        # another thread between the two calls is simply a miss (put() holds the lock).
        value = self.data.get(key)
        if value is not None:
            try:
                self.data.move_to_end(key)
            except KeyError:
                return None
        return value

    def put(self, key, value) -> None:
        if self.maxsize <= 0:
            return
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.maxsize:
                self.data.popitem(last=False)


@dataclass(frozen=True)
class _Question:
    """One gold query on one database, as every candidate against it is judged."""

    db_path: str | Path  # as the caller named them
    gold_sql: str
    db: str  # db_key(db_path)
    gold_run: str  # the gold as it runs (prepared)
    gold_text: str  # gold_run without surrounding blanks and one trailing semicolon
    gold: ExecResult
    cap: int  # the candidates' row cap: at least the gold's row count
    order_matters: bool


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
        # The question judged last: callers judge a question's candidates one after another.
        self._last_question: _Question | None = None

    # -- query preparation ---------------------------------------------------------------------

    def prepare(self, sql: str) -> str:
        """The SQL as it will run under this judge's rule (Spider clean-up / DISTINCT removal)."""
        sql = sql or ""
        if self.semantics == "spider":
            return _spider_prepared(sql, self.keep_distinct)
        return sql

    # -- execution -----------------------------------------------------------------------------
    # The public methods take SQL as written; the private ones take it prepared, with the
    # database's cache key (db_key) computed once per verdict.

    def gold(self, db_path: str | Path, gold_sql: str) -> ExecResult:
        """The gold query's result, executed on first use and cached afterwards."""
        return self._gold(db_path, db_key(db_path), self.prepare(gold_sql))

    def _gold(self, db_path: str | Path, db: str, sql: str) -> ExecResult:
        key = (db, sql)
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
        return self._execute(db_path, db_key(db_path), self.prepare(sql), max_rows or self.max_rows)

    def _execute(self, db_path: str | Path, db: str, sql: str, cap: int) -> ExecResult:
        # Keyed without the row cap: a complete result of n rows is what any cap >= n returns,
        # so it is reused whenever it fits the cap asked for now. Truncated results (which
        # depend on the cap) are never cached.
        key = (db, sql)
        cached = self._pred_cache.get(key)
        if cached is not None and (cached.rows is None or len(cached.rows) <= cap):
            return cached
        result = execute_sql(db_path, sql, timeout=self.timeout, max_rows=cap)
        if _cacheable(result):
            self._pred_cache.put(key, result)
        return result

    def order_matters(self, gold_sql: str) -> bool:
        return self.semantics == "spider" and query_orders(self.prepare(gold_sql))

    # -- verdicts ------------------------------------------------------------------------------

    def judge(self, db_path: str | Path, gold_sql: str, pred_sql: str) -> Verdict:
        """Execute pred (and gold, once) and compare them under this judge's rule."""
        question = self._question(db_path, gold_sql)
        gold = question.gold
        pred_run = self.prepare(pred_sql)
        if pred_run == question.gold_run or _trimmed(pred_run) == question.gold_text:
            # The very same query on the same database: its result is the gold's, no need to run
            # it, and a result always matches itself under both rules (unless it failed).
            return Verdict(gold.ok, gold, gold)
        pred = self._execute(db_path, question.db, pred_run, question.cap)
        return Verdict(self._compare(pred, gold, question.order_matters), pred, gold)

    def _question(self, db_path: str | Path, gold_sql: str) -> _Question:
        """What every candidate of this question needs, worked out once per question."""
        last = self._last_question
        if last is not None and last.gold_sql == gold_sql and last.db_path == db_path:
            return last
        db, gold_run = db_key(db_path), self.prepare(gold_sql)
        gold = self._gold(db_path, db, gold_run)
        question = _Question(
            db_path=db_path, gold_sql=gold_sql, db=db, gold_run=gold_run, gold_text=_trimmed(gold_run),
            gold=gold, cap=self.max_rows if gold.rows is None else max(self.max_rows, len(gold.rows)),
            order_matters=self.order_matters(gold_sql),
        )
        if self._gold_cache.maxsize > 0:  # without a gold cache every verdict runs its gold
            self._last_question = question
        return question

    def matches(self, pred: ExecResult, gold: ExecResult, gold_sql: str) -> bool:
        """Compare two execution results (a failed or truncated one never matches)."""
        return self._compare(pred, gold, self.order_matters(gold_sql))

    def _compare(self, pred: ExecResult, gold: ExecResult, order_matters: bool) -> bool:
        if not pred.ok or not gold.ok:
            return False
        return results_match(pred.rows, gold.rows, semantics=self.semantics, order_matters=order_matters,
                             tolerance=self.tolerance)
