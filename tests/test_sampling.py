"""The one seeded-subsample rule (nl2sql_lib/sampling.py) picks what each former copy picked."""

import random

import pytest

from nl2sql_lib.sampling import seeded_shuffled_head, seeded_subsample


# The copies the helper replaced, verbatim in behaviour (train/sft.py, evaluate/systems.py,
# tree/stage.py, and data/loaders.py's two inline ones), so a change of rule fails here.
def _sft_copy(examples, limit, seed):
    if not limit or limit >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def _eval_copy(examples, limit, seed):
    if limit is None or len(examples) <= limit:
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def _tree_copy(examples, limit, seed):
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [e for i, e in enumerate(examples) if i in keep]


def _loaders_copy(records, limit, seed):
    if limit and len(records) > limit:
        chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
        records = [records[i] for i in chosen]
    return list(records)


COPIES = [_sft_copy, _eval_copy, _tree_copy, _loaders_copy]


@pytest.mark.parametrize("copy", COPIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n, limit, seed", [(50, 7, 0), (50, 7, 3), (1034, 200, 42), (10, 10, 1), (10, 12, 1),
                                            (5, None, 0), (1, 1, 9)])
def test_same_selection_as_every_former_copy(copy, n, limit, seed):
    items = [f"q{i}" for i in range(n)]
    assert seeded_subsample(items, limit, seed) == copy(items, limit, seed)


def test_limit_zero_keeps_everything_as_the_majority_of_copies_did():
    """sft and loaders' two copies kept all for limit 0, eval's and the tree's kept none; the
    parameters forbid 0 (ge=1), so only a direct caller can see the difference."""
    items = list(range(20))
    assert seeded_subsample(items, 0, 0) == items
    assert [copy(items, 0, 0) == items for copy in COPIES] == [True, False, False, True]


def test_file_order_and_seed_matter():
    items = list(range(100))
    picked = seeded_subsample(items, 10, 0)
    assert picked == sorted(picked) and len(set(picked)) == 10
    assert seeded_subsample(items, 10, 1) != picked
    assert seeded_subsample(tuple(items), 10, 0) == picked  # any sequence, a list back


def test_grpo_rule_is_the_former_shuffle_then_head():
    items = list(range(60))
    former = list(items)
    random.Random(5).shuffle(former)
    assert seeded_shuffled_head(items, 9, 5) == former[:9]
    assert seeded_shuffled_head(items, None, 5) == items
    assert items == list(range(60))  # the caller's list is not shuffled in place
