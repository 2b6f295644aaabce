"""Reward functions for GRPO, with TRL's reward signature.

Every reward is a callable ``reward(prompts, completions, **kwargs) -> list[float | None]``. TRL
passes the dataset's other columns as keyword arguments, one value per completion: ``db_path``
(the SQLite file) and ``sql`` (the gold query; ``gold`` / ``gold_sql`` are accepted too) are the
ones used here. Completions are plain strings or conversations (a list of ``{"role", "content"}``
messages); both work.

    execution   1 when the candidate's result matches the gold result, else 0 (None when the gold
                query itself fails: the question cannot be scored and TRL leaves it out)
    executable  1 when the candidate runs without error (right or wrong), 0 when it fails
    partial     sqlglot component score in [0, 1] (SELECT, FROM/JOIN, WHERE, GROUP BY, HAVING,
                ORDER BY; insensitive to column and join order): shaping for near misses
    syntax      1 when sqlglot parses the extracted SQL
    format      1 when the completion is ``<think>...</think>`` then exactly one SQL statement
                (reasoning format) or exactly one SQL statement and nothing else (plain format)
    reward_model  sigmoid of a trained reward model's score (05_reward_model), in (0, 1); 0 for
                a completion without SQL (:class:`nl2sql_lib.train.grpo.RewardModelReward`, optional)

The functions return unweighted scores; the weights go to TRL (``GRPOConfig.reward_weights``) so
that each curve in the logs (``rewards/<name>/mean``) reads as a rate: ``rewards/execution/mean``
is the execution accuracy of the sampled completions. :func:`build_rewards` turns the parameter
file's weights into the enabled functions and their weights.

:data:`REWARDS` is the one registry of these names: adding a reward is one function with the
signature ``reward(ctx, prompts, completions, **kwargs)`` (``ctx``: the :class:`RewardFunction`,
whose ``scorer`` and ``reasoning`` it may use) and one line in :data:`REWARDS`; its weight is then
``rewards.<name>`` in a parameter file (:class:`~nl2sql_lib.config.RewardWeights` checks every
weight's name against the registry, so a weight without a reward, or a misspelt one, stops at
validation).

Execution is the expensive part, so the functions of one batch share a :class:`ExecutionScorer`:
each distinct (database, gold, candidate) is executed once per batch, the gold result is cached
by the :class:`~nl2sql_lib.sql.judge.Judge` for the whole run, and a runaway candidate cannot
stall the batch: each candidate's time limit is a small multiple of its gold query's time (capped
by ``timeout``), and once the batch has spent ``batch_budget`` seconds in SQLite the remaining
candidates get only ``min_timeout`` each. A candidate that fails, times out or is not SQL scores
low and never raises.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .sql.execute import ErrorKind, ExecResult, execute_sql
from .sql.extract import extract_sql as _extract_sql
from .sql.judge import Judge
from .sql.parse import is_valid_syntax, partial_match_score

logger = logging.getLogger(__name__)


def extract_sql(text: str) -> str:
    """The completion's SQL ("" when there is none); a model's text never makes this raise."""
    try:
        return _extract_sql(text or "").strip()
    except Exception:  # e.g. a pathological string the tokenizer rejects
        return ""

# Dataset columns that may hold the gold SQL, in order of preference.
GOLD_COLUMNS = ("sql", "gold_sql", "gold", "query")


# --------------------------------------------------------------------------------------------
# Completions as text
# --------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, a message dict, or a list of messages.

    For a conversation the assistant messages' contents are joined (TRL gives a one-message list
    ``[{"role": "assistant", "content": ...}]``); content given as a list of parts keeps its text
    parts.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in (assistant or messages))
    return str(completion)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


# --------------------------------------------------------------------------------------------
# Scoring a batch against the databases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateScore:
    """What executing one candidate against its question's gold query found."""

    sql: str
    correct: bool | None  # None: the gold query failed, the question cannot be scored
    executed: bool  # the candidate ran without error
    error: str  # an ErrorKind value, or "no_sql" / "gold_failed"
    elapsed: float  # seconds spent executing the candidate (0 when served from the batch cache)


@dataclass
class BatchStats:
    """Totals of the last batch, for logs and the benchmark."""

    n: int = 0
    executed_queries: int = 0
    seconds: float = 0.0
    timeouts: int = 0
    budget_exhausted: bool = False
    errors: dict[str, int] = field(default_factory=dict)


