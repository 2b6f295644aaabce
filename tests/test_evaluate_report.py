"""report.md tables and plots from a metrics dict of the eval/metrics.json shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from nl2sql_lib.evaluate.report import comparison_sentence, ex_interval, write_report
from nl2sql_lib.evaluate.stats import compare_items

METRICS = {
    "dev": {
        "sft/greedy": {"n": 10, "ex": 0.4, "by_difficulty": {"simple": {"n": 6, "ex": 0.5}, "moderate": {"n": 4, "ex": 0.25}},
                       "errors": {"syntax": 2, "wrong_result": 4}},
        "sft/vote@4": {"n": 10, "ex": 0.5, "by_difficulty": {"simple": {"n": 6, "ex": 0.5}, "moderate": {"n": 4, "ex": 0.5}},
                       "errors": {"wrong_result": 5}, "exact_match": 0.3, "partial": 0.61,
                       "components": {c: 0.5 for c in ("select", "from", "where", "group_by", "having", "order_by", "limit")}},
    },
    "spider_dev": {"base/greedy": {"n": 2, "ex": 1.0, "by_difficulty": {}, "errors": {}}},
}
ITEMS = {"dev": {"sft/greedy": [
    {"index": 0, "correct": True, "error": None, "components": {c: 1.0 for c in ("select", "from", "where", "group_by", "having", "order_by", "limit")}},
    {"index": 1, "correct": False, "error": "syntax", "components": {c: 0.0 for c in ("select", "from", "where", "group_by", "having", "order_by", "limit")}},
]}}


def test_tables_and_plots(tmp_path: Path) -> None:
    path = write_report(METRICS, tmp_path / "eval", items_by_system=ITEMS)
    assert path == tmp_path / "eval" / "report.md"
    text = path.read_text()
    assert "## dev" in text and "## spider_dev" in text
    # EX with its Wilson interval, from n and ex where the summary has no ex_ci (4 of 10, 5 of 10)
    assert "| sft/greedy | 10 | 40.0 | [16.8, 68.7] | - | - |" in text
    assert "| sft/vote@4 | 10 | 50.0 | [23.7, 76.3] | 30.0 | 61.0 |" in text
    assert "| base/greedy | 2 | 100.0 | [34.2, 100.0] | - | - |" in text
    # by difficulty, in the sources' order (simple, moderate): 3 of 6 and 1 of 4
    assert "| sft/greedy | 50.0 [18.8, 81.2] (6) | 25.0 [4.6, 69.9] (4) |" in text
    assert "| system/strategy | syntax | wrong_result |" in text and "| sft/greedy | 2 | 4 |" in text
    assert "| sft/greedy | 50.0 | 50.0 | 50.0 |" in text  # components averaged from the items
    assert "No misses." in text
    for name in ("dev_ex.png", "dev_errors.png", "dev_components.png", "spider_dev_ex.png"):
        png = tmp_path / "eval" / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(plots/{name})" in text


def test_without_plots_and_without_metrics(tmp_path: Path) -> None:
    path = write_report({}, tmp_path, plots=False)
    assert "No metrics." in path.read_text()
    assert not (tmp_path / "plots").exists()


def test_a_summary_s_own_interval_wins_over_wilson_from_n_and_ex():
    assert ex_interval({"n": 10, "ex": 0.4, "ex_ci": [0.1, 0.7]}) == (0.1, 0.7)
    assert ex_interval({"n": 10, "ex": 0.4}) == pytest.approx((0.16818, 0.68733), abs=1e-5)
    assert ex_interval({"n": 0, "ex": 0.0}) is None


# Ten questions: base right on q0-q1, sft on q0-q7 (6 gained, none lost: McNemar p = 2 / 2^6),
# sft's vote on q0-q6 and q8 (q8 gained, q7 lost: p = 1). Items listed in different orders.
def _items(right: set[int], order: list[int]) -> list[dict]:
    return [{"question_id": f"q{i}", "correct": i in right} for i in order]


def _compared(before: list[dict], after: list[dict], before_key: str, after_key: str) -> dict:
    record = compare_items(before, after, seed=0).as_dict()
    record["sentence"] = comparison_sentence(before_key, after_key, record)
    return {before_key: record}


def _comparison_metrics() -> dict:
    base = _items({0, 1}, list(range(10)))
    sft = _items(set(range(8)), list(reversed(range(10))))
    vote = _items({0, 1, 2, 3, 4, 5, 6, 8}, [5, 3, 1, 0, 2, 4, 6, 8, 9, 7])
    return {"dev": {
        "base/greedy": {"n": 10, "ex": 0.2, "errors": {"wrong_result": 8}},
        "sft/greedy": {"n": 10, "ex": 0.8, "errors": {"wrong_result": 2},
                       "comparisons": _compared(base, sft, "base/greedy", "sft/greedy")},
        "sft/vote@4": {"n": 10, "ex": 0.8, "errors": {"wrong_result": 2},
                       "comparisons": _compared(sft, vote, "sft/greedy", "sft/vote@4")},
    }}


def test_paired_comparisons_table_sentences_and_plot(tmp_path: Path) -> None:
    metrics = _comparison_metrics()
    gain = metrics["dev"]["sft/greedy"]["comparisons"]["base/greedy"]
    assert (gain["gained"], gain["lost"], gain["n"]) == (6, 0, 10)
    assert gain["difference"] == pytest.approx(0.6) and gain["p_value"] == pytest.approx(0.03125)
    low, high = gain["difference_ci"]
    assert 0.0 < low < 0.6 < high <= 1.0

    text = write_report(metrics, tmp_path).read_text()
    section = text[text.index("### Paired comparisons"):text.index("### Error taxonomy")]
    row = (f"| sft/greedy | base/greedy | 10 | +60.0 [{100 * low:+.1f}, {100 * high:+.1f}] "
           "| 6 | 0 | 0.0312 | significant |")
    assert row in section
    assert "| sft/vote@4 | sft/greedy | 10 | +0.0 [" in section and "| 1 | 1 | 1 | within noise |" in section
    assert ("- sft/greedy against base/greedy on the same 10 questions: +60.0 points "
            f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}), 6 gained and 0 lost; exact McNemar "
            "p = 0.0312: significant at 0.05 (sft/greedy is better).") in section
    assert "sft/vote@4 against sft/greedy on the same 10 questions: +0.0 points" in section
    assert "1 gained and 1 lost; exact McNemar p = 1: within noise at 0.05." in section
    assert ("Significant at 0.05: sft/greedy vs base/greedy; every other difference is within noise."
            in section)
    png = tmp_path / "plots" / "dev_comparisons.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(plots/dev_comparisons.png)" in text


def test_sentences_for_identical_systems_and_a_significant_loss():
    same = compare_items(_items({1, 2}, list(range(4))), _items({1, 2}, list(range(4)))).as_dict()
    assert comparison_sentence("a/greedy", "b/greedy", same) == (
        "b/greedy against a/greedy: the same verdict on all 4 questions, no difference (p = 1).")
    worse = compare_items(_items(set(range(7)), list(range(8))), _items({7}, list(range(8)))).as_dict()
    assert worse["gained"] == 1 and worse["lost"] == 7 and worse["p_value"] == pytest.approx(0.0703125)
    assert comparison_sentence("a/greedy", "b/greedy", worse).endswith("p = 0.0703: within noise at 0.05.")
    worst = compare_items(_items(set(range(8)), list(range(8))), _items(set(), list(range(8)))).as_dict()
    assert comparison_sentence("a/greedy", "b/greedy", worst).endswith(
        "p = 0.00781: significant at 0.05 (b/greedy is worse).")


def test_no_comparisons_no_section(tmp_path: Path) -> None:
    text = write_report(METRICS, tmp_path, plots=False).read_text()
    assert "Paired comparisons" not in text
