"""Intervals and paired tests of nl2sql_lib.evaluate.stats, on cases whose answers are known."""

from __future__ import annotations

import math

import pytest

from nl2sql_lib.evaluate.stats import (
    bootstrap_interval,
    compare_items,
    mcnemar_exact_p,
    pair_by_question,
    paired_comparison,
    wilson_interval,
)

Z = 1.959963984540054  # the normal quantile of 0.975


def wilson_by_formula(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval written out, to check the library against."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


# ---------------------------------------------------------------------------------------------
# Wilson
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(5, 10), (1, 6), (3, 40), (243, 972)])
def test_wilson_matches_the_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_formula(k, n), abs=1e-12)


def test_wilson_half_of_ten_is_the_textbook_interval():
    low, high = wilson_interval(5, 10)
    assert round(low, 4) == 0.2366 and round(high, 4) == 0.7634


def test_wilson_all_wrong_and_all_right_stay_inside_zero_one():
    # z^2 / (n + z^2) = 3.8415 / 13.8415 for n = 10
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z * Z / (10 + Z * Z)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z * Z), 1.0))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_wilson_of_no_questions_is_none_and_bad_counts_raise():
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_wilson_narrows_with_more_questions():
    small, large = wilson_interval(10, 40), wilson_interval(243, 972)
    assert (small[1] - small[0]) > 2 * (large[1] - large[0])


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_of_constant_values_is_that_value():
    assert bootstrap_interval([1.0] * 30) == (1.0, 1.0)      # all right
    assert bootstrap_interval([0.0] * 30) == (0.0, 0.0)      # all wrong
    assert bootstrap_interval([1.0]) == (1.0, 1.0)           # one question
    assert bootstrap_interval([]) is None                    # none


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [1.0] * 12 + [0.0] * 28
    first = bootstrap_interval(values, seed=7)
    assert bootstrap_interval(values, seed=7) == first
    assert bootstrap_interval(values, seed=8) != first
    low, high = first
    assert low < 0.3 < high
    # close to Wilson's for a proportion of 40 (both about +-14 points here)
    assert first == pytest.approx(wilson_interval(12, 40), abs=0.03)


def test_bootstrap_lower_bound_is_a_resampled_mean():
    # 4 ones among 40: every resampled mean is a multiple of 1/40
    low, high = bootstrap_interval([1.0] * 4 + [0.0] * 36, seed=0)
    assert (40 * low) == pytest.approx(round(40 * low)) and (40 * high) == pytest.approx(round(40 * high))


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,c,p", [
    (6, 0, 2 * 0.5 ** 6),                 # 0.03125: significant
    (0, 6, 2 * 0.5 ** 6),                 # symmetric
    (5, 0, 2 * 0.5 ** 5),                 # 0.0625: not
    (1, 0, 1.0),                          # one question decides nothing (2 * 0.5 capped at 1)
    (3, 3, 1.0),
    (4, 1, 2 * (1 + 5) / 32),             # P(X <= 1) + P(X >= 4) for Bin(5, .5) = 12/32
    (10, 2, 2 * (1 + 12 + 66) / 4096),    # 2 * P(X <= 2) for Bin(12, .5)
])
def test_mcnemar_exact_p_by_hand(b, c, p):
    assert mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_without_discordant_pairs_is_one_and_negative_counts_raise():
    assert mcnemar_exact_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


# ---------------------------------------------------------------------------------------------
# Paired comparison
# ---------------------------------------------------------------------------------------------


def test_identical_systems_differ_by_exactly_nothing():
    verdicts = [True, False, True, True, False, False, True, False]
    result = paired_comparison(verdicts, verdicts)
    assert result.difference == 0.0 and result.difference_ci == (0.0, 0.0)
    assert (result.gained, result.lost) == (0, 0)
    assert result.p_value == 1.0 and not result.significant


def test_all_right_against_all_wrong():
    result = paired_comparison([False] * 10, [True] * 10)
    assert result.ex_before == 0.0 and result.ex_after == 1.0
    assert result.difference == 1.0 and result.difference_ci == (1.0, 1.0)
    assert (result.gained, result.lost) == (10, 0)
    assert result.p_value == pytest.approx(2 * 0.5 ** 10) and result.significant


