"""Confidence intervals and paired tests for execution accuracy, over questions.

    wilson_interval(k, n)                      # 95% interval of k right answers out of n
    bootstrap_interval(values, seed=0)         # percentile bootstrap of a mean, resampling questions
    mcnemar_exact_p(b, c)                      # exact two-sided McNemar p from the discordant counts
    compare_items(before, after, seed=0)       # two systems on the same questions, matched by id

Why these: a system's EX is k of n independent questions, so its uncertainty is a binomial
proportion's; Wilson's interval keeps its coverage at small n and near 0% or 100%, where the
normal approximation collapses to a zero-width interval. Two systems answering the *same*
questions are compared pairwise: only the questions where exactly one of them is right (the
discordant pairs: ``b`` gained, ``c`` lost) carry information about which is better, and under
"no difference" each of the ``b + c`` is a fair coin, so McNemar's exact p is the two-sided
binomial test of ``b`` out of ``b + c`` at 0.5. The difference's interval is the percentile
bootstrap of the per-question differences (right = 1, wrong = 0), resampling questions with a
fixed seed so that a re-run reports the same numbers.

The significance verdict rests on the exact McNemar p, not on the bootstrap interval: with few
discordant questions the percentile interval is approximate and can exclude 0 while p > 0.05
(4 gained and 0 lost of 40 questions: interval about [+2.5, +20] points, p = 0.125).

No questions (n = 0): the interval functions return None and :func:`paired_comparison` returns
None, since there is nothing to estimate; malformed input (k > n, unequal lengths, question sets
that differ) raises ValueError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "N_RESAMPLES",
    "PairedComparison",
    "bootstrap_interval",
    "compare_items",
    "mcnemar_exact_p",
    "pair_by_question",
    "paired_comparison",
    "wilson_interval",
]

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # the significance level the report's verdicts use (0.05)
N_RESAMPLES = 10_000


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of the proportion ``k / n``; None when ``n`` is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(
    values: Sequence[float], *, seed: int = 0, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (one value per question).

    None for no values. One value: the interval is that value (every resample is the same
    question; scipy refuses samples of one).
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    if data.size == 1:
        return float(data[0]), float(data[0])
    result = sps.bootstrap(
        (data,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return float(ci.low), float(ci.high)


def unpaired_difference(
    before: Sequence[float], after: Sequence[float], *, seed: int = 0, confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any] | None:
    """mean(after) - mean(before) for two independent samples (say, GRPO's per-step rewards in
    the first and the second half of training): the difference, its percentile bootstrap
    interval (each sample resampled on its own) and Welch's t-test p-value. None when either
    sample has fewer than 2 values. Two constant samples: p is 1 when equal, 0 when not."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    difference = float(b.mean() - a.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: the bootstrap and the t-test are degenerate
        return {"difference": difference, "difference_ci": [difference, difference],
                "p_value": 1.0 if difference == 0 else 0.0, "n_before": int(a.size), "n_after": int(b.size)}
    result = sps.bootstrap(
        (a, b), lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis), paired=False,
        n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    p_value = float(sps.ttest_ind(b, a, equal_var=False).pvalue)
    return {"difference": difference, "difference_ci": [float(ci.low), float(ci.high)],
            "p_value": p_value, "n_before": int(a.size), "n_after": int(b.size)}


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: the binomial test of ``b`` out of ``b + c`` at p = 0.5.

    1.0 when there is no discordant pair (nothing contradicts "no difference").
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact_p: discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(sps.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """``after`` against ``before`` on the same ``n`` questions (accuracies as fractions).

    ``gained`` (McNemar's b): questions ``after`` gets right and ``before`` wrong; ``lost`` (c):
    the reverse. ``difference`` = ex_after - ex_before = (gained - lost) / n.
    """

    n: int
    ex_before: float
    ex_after: float
    difference: float
    difference_ci: tuple[float, float]
    gained: int
    lost: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "difference_ci": list(self.difference_ci), "significant": self.significant}


def paired_comparison(
    before: Sequence[bool], after: Sequence[bool], *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> PairedComparison | None:
    """Compare two systems' verdicts, aligned question by question; None for no questions."""
    if len(before) != len(after):
        raise ValueError(
            f"paired_comparison: {len(before)} verdicts against {len(after)}; pair the same questions"
        )
    n = len(before)
    if n == 0:
        return None
    old = np.asarray(before, dtype=bool)
    new = np.asarray(after, dtype=bool)
    gained = int(np.sum(new & ~old))
    lost = int(np.sum(old & ~new))
    differences = new.astype(float) - old.astype(float)
    return PairedComparison(
        n=n,
        ex_before=float(old.mean()),
        ex_after=float(new.mean()),
        difference=(gained - lost) / n,
        difference_ci=bootstrap_interval(differences, seed=seed, n_resamples=n_resamples),
        gained=gained,
        lost=lost,
        p_value=mcnemar_exact_p(gained, lost),
    )


def _by_question(items: Sequence[dict], label: str) -> dict[Any, bool]:
    verdicts: dict[Any, bool] = {}
    for item in items:
        qid = item["question_id"]
        if qid in verdicts:
            raise ValueError(f"pair_by_question: question {qid!r} appears twice in {label}")
        verdicts[qid] = bool(item["correct"])
    return verdicts


def pair_by_question(before: Sequence[dict], after: Sequence[dict]) -> tuple[list[bool], list[bool]]:
    """Two systems' ``correct`` flags matched by ``question_id`` (in ``before``'s order).

    Raises ValueError when the two were not scored on the same questions.
    """
    old, new = _by_question(before, "before"), _by_question(after, "after")
    if old.keys() != new.keys():
        only_old, only_new = sorted(map(str, old.keys() - new.keys())), sorted(map(str, new.keys() - old.keys()))
        raise ValueError(
            f"pair_by_question: the systems were scored on different questions "
            f"(only before: {only_old[:5]}{'...' if len(only_old) > 5 else ''}; "
            f"only after: {only_new[:5]}{'...' if len(only_new) > 5 else ''})"
        )
    return list(old.values()), [new[qid] for qid in old]


def compare_items(
    before: Sequence[dict], after: Sequence[dict], *, seed: int = 0, n_resamples: int = N_RESAMPLES
) -> PairedComparison | None:
    """:func:`paired_comparison` of two lists of scored items (``question_id``, ``correct``)."""
    old, new = pair_by_question(before, after)
    return paired_comparison(old, new, seed=seed, n_resamples=n_resamples)
