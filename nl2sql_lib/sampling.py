"""Seeded subsamples: the one rule every stage uses to pick ``limit`` of its examples.

    kept = seeded_subsample(examples, cfg.max_train_examples, cfg.seed)

The sample is ``random.Random(seed).sample`` over the positions, returned in the original
order, so that a file sorted by database keeps every database represented and the same seed
gives the same selection in every stage (SFT, 06_eval, the revision trees, 01_data's source
limits). A ``limit`` of None or 0, or one at least the number of items, keeps them all.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def seeded_subsample(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """``limit`` of ``items`` drawn with ``seed``, kept in their original order (all when no limit)."""
    if not limit or limit >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def seeded_shuffled_head(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """The first ``limit`` of ``items`` after a seeded shuffle, in shuffled order (all, unshuffled,
    when ``limit`` is None).

    GRPO's older rule, kept so that its runs pick the same questions as before: a different
    selection than :func:`seeded_subsample` for the same seed.
    """
    if limit is None:
        return list(items)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:limit]
