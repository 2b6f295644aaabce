"""Valid Efficiency Score (VES, BIRD) and Reward-based VES (R-VES, BIRD mini-dev).

For each question whose prediction is correct, gold and prediction are each timed ``repeats``
times (alternating, as BIRD does); the per-repeat ratios ``gold_time / pred_time`` outside
mean +/- 3 standard deviations are dropped and the rest averaged into the question's
``time_ratio`` (0 for a wrong prediction). Then

    VES   = 100 * mean(sqrt(time_ratio))                    (BIRD dev)
    R-VES = 100 * mean(sqrt(reward(time_ratio)))            (BIRD mini-dev)

with ``reward`` = 1.25 for a ratio >= 2, 1 for [1, 2), 0.75 for [0.5, 1), 0.5 for [0.25, 0.5),
0.25 below 0.25, and 0 for a wrong prediction. Timing here includes fetching the rows, under
the same read-only engine as everything else; absolute VES values depend on the machine, so
compare systems measured in one run.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from ..sql.execute import execute_sql

__all__ = ["time_ratio", "clean_outliers", "ves", "rves", "rves_reward"]


def clean_outliers(values: Sequence[float]) -> list[float]:
    """Keep values strictly within mean +/- 3 population standard deviations (BIRD's clean_abnormal)."""
    if not values:
        return []
    mean = statistics.fmean(values)
    std = statistics.pstdev(values)
    kept = [v for v in values if mean - 3 * std < v < mean + 3 * std]
    return kept or list(values)  # all equal values: std is 0, keep them


def time_ratio(db_path: str | Path, pred_sql: str, gold_sql: str, judge, *, repeats: int = 10) -> float:
    """``gold_time / pred_time`` averaged over ``repeats`` after outlier removal; 0 if pred is wrong."""
    if not judge.judge(db_path, gold_sql, pred_sql).correct:
        return 0.0
    pred_sql, gold_sql = judge.prepare(pred_sql), judge.prepare(gold_sql)
    ratios = []
    for _ in range(max(1, repeats)):
        pred = execute_sql(db_path, pred_sql, timeout=judge.timeout, max_rows=judge.gold_max_rows)
        gold = execute_sql(db_path, gold_sql, timeout=judge.gold_timeout, max_rows=judge.gold_max_rows)
        if not pred.ok or not gold.ok:
            return 0.0
        ratios.append(gold.elapsed / max(pred.elapsed, 1e-9))
    kept = clean_outliers(ratios)
    return sum(kept) / len(kept)


def ves(ratios: Sequence[float]) -> float:
    """BIRD's VES over per-question time ratios (0 for wrong predictions), in [0, inf)."""
    if not ratios:
        return 0.0
    return 100.0 * sum(math.sqrt(r) for r in ratios) / len(ratios)


def rves_reward(ratio: float) -> float:
    """BIRD mini-dev's bucketed reward for one question's time ratio."""
    if ratio == 0:
        return 0.0
    if ratio >= 2:
        return 1.25
    if ratio >= 1:
        return 1.0
    if ratio >= 0.5:
        return 0.75
    if ratio >= 0.25:
        return 0.5
    return 0.25


def rves(ratios: Sequence[float]) -> float:
    """BIRD mini-dev's R-VES over per-question time ratios."""
    if not ratios:
        return 0.0
    return 100.0 * sum(math.sqrt(rves_reward(r)) for r in ratios) / len(ratios)
