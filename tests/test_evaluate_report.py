"""report.md tables and plots from a metrics dict of the eval/metrics.json shape."""

from __future__ import annotations

from pathlib import Path

from nl2sql_lib.evaluate.report import write_report

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
    assert "| sft/greedy | 10 | 40.0 | - | - |" in text
    assert "| sft/vote@4 | 10 | 50.0 | 30.0 | 61.0 |" in text
    assert "| sft/greedy | 50.0 (6) | 25.0 (4) |" in text  # by difficulty, columns sorted: moderate, simple
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
