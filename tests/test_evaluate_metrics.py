"""Metrics, selection and VES on hand-made databases with known answers."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from nl2sql_lib.data.example import Example
from nl2sql_lib.evaluate.metrics import score_items, summarize
from nl2sql_lib.evaluate.selection import (
    oracle_correct,
    select_by_score,
    select_greedy,
    select_runnable_by_score,
    select_vote,
    select_weighted_vote,
    vote_groups,
)
from nl2sql_lib.evaluate.ves import clean_outliers, rves, rves_reward, time_ratio, ves
from nl2sql_lib.sql import Judge


def _db(root: Path, name: str) -> Path:
    path = root / name / f"{name}.sqlite"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE city(id INTEGER PRIMARY KEY, name TEXT, country TEXT, population INTEGER);
        INSERT INTO city VALUES (1, 'Paris', 'FR', 2100000), (2, 'Lyon', 'FR', 500000),
                                (3, 'Berlin', 'DE', 3600000), (4, 'Bonn', 'DE', 300000);
        """
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture()
def dbs(tmp_path: Path) -> dict[str, Path]:
    return {name: _db(tmp_path, name) for name in ("geo_a", "geo_b")}


def _ex(i: int, db: Path, sql: str, difficulty: str) -> Example:
    return Example(question_id=f"q{i}", db_id=db.parent.name, db_path=str(db), question="?", sql=sql,
                   difficulty=difficulty)


def test_known_ex_by_difficulty_db_and_errors(dbs) -> None:
    a, b = dbs["geo_a"], dbs["geo_b"]
    examples = [
        _ex(0, a, "SELECT name FROM city WHERE country = 'FR'", "simple"),
        _ex(1, a, "SELECT count(*) FROM city", "simple"),
        _ex(2, a, "SELECT max(population) FROM city", "moderate"),
        _ex(3, b, "SELECT name FROM city ORDER BY population DESC LIMIT 1", "moderate"),
        _ex(4, b, "SELECT country, sum(population) FROM city GROUP BY country", "challenging"),
        _ex(5, b, "SELECT name FROM nowhere", "challenging"),
    ]
    predictions = [
        "SELECT name FROM city WHERE country = 'FR'",  # right
        "SELECT count(id) FROM city",  # right, other SQL
        "SELEC max(population) FROM city",  # syntax
        "SELECT name FROM city ORDER BY population ASC LIMIT 1",  # wrong result
        "SELECT country, sum(populaton) FROM city GROUP BY country",  # no such column
        "SELECT 1",  # gold fails
    ]
    items = score_items(examples, predictions, Judge())
    assert [it["correct"] for it in items] == [True, True, False, False, False, False]
    assert [it["error"] for it in items] == [None, None, "syntax", "wrong_result", "no_such_column", "gold_failed"]
    assert [it["index"] for it in items] == list(range(6))
    assert items[0]["question_id"] == "q0" and items[3]["db_id"] == "geo_b"
    summary = summarize(items)
    assert summary["n"] == 6 and summary["ex"] == pytest.approx(2 / 6)
    assert summary["by_difficulty"] == {
        "challenging": {"n": 2, "ex": 0.0}, "moderate": {"n": 2, "ex": 0.0}, "simple": {"n": 2, "ex": 1.0},
    }
    assert summary["by_db"] == {"geo_a": {"n": 3, "ex": pytest.approx(2 / 3)}, "geo_b": {"n": 3, "ex": 0.0}}
    assert summary["errors"] == {"syntax": 1, "wrong_result": 1, "no_such_column": 1, "gold_failed": 1}
    assert summary["exact_match"] == pytest.approx(1 / 6)  # count(id) != count(*) textually
    assert 0 < summary["partial"] < 1
    assert set(summary["components"]) == {"select", "from", "where", "group_by", "having", "order_by", "limit"}


def test_score_items_rejects_mismatched_lengths(dbs) -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        score_items([_ex(0, dbs["geo_a"], "SELECT 1", "simple")], ["SELECT 1", "SELECT 2"], Judge())


def test_summarize_empty() -> None:
    assert summarize([]) == {"n": 0, "ex": 0.0, "by_difficulty": {}, "by_db": {}, "errors": {}}


