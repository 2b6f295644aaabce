"""sqlglot-based parsing: validity, normalization, tokens, exact match, component scores."""

from __future__ import annotations

import pytest

from nl2sql_lib.sql.parse import (
    COMPONENTS,
    component_scores,
    exact_match,
    is_valid_syntax,
    normalize_sql,
    parse_sql,
    partial_match_score,
    sql_tokens,
    token_edit_distance,
)

GOLD = ("SELECT T1.name, T2.year FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.singer_id "
        "WHERE T1.age > 30 AND T2.year = 2014 GROUP BY T1.name HAVING count(*) > 1 "
        "ORDER BY T2.year DESC LIMIT 5")


def test_validity() -> None:
    assert is_valid_syntax("SELECT a FROM t")
    assert is_valid_syntax("SELECT a FROM t UNION SELECT b FROM u;")
    assert not is_valid_syntax("SELECT")
    assert not is_valid_syntax("SELECT a FROM")
    assert not is_valid_syntax("DROP TABLE t")
    assert not is_valid_syntax("")
    assert parse_sql("SELECT 1; SELECT 2") is None


def test_normalize_and_tokens() -> None:
    assert normalize_sql("select  Name from  Singer where Age>3") == "SELECT name FROM singer WHERE age > 3"
    assert normalize_sql("not sql ((") == "not sql (("
    assert sql_tokens("select Name from T where x = 'Ab'") == ["SELECT", "name", "FROM", "t", "WHERE", "x", "=", "'Ab'"]
    assert token_edit_distance("SELECT a FROM t", "select A from T") == 0
    assert token_edit_distance("SELECT a FROM t", "SELECT b FROM t WHERE c = 1") == 5


def test_exact_match_ignores_order_that_cannot_change_the_answer() -> None:
    pred = ("select c.year, s.name from concert c join singer s on c.singer_id = s.id "
            "where c.year = 2014 and s.age > 30 group by s.name having count(*) > 1 "
            "order by c.year desc limit 5")
    assert exact_match(pred, GOLD)
    assert component_scores(pred, GOLD) == {c: 1.0 for c in COMPONENTS}
    assert partial_match_score(pred, GOLD) == 1.0


def test_exact_match_sees_real_differences() -> None:
    assert not exact_match(GOLD.replace("DESC", "ASC"), GOLD)
    assert not exact_match(GOLD.replace("LIMIT 5", "LIMIT 6"), GOLD)
    assert not exact_match(GOLD.replace("T1.age > 30", "T1.age >= 30"), GOLD)
    assert not exact_match("SELECT a FROM t ORDER BY a, b", "SELECT a FROM t ORDER BY b, a")


def test_component_scores_known_values() -> None:
    scores = component_scores("SELECT T1.name FROM singer AS T1 WHERE T1.age > 30", GOLD)
    assert scores["select"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # 1 of 1 predicted, 1 of 2 gold
    assert scores["from"] == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))  # singer of {singer, concert, on}
    assert scores["where"] == pytest.approx(2 / 3)
    assert scores["group_by"] == scores["having"] == scores["order_by"] == scores["limit"] == 0.0
    partial = partial_match_score("SELECT T1.name FROM singer AS T1 WHERE T1.age > 30", GOLD)
    assert partial == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 7)
    assert 0.0 <= partial <= 1.0
    # clauses absent from both count as matching; unparsable prediction scores 0
    assert component_scores("SELECT a FROM t", "SELECT a FROM t")["having"] == 1.0
    assert partial_match_score("SELECT a FROM", GOLD) == 0.0
    assert partial_match_score("SELECT b FROM t", "SELECT a FROM t") == pytest.approx(0.5)


@pytest.mark.spider
def test_every_spider_gold_matches_itself_exactly(spider_dev) -> None:
    """Regression: component scoring never raises on real queries, and gold vs gold is exact."""
    import json

    golds = [ex["query"] for ex in json.loads((spider_dev / "dev.json").read_text())]
    assert [g for g in golds if not exact_match(g, g)] == []
    assert all(partial_match_score(g, g) == 1.0 for g in golds[:200])
