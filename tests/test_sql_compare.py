"""Comparison rules on hand-made results and queries."""

from __future__ import annotations

import pytest

from nl2sql_lib.sql.compare import query_orders, remove_distinct, results_match


def bird(pred, gold, **kw):
    return results_match(pred, gold, semantics="bird", **kw)


def spider(pred, gold, order=False, **kw):
    return results_match(pred, gold, semantics="spider", order_matters=order, **kw)


def test_bird_is_a_set_of_rows_with_column_order() -> None:
    gold = [(1, "a"), (2, "b")]
    assert bird([(2, "b"), (1, "a")], gold)  # row order ignored
    assert bird([(1, "a"), (1, "a"), (2, "b")], gold)  # duplicates ignored
    assert not bird([("a", 1), ("b", 2)], gold)  # column order matters
    assert not bird([(1, "a")], gold)  # missing row
    assert not bird([(1, "a", 0), (2, "b", 0)], gold)  # extra column


def test_spider_is_a_multiset_with_column_permutation() -> None:
    gold = [(1, "a"), (2, "b")]
    assert spider([("b", 2), ("a", 1)], gold)  # columns permuted, rows reordered (gold not ordered)
    assert not spider([(1, "a"), (1, "a"), (2, "b")], gold)  # duplicates count
    assert not spider([(1, "a")], gold)
    assert spider([], [])
    assert not spider([], gold) and not spider(gold, [])


def test_spider_order_only_when_gold_orders() -> None:
    gold = [(1, "a"), (2, "b")]
    assert spider([(2, "b"), (1, "a")], gold, order=False)
    assert not spider([(2, "b"), (1, "a")], gold, order=True)
    assert spider([("a", 1), ("b", 2)], gold, order=True)  # permuted columns, same row order
    # bird ignores order_matters entirely
    assert bird([(2, "b"), (1, "a")], gold, order_matters=True)


def test_spider_permutation_search_with_many_columns() -> None:
    gold = [(1, 2, 3, 4, "x"), (5, 6, 7, 8, "y")]
    pred = [("y", 8, 7, 6, 5), ("x", 4, 3, 2, 1)]
    assert spider(pred, gold)
    # same values per row but not a consistent column permutation
    assert not spider([("x", 4, 3, 2, 1), ("y", 5, 6, 7, 8)], gold)


def test_values_int_float_null_text() -> None:
    assert bird([(1,)], [(1.0,)]) and spider([(1,)], [(1.0,)])  # int == float
    assert bird([(None,)], [(None,)]) and spider([(None, 1)], [(None, 1)])  # NULL == NULL
    assert not bird([("1",)], [(1,)]) and not spider([("1",)], [(1,)])  # text != number
    assert not bird([("Pen",)], [("pen",)])  # text is case-sensitive
    assert not bird([(0.30000000000000004,)], [(0.3,)])  # exact by default


def test_tolerance_option() -> None:
    assert bird([(0.30000000000000004,)], [(0.3,)], tolerance=1e-9)
    assert spider([(3.14159, "a")], [("a", 3.1416)], tolerance=1e-3)
    assert not bird([(3.2,)], [(3.1,)], tolerance=1e-3)
    assert not bird([("0.3",)], [(0.3,)], tolerance=1e-3)  # text stays text


def test_missing_result_never_matches() -> None:
    assert not bird(None, [(1,)]) and not bird([(1,)], None) and not spider(None, None)


def test_unknown_semantics_is_an_error() -> None:
    with pytest.raises(ValueError, match="semantics"):
        results_match([], [], semantics="exact")


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("select a from t order by a desc limit 1", True),
        ("SELECT a FROM t", False),
        # test-suite's text test: a subquery's ORDER BY counts, a doubled space does not
        ("SELECT a FROM t WHERE b IN (SELECT b FROM u ORDER BY b LIMIT 1)", True),
        ("select a from t order  by a", False),
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
    ],
)
def test_query_orders_as_test_suite_decides(sql: str, expected: bool) -> None:
    assert query_orders(sql) is expected


def test_remove_distinct_everywhere_but_in_quotes() -> None:
    sql = "SELECT DISTINCT a, count(DISTINCT b) FROM t WHERE c = 'distinct' AND x IN (SELECT distinct y FROM u)"
    out = remove_distinct(sql)
    assert "distinct" not in out.lower().replace("'distinct'", "")
    assert "'distinct'" in out
    assert out.split() == "SELECT a, count( b) FROM t WHERE c = 'distinct' AND x IN (SELECT y FROM u)".split()
    assert remove_distinct("SELECT a FROM t") == "SELECT a FROM t"