def test_selection(dbs) -> None:
    db = dbs["geo_a"]
    judge = Judge()
    gold = "SELECT name FROM city WHERE population > 1000000"
    cands = [
        "SELECT name FROM city WHERE population > 100",  # 4 rows, alone
        "SELEC broken",  # fails: no vote
        "SELECT name FROM city WHERE population > 1000000",  # Paris, Berlin
        "SELECT name FROM city WHERE population >= 2100000",  # same rows
        "SELECT name FROM nowhere",  # fails
    ]
    assert select_greedy(cands) == cands[0] and select_greedy([]) == ""
    assert vote_groups(cands, db, judge) == [[0], [2, 3]]
    assert select_vote(cands, db, judge) == cands[2]
    # a tie goes to the group seen first; nothing executable falls back to the first candidate
    assert select_vote([cands[0], cands[2]], db, judge) == cands[0]
    assert select_vote(["SELEC 1", "SELECT x FROM nowhere"], db, judge) == "SELEC 1"
    assert select_by_score(cands, [0.1, 0.9, 0.3, 0.9, 0.0]) == cands[1]  # first of the best
    assert select_by_score(cands, lambda sql: -len(sql)) == cands[1]
    with pytest.raises(ValueError, match="3 scores for 5 candidates"):
        select_by_score(cands, [1, 2, 3])
    assert oracle_correct(cands, db, gold, judge)
    assert not oracle_correct([cands[0], cands[1]], db, gold, judge)


def test_weighted_vote(dbs) -> None:
    db = dbs["geo_a"]
    judge = Judge()
    cands = [
        "SELECT name FROM city WHERE population > 100",  # 4 rows, alone
        "SELEC broken",  # fails: never votes, whatever its score
        "SELECT name FROM city WHERE population > 1000000",  # Paris, Berlin
        "SELECT name FROM city WHERE population >= 2100000",  # same rows
    ]
    # two agreeing candidates of middling score (2 x 0.5) outweigh one confident outlier (0.88)
    assert select_weighted_vote(cands, [2.0, 9.0, 0.0, 0.0], db, judge) == cands[2]
    # a lone candidate the scorer trusts (0.99) outweighs a weak pair (2 x 0.12)
    assert select_weighted_vote(cands, [4.6, 9.0, -2.0, -2.0], db, judge) == cands[0]
    # the winning group's best-scored member is returned; -inf (no SQL) weighs nothing
    assert select_weighted_vote(cands, [float("-inf"), 0.0, 0.1, 0.7], db, judge) == cands[3]
    # nothing executes: the best score, as select_by_score
    assert select_weighted_vote(["SELEC 1", "SELECT x FROM nowhere"], [0.0, 1.0], db, judge) == "SELECT x FROM nowhere"
    with pytest.raises(ValueError, match="1 scores for 4 candidates"):
        select_weighted_vote(cands, [1.0], db, judge)


def test_score_selection_never_prefers_a_failing_query(dbs) -> None:
    db = dbs["geo_a"]
    judge = Judge()
    cands = [
        "SELECT name FROM city WHERE population > 100",  # runs
        "SELEC broken",  # fails to parse
        "SELECT name FROM city WHERE population > 1000000",  # runs
        "SELECT name FROM nowhere",  # fails: no such table
        "",  # no SQL extracted
    ]
    # the scorer is sure of the failing ones: the best-scored runnable one is picked instead
    assert select_runnable_by_score(cands, [0.1, 9.0, 0.5, 8.0, 7.0], db, judge) == cands[2]
    # ties among runnable candidates go to the first
    assert select_runnable_by_score(cands, [0.5, 9.0, 0.5, 8.0, 7.0], db, judge) == cands[0]
    # nothing runs: the best score of all, as select_by_score
    assert select_runnable_by_score(cands[1:2] + cands[3:4], [0.0, 1.0], db, judge) == cands[3]
    assert select_runnable_by_score([], [], db, judge) == ""
    with pytest.raises(ValueError, match="2 scores for 5 candidates"):
        select_runnable_by_score(cands, [1.0, 2.0], db, judge)


def test_vote_uses_spider_multisets(dbs) -> None:
    db = dbs["geo_a"]
    cands = ["SELECT country FROM city", "SELECT DISTINCT country FROM city", "SELECT country FROM city"]
    # bird: sets, all three agree; spider with keep_distinct: the DISTINCT one differs
    assert vote_groups(cands, db, Judge("bird")) == [[0, 1, 2]]
    assert vote_groups(cands, db, Judge("spider", keep_distinct=True)) == [[0, 2], [1]]


def test_ves_formulas_on_known_ratios() -> None:
    assert ves([4.0, 1.0, 0.0, 0.25]) == pytest.approx(100 * (2 + 1 + 0 + 0.5) / 4)
    assert [rves_reward(r) for r in (0, 3, 2, 1.5, 1, 0.7, 0.5, 0.3, 0.25, 0.1)] == [
        0, 1.25, 1.25, 1, 1, 0.75, 0.75, 0.5, 0.5, 0.25]
    assert rves([2.5, 1.0, 0.0, 0.1]) == pytest.approx(100 * (math.sqrt(1.25) + 1 + 0 + 0.5) / 4)
    assert ves([]) == 0.0 and rves([]) == 0.0
    values = [1.0] * 20 + [100.0]
    assert clean_outliers(values) == [1.0] * 20  # 100 lies beyond mean + 3 std
    assert clean_outliers([2.0, 2.0]) == [2.0, 2.0]