class ExecutionScorer:
    """Executes a batch's candidates once and shares the results between the reward functions.

    Args:
        judge: caches gold results across the run (a new one with ``semantics`` when not given).
        semantics: result comparison, "bird" (set of rows) or "spider" (see sql/compare.py).
        timeout: hard per-query limit in seconds (the parameter file's ``sql_timeout``).
        slow_factor, min_timeout: a candidate may run ``slow_factor`` times as long as its gold
            query, but at least ``min_timeout`` seconds: on the small databases a correct query
            takes a millisecond or two, so a candidate that runs 20x as long (and over 20 ms) is a
            runaway join, not an answer worth waiting for.
        batch_budget: seconds of SQLite time one batch may spend before every remaining
            candidate gets only ``min_timeout``.
        max_rows: cap on the rows a candidate may return.
    """

    def __init__(
        self,
        judge: Judge | None = None,
        *,
        semantics: str = "bird",
        timeout: float = 2.0,
        slow_factor: float = 20.0,
        min_timeout: float = 0.02,
        batch_budget: float = 1.0,
        max_rows: int = 10_000,
    ):
        if timeout <= 0 or min_timeout <= 0 or batch_budget <= 0:
            raise ValueError("ExecutionScorer: timeout, min_timeout and batch_budget must be > 0 seconds")
        self.judge = judge or Judge(semantics=semantics, timeout=timeout, max_rows=max_rows)
        self.semantics = getattr(self.judge, "semantics", semantics)
        self.timeout = timeout
        self.slow_factor = slow_factor
        self.min_timeout = min(min_timeout, timeout)
        self.batch_budget = batch_budget
        self.max_rows = max_rows
        self.last_stats = BatchStats()
        self._last_key: tuple | None = None
        self._last_scores: list[CandidateScore] = []
        self._missing_gold_warned: set[tuple[str, str]] = set()

    # ---- public -------------------------------------------------------------------------

    def score(
        self, completions: Sequence[Any], db_paths: Sequence[str], golds: Sequence[str]
    ) -> list[CandidateScore]:
        """One :class:`CandidateScore` per completion; the same batch twice is scored once."""
        texts = tuple(completion_text(c) for c in completions)
        key = (texts, tuple(str(p) for p in db_paths), tuple(golds))
        if key == self._last_key:
            return self._last_scores
        scores = self._score_batch(texts, key[1], key[2])
        self._last_key, self._last_scores = key, scores
        return scores

    # ---- internals ----------------------------------------------------------------------

    def _score_batch(
        self, texts: Sequence[str], db_paths: Sequence[str], golds: Sequence[str]
    ) -> list[CandidateScore]:
        stats = BatchStats(n=len(texts))
        done: dict[tuple[str, str, str], CandidateScore] = {}
        scores = []
        for text, db_path, gold in zip(texts, db_paths, golds, strict=True):
            sql = extract_sql(text).strip()
            key = (db_path, gold, sql)
            if key in done:  # GRPO samples the same query several times: run it once
                cached = done[key]
                scores.append(CandidateScore(cached.sql, cached.correct, cached.executed, cached.error, 0.0))
                continue
            score = self._score_one(db_path, gold, sql, stats)
            done[key] = score
            scores.append(score)
            stats.errors[score.error] = stats.errors.get(score.error, 0) + 1
        stats.budget_exhausted = stats.seconds >= self.batch_budget
        self.last_stats = stats
        return scores

    def _score_one(self, db_path: str, gold_sql: str, sql: str, stats: BatchStats) -> CandidateScore:
        if not sql:
            return CandidateScore(sql, False, False, "no_sql", 0.0)
        gold = self.judge.gold(db_path, gold_sql)
        if gold.error == ErrorKind.MISSING_DB:
            # Not the candidate's fault and not recoverable: the dataset points at no database.
            raise FileNotFoundError(
                f"reward scoring: database {db_path!r} does not exist ({gold.message}); check the "
                "dataset's db_path column (paths are relative to the project root or absolute)"
            )
        limit = self._time_limit(gold, stats)
        # Rows are capped like the judge does at evaluation: never below the gold's own size.
        cap = self.max_rows if gold.rows is None else max(self.max_rows, len(gold.rows))
        start = time.perf_counter()
        try:
            pred = execute_sql(db_path, self.judge.prepare(sql), timeout=limit, max_rows=cap)
        except Exception as exc:  # the engine promises not to raise; a reward must never crash
            logger.warning("execute_sql raised on a candidate (%s); scoring it as failed", exc)
            pred = None
        elapsed = time.perf_counter() - start
        stats.seconds += elapsed
        stats.executed_queries += 1
        if pred is None:
            return CandidateScore(sql, False, False, ErrorKind.OTHER.value, elapsed)
        if pred.error == ErrorKind.TIMEOUT:
            stats.timeouts += 1
        if not gold.ok:
            self._warn_gold(db_path, gold_sql, gold)
            return CandidateScore(sql, None, pred.ok, "gold_failed", elapsed)
        correct = self.judge.matches(pred, gold, gold_sql)  # the evaluation's comparison rule
        return CandidateScore(sql, bool(correct), pred.ok, pred.error.value, elapsed)

    def _time_limit(self, gold: ExecResult, stats: BatchStats) -> float:
        if stats.seconds >= self.batch_budget:
            return self.min_timeout
        relative = max(self.min_timeout, self.slow_factor * max(gold.elapsed, 0.0))
        return min(self.timeout, relative, max(self.min_timeout, self.batch_budget - stats.seconds))

    def _warn_gold(self, db_path: str, gold_sql: str, gold: ExecResult) -> None:
        if (db_path, gold_sql) not in self._missing_gold_warned:
            self._missing_gold_warned.add((db_path, gold_sql))
            logger.warning("gold query fails on %s (%s: %s); its completions get no execution reward: %s",
                           db_path, gold.error.value, gold.message, gold_sql)