def test_one_sided_gain_of_six_is_significant_five_is_not():
    six = paired_comparison([False] * 6 + [True] * 14, [True] * 6 + [True] * 14)
    assert (six.gained, six.lost, six.n) == (6, 0, 20)
    assert six.difference == pytest.approx(0.3)
    assert six.p_value == pytest.approx(0.03125) and six.significant
    low, high = six.difference_ci
    assert 0.0 < low <= 0.3 <= high <= 0.6  # every resample gains, none loses

    five = paired_comparison([False] * 5 + [True] * 15, [True] * 20)
    assert five.p_value == pytest.approx(0.0625) and not five.significant


def test_gains_and_losses_are_counted_apart():
    before = [True, True, False, False, True, False]
    after = [True, False, True, True, True, False]   # q2 lost; q3, q4 gained
    result = paired_comparison(before, after, seed=3)
    assert (result.gained, result.lost) == (2, 1)
    assert result.difference == pytest.approx(1 / 6)
    assert result.ex_before == pytest.approx(3 / 6) and result.ex_after == pytest.approx(4 / 6)
    assert result.p_value == pytest.approx(1.0)
    assert result.difference_ci[0] < 0 < result.difference_ci[1]
    assert paired_comparison(before, after, seed=3) == result  # seeded
    as_json = result.as_dict()
    assert as_json["difference_ci"] == list(result.difference_ci) and as_json["significant"] is False


def test_no_questions_and_unequal_lengths():
    assert paired_comparison([], []) is None
    with pytest.raises(ValueError, match="pair the same questions"):
        paired_comparison([True], [True, False])


# ---------------------------------------------------------------------------------------------
# Matching scored items by question id
# ---------------------------------------------------------------------------------------------


def _items(verdicts: dict[str, bool]) -> list[dict]:
    return [{"question_id": qid, "correct": ok} for qid, ok in verdicts.items()]


def test_items_are_matched_by_question_id_not_position():
    before = _items({"a": True, "b": False, "c": False})
    after = _items({"c": True, "b": False, "a": True})   # same verdicts on a and b, c gained
    assert pair_by_question(before, after) == ([True, False, False], [True, False, True])
    result = compare_items(before, after)
    assert (result.gained, result.lost) == (1, 0)  # by position it would be 1 gained, 1 lost


def test_items_on_different_questions_refuse_to_pair():
    with pytest.raises(ValueError, match="different questions"):
        pair_by_question(_items({"a": True, "b": True}), _items({"a": True, "z": True}))
    with pytest.raises(ValueError, match="appears twice"):
        pair_by_question(_items({"a": True}) * 2, _items({"a": True}))
    assert compare_items([], []) is None


# ---- two independent samples (GRPO's reward, first half of the steps against the second) ----


def test_unpaired_difference_on_known_cases():
    from nl2sql_lib.evaluate.stats import unpaired_difference

    assert unpaired_difference([0.5], [0.5, 0.6]) is None  # fewer than 2 values on a side
    same = unpaired_difference([0.25, 0.25, 0.25], [0.25, 0.25])
    assert same["difference"] == 0 and same["difference_ci"] == [0, 0] and same["p_value"] == 1.0
    apart = unpaired_difference([0.0, 0.0], [1.0, 1.0])
    assert apart["difference"] == 1.0 and apart["p_value"] == 0.0
    # a clear rise: the interval excludes 0 and p is small
    rise = unpaired_difference([0.0, 0.25, 0.0, 0.25, 0.0, 0.25, 0.0, 0.25],
                               [0.75, 1.0, 0.75, 1.0, 0.75, 1.0, 0.75, 1.0])
    assert rise["difference"] == pytest.approx(0.75)
    assert 0 < rise["difference_ci"][0] <= 0.75 <= rise["difference_ci"][1] and rise["p_value"] < 1e-6
    # noise: the interval straddles 0
    noise = unpaired_difference([0.0, 0.5, 0.25, 0.75], [0.25, 0.5, 0.0, 0.75])
    assert noise["difference_ci"][0] < 0 < noise["difference_ci"][1] and noise["p_value"] > 0.5


def test_grpo_half_comparison_from_logged_points():
    from nl2sql_lib.train.grpo import half_comparison

    assert half_comparison([[1, 0.0], [2, 1.0], [3, 0.0]]) is None  # fewer than 2 points a half
    points = [[step, 0.0] for step in range(1, 5)] + [[step, 1.0] for step in range(5, 9)]
    halves = half_comparison(points)
    assert halves["first_half"] == 0.0 and halves["second_half"] == 1.0 and halves["difference"] == 1.0
    # an odd count leaves the middle point out
    assert half_comparison([[1, 0.0], [2, 0.0], [3, 0.5], [4, 1.0], [5, 1.0]])["n_before"] == 2