def test_time_ratio(dbs) -> None:
    db = dbs["geo_a"]
    judge = Judge()
    gold = "SELECT count(*) FROM city"
    assert time_ratio(db, "SELECT 3", gold, judge, repeats=3) == 0.0  # wrong: ratio 0
    ratio = time_ratio(db, "SELECT count(id) FROM city", gold, judge, repeats=5)
    assert 0.05 < ratio < 20
    # right (4**7 / 4096 = 4 rows) but much slower than the gold: ratio well below 1
    slow = "SELECT count(*) / 4096 FROM city a, city b, city c, city d, city e, city f, city g"
    assert 0 < time_ratio(db, slow, gold, judge, repeats=3) < 0.5


# --- component scores: clause items are cached per SQL text (issue 15) --------------------------

from nl2sql_lib.sql import parse as sql_parse  # noqa: E402

# (pred, gold) pairs that exercise alias resolution, sorted '=' operands, a compound query, a
# comparison nested in a swapped operand, a trailing semicolon and an unparsable prediction.
COMPONENT_PAIRS = [
    ("SELECT T1.name FROM singer AS T1 WHERE T1.age > 30", "SELECT singer.name FROM singer WHERE singer.age > 30"),
    ("SELECT singer.name FROM Singer WHERE 3 = singer.id;", "SELECT singer.name FROM singer WHERE singer.id = 3"),
    ("SELECT T1.name FROM singer AS T1 WHERE T1.id = 3 UNION SELECT T2.name FROM actor AS T2 WHERE 5 = T2.x",
     "SELECT name FROM singer WHERE id = 3 UNION SELECT name FROM actor WHERE x = 5"),
    ("SELECT a FROM t WHERE 3 = (SELECT max(b) FROM u WHERE u.z = t.y)",
     "SELECT a FROM t WHERE (SELECT max(b) FROM u WHERE u.z = t.y) = 3"),
    ("SELECT a, count(*) FROM t GROUP BY a ORDER BY count(*) DESC LIMIT 1", "SELECT a FROM t GROUP BY a"),
    ("SELEC a FROM t", "SELECT a FROM t"),
]


def _scores(pred: str, gold: str) -> tuple:
    return (sql_parse.exact_match(pred, gold), sql_parse.partial_match_score(pred, gold),
            sql_parse.component_scores(pred, gold))


def test_cached_components_give_the_uncached_scores() -> None:
    uncached = []
    for pred, gold in COMPONENT_PAIRS:
        sql_parse._components.cache_clear()  # every pair computed from scratch
        uncached.append(_scores(pred, gold))
    sql_parse._components.cache_clear()
    # Warm: each SQL is worked out once, then reused, in another order and repeatedly.
    for _ in range(2):
        warm = [_scores(pred, gold) for pred, gold in reversed(COMPONENT_PAIRS)][::-1]
        assert warm == uncached
    assert sql_parse._components.cache_info().hits > 0
    # The figures of the version that deep-copied every tree (git e95a836):
    assert [u[0] for u in uncached] == [True, True, False, False, False, False]
    assert [round(u[1], 4) for u in uncached] == [1.0, 1.0, 0.2222, 0.6667, 0.5333, 0.0]
    assert uncached[-1] == (False, 0.0, {c: 0.0 for c in sql_parse.COMPONENTS})


def test_component_items_match_the_copying_version() -> None:
    # Figures of the version that deep-copied every tree (git e95a836), including its quirk: a
    # comparison nested inside an operand that gets swapped keeps its own operand order.
    assert sql_parse._components(COMPONENT_PAIRS[2][0]) == {
        "select": ("singer.name",), "where": ("3 = singer.id",), "group_by": (), "having": (),
        "from": ("singer", "<union>", "SELECT t1.name FROM singer AS t1 WHERE t1.id = 3 UNION "
                 "SELECT t2.name FROM actor AS t2 WHERE 5 = t2.x"),
        "order_by": (), "limit": (),
    }
    assert sql_parse._components(COMPONENT_PAIRS[3][0])["where"] == ("(SELECT MAX(b) FROM u WHERE u.z = t.y) = 3",)
    assert sql_parse._components(COMPONENT_PAIRS[3][1])["where"] == ("(SELECT MAX(b) FROM u WHERE t.y = u.z) = 3",)


def test_components_leave_shared_parse_trees_alone() -> None:
    sql = COMPONENT_PAIRS[2][0]
    before = (sql_parse.parse_sql(sql).sql(), sql_parse.normalize_sql(sql))
    sql_parse._components.cache_clear()
    sql_parse._components(sql)
    assert (sql_parse.parse_sql(sql).sql(), sql_parse.normalize_sql(sql)) == before
    assert all(isinstance(items, tuple) for items in sql_parse._components(sql).values())  # no caller can edit them