# --------------------------------------------------------------------------------------------
# The reward functions
# --------------------------------------------------------------------------------------------


def batch_column(kwargs: dict[str, Any], names: Sequence[str], n: int, reward: str) -> list[Any]:
    """One value per completion from the first of the dataset columns ``names`` TRL passed."""
    for name in names:
        values = kwargs.get(name)
        if values is not None:
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
                values = [values] * n  # one value for the whole batch
            if len(values) != n:
                raise ValueError(
                    f"reward '{reward}': dataset column '{name}' has {len(values)} values for {n} completions"
                )
            return list(values)
    raise KeyError(
        f"reward '{reward}' needs the dataset column {' or '.join(repr(x) for x in names)}; the batch has "
        f"{sorted(k for k in kwargs if k not in ('trainer_state', 'log_extra', 'log_metric'))}. Keep the "
        "Example fields in the GRPO dataset (remove_unused_columns=False)."
    )


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_THINK = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)


def format_ok(text: str, *, reasoning: bool) -> bool:
    """The strict output format: ``<think>non-empty</think>`` then one SQL statement (reasoning),
    or one SQL statement alone (plain). The SQL may sit in one fenced block; nothing else may
    follow or precede it."""
    body = text.strip()
    if reasoning:
        match = _THINK.match(body)
        if not match or not match.group(1).strip() or "<think>" in match.group(2):
            return False
        body = match.group(2).strip()
    elif "<think>" in body or "</think>" in body:
        return False
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if "```" in body:
        return False
    return _valid(body)  # sqlglot: exactly one query statement (a trailing ';' is fine)


class RewardFunction:
    """One reward with TRL's signature; ``__name__`` is what TRL logs (``rewards/<name>/mean``)."""

    def __init__(self, name: str, scorer: ExecutionScorer | None = None, *, reasoning: bool = False):
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}")
        self.__name__ = name
        self.name = name
        self.reasoning = reasoning
        self._scorer = scorer

    @property
    def scorer(self) -> ExecutionScorer:
        if self._scorer is None:  # module-level functions create theirs on first use
            self._scorer = ExecutionScorer()
        return self._scorer

    def __repr__(self) -> str:
        return f"RewardFunction({self.name!r})"

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return REWARDS[self.name](self, prompts, completions, **kwargs)

    def execution_scores(self, completions: Sequence[Any], kwargs: dict[str, Any]) -> list[CandidateScore]:
        """The batch's :class:`CandidateScore` from the shared scorer (executed once per batch)."""
        n = len(completions)
        golds = batch_column(kwargs, GOLD_COLUMNS, n, self.name)
        db_paths = batch_column(kwargs, ("db_path",), n, self.name)
        return self.scorer.score(completions, db_paths, golds)


# --------------------------------------------------------------------------------------------
# The registry: one function per reward name
# --------------------------------------------------------------------------------------------


