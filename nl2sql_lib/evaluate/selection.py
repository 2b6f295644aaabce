"""Choosing one SQL among N candidates for a question.

- :func:`select_greedy`: the first candidate (what greedy decoding produced first);
- :func:`select_vote`: execution-result majority vote (self-consistency). Candidates that fail
  to execute do not vote; candidates whose results match (under the judge's comparison rule)
  form one group; the largest group wins, ties go to the group whose first member came first,
  and the group's first candidate is returned;
- :func:`select_by_score`: the candidate with the highest score from any scorer (a reward model
  plugs in here), the first one on ties;
- :func:`select_runnable_by_score`: the same among the candidates that execute; one that fails
  is picked only when none runs (issue #14: a query that fails can never be judged correct, so
  no score, however sure, should prefer it to one that runs);
- :func:`select_weighted_vote`: the vote again, but each executable candidate votes with the
  weight ``sigmoid(score)`` (its scorer's estimate that it is right, bounded in (0, 1)), so
  several agreeing candidates can outweigh one confident outlier and a lone candidate the
  scorer trusts can outweigh a weak majority (verifier-weighted self-consistency);
- :func:`oracle_correct`: pass@N, whether any candidate is correct.

Each ``select_*`` returns the chosen SQL string ("" for an empty list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..scoring import sigmoid
from ..sql.compare import results_match

# The selection strategies that need a reward model's scores (06_eval and ask).
RM_STRATEGIES = ("rm", "rm_vote")

__all__ = ["RM_STRATEGIES", "select_greedy", "select_vote", "select_by_score", "select_runnable_by_score",
           "select_weighted_vote", "oracle_correct", "vote_groups"]


def select_greedy(cands: Sequence[str]) -> str:
    return cands[0] if cands else ""


def vote_groups(cands: Sequence[str], db_path: str | Path, judge) -> list[list[int]]:
    """Indices of executable candidates grouped by equal results, in order of first appearance.

    Results are compared with the judge's rule (set for bird, multiset for spider; order does
    not matter here since there is no gold to say whether it should).
    """
    groups: list[tuple[tuple, list[int]]] = []
    for index, sql in enumerate(cands):
        result = judge.execute(db_path, sql)
        if not result.ok:
            continue
        for rows, members in groups:
            if results_match(result.rows, rows, semantics=judge.semantics, tolerance=judge.tolerance):
                members.append(index)
                break
        else:
            groups.append((result.rows, [index]))
    return [members for _, members in groups]


def select_vote(cands: Sequence[str], db_path: str | Path, judge) -> str:
    """Majority vote over execution results; falls back to the first candidate if none runs."""
    groups = vote_groups(cands, db_path, judge)
    if not groups:
        return select_greedy(cands)
    best = max(groups, key=lambda members: (len(members), -members[0]))
    return cands[best[0]]


def select_by_score(cands: Sequence[str], scores: Sequence[float] | Callable[[str], float]) -> str:
    """The candidate with the highest score (``scores`` aligned with ``cands``, or a function)."""
    if not cands:
        return ""
    values = [scores(c) for c in cands] if callable(scores) else list(scores)
    if len(values) != len(cands):
        raise ValueError(f"select_by_score: {len(values)} scores for {len(cands)} candidates")
    best = max(range(len(cands)), key=lambda i: (values[i], -i))
    return cands[best]


def select_runnable_by_score(cands: Sequence[str], scores: Sequence[float], db_path: str | Path, judge) -> str:
    """The highest-scored candidate that executes without error (first on ties); the
    highest-scored of all when none executes."""
    if len(scores) != len(cands):
        raise ValueError(f"select_runnable_by_score: {len(scores)} scores for {len(cands)} candidates")
    runs = [i for i, sql in enumerate(cands) if sql and judge.execute(db_path, sql).ok]
    if not runs:
        return select_by_score(cands, scores)
    return cands[max(runs, key=lambda i: (scores[i], -i))]


def select_weighted_vote(cands: Sequence[str], scores: Sequence[float], db_path: str | Path, judge) -> str:
    """Majority vote over execution results where each candidate votes with ``sigmoid(score)``.

    The group with the largest summed weight wins (ties: the group whose first member came
    first) and its highest-scored member is returned. When no candidate executes, the
    highest-scored candidate is returned, as :func:`select_by_score` would.
    """
    if len(scores) != len(cands):
        raise ValueError(f"select_weighted_vote: {len(scores)} scores for {len(cands)} candidates")
    groups = vote_groups(cands, db_path, judge)
    if not groups:
        return select_by_score(cands, scores)
    weight = [sigmoid(float(s)) for s in scores]
    best = max(groups, key=lambda members: (sum(weight[i] for i in members), -members[0]))
    return cands[max(best, key=lambda i: (scores[i], -i))]


def oracle_correct(cands: Sequence[str], db_path: str | Path, gold_sql: str, judge) -> bool:
    """pass@N: True when at least one candidate is judged correct (stops at the first)."""
    return any(judge.judge(db_path, gold_sql, sql).correct for sql in cands)