def execution_score(ctx: RewardFunction, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1 when the result matches the gold result, 0 otherwise, None when the gold query fails."""
    scores = ctx.execution_scores(completions, kwargs)
    _log_scoring_cost(ctx.scorer, kwargs)
    return [None if s.correct is None else float(s.correct) for s in scores]


def executable_score(ctx: RewardFunction, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 when the candidate runs without error (the candidate's own property, right or wrong)."""
    return [float(s.executed) for s in ctx.execution_scores(completions, kwargs)]


def partial_score(ctx: RewardFunction, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """sqlglot's component match against the gold query, in [0, 1]."""
    golds = batch_column(kwargs, GOLD_COLUMNS, len(completions), ctx.name)
    return [_partial(extract_sql(completion_text(c)), g) for c, g in zip(completions, golds)]


def syntax_score(ctx: RewardFunction, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 when sqlglot parses the extracted SQL."""
    return [1.0 if _valid(extract_sql(completion_text(c))) else 0.0 for c in completions]


def format_score(ctx: RewardFunction, prompts: Any, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1 when the whole completion has the strict output format (:func:`format_ok`)."""
    return [1.0 if format_ok(completion_text(c), reasoning=ctx.reasoning) else 0.0 for c in completions]


# Name -> reward function; the order is the order of build_rewards' output (and of TRL's logs).
REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "execution": execution_score,
    "executable": executable_score,
    "partial": partial_score,
    "syntax": syntax_score,
    "format": format_score,
}
# The registry's names at import (readers that want a tuple; a reward registered later is in
# REWARDS only, which is what the code consults).
REWARD_NAMES = tuple(REWARDS)


def _log_scoring_cost(scorer: ExecutionScorer, kwargs: dict[str, Any]) -> None:
    """Scoring cost and timeouts next to TRL's own metrics (once per batch: by the execution reward)."""
    log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
    if log_metric is None:
        return
    stats = scorer.last_stats
    log_metric("sql/seconds", stats.seconds)
    log_metric("sql/timeout_rate", stats.timeouts / max(stats.n, 1))


def _valid(sql: str) -> bool:
    try:
        return bool(sql.strip()) and is_valid_syntax(sql)
    except Exception:  # a parser bug must not stop training
        return False


@functools.lru_cache(maxsize=8192)
def _partial(sql: str, gold: str) -> float:
    """Cached: GRPO samples the same query several times per question, and sqlglot is the
    costliest part of scoring after SQLite."""
    if not sql.strip():
        return 0.0
    try:
        return float(min(1.0, max(0.0, partial_match_score(sql, gold))))
    except Exception:
        return 0.0


# Module-level functions sharing one default scorer (2 s limit, BIRD semantics): handy in a
# notebook or with your own trainer. Training builds its own set with build_rewards().
_DEFAULT_SCORER: ExecutionScorer | None = None


def _default_scorer() -> ExecutionScorer:
    global _DEFAULT_SCORER
    if _DEFAULT_SCORER is None:
        _DEFAULT_SCORER = ExecutionScorer()
    return _DEFAULT_SCORER


class _DefaultScorerReward(RewardFunction):
    @property
    def scorer(self) -> ExecutionScorer:
        return _default_scorer()


execution_reward = _DefaultScorerReward("execution")
executable_reward = _DefaultScorerReward("executable")
partial_reward = _DefaultScorerReward("partial")
syntax_reward = _DefaultScorerReward("syntax")
format_reward = _DefaultScorerReward("format")


MODEL_REWARD = "reward_model"


def reward_weight_names() -> tuple[str, ...]:
    """Every name a weight may have: the registry's rewards, then the trained reward model's."""
    return (*REWARDS, MODEL_REWARD)


def build_rewards(
    weights: Any, *, scorer: ExecutionScorer | None = None, reasoning: bool = False,
    reward_model: Callable | None = None,
) -> tuple[list[Callable], list[float]]:
    """The enabled reward functions (weight > 0) and their weights, in :data:`REWARDS` order.

    ``weights`` is a :class:`~nl2sql_lib.config.RewardWeights` (or any object/dict with weights
    by reward name; a name without a weight is 0). The functions share ``scorer`` so that a
    candidate is executed once per batch. A ``reward_model`` weight > 0 appends
    ``reward_model`` (a :class:`nl2sql_lib.train.grpo.RewardModelReward`) last.
    """
    names = reward_weight_names()
    if isinstance(weights, dict):
        values = dict(weights)
    elif hasattr(weights, "model_dump"):
        values = weights.model_dump()
    else:
        values = {n: getattr(weights, n, 0.0) for n in names}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown reward(s) {sorted(unknown)}; known: {', '.join(names)}")
    enabled = [(name, float(values.get(name) or 0.0)) for name in REWARDS if (values.get(name) or 0.0) > 0]
    model_weight = float(values.get(MODEL_REWARD) or 0.0)
    if not enabled and model_weight <= 0:
        raise ValueError("every reward weight is 0: set rewards.execution (and others) > 0 in the parameter file")
    scorer = scorer or ExecutionScorer()
    funcs: list[Callable] = [RewardFunction(name, scorer, reasoning=reasoning) for name, _ in enabled]
    weights_out = [w for _, w in enabled]
    if model_weight > 0:
        if reward_model is None:
            raise ValueError("rewards.reward_model > 0 but no reward model was given: set the parameter reward_model")
        funcs.append(reward_model)
        weights_out.append(model_weight)
    return funcs, weights_out
