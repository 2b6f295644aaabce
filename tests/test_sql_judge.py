"""The judge: gold cache, both rules on the real Spider dev set, perturbed predictions."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from nl2sql_lib.sql import ErrorKind, Judge


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "pets.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE pet(id INTEGER PRIMARY KEY, name TEXT, kind TEXT, age INTEGER);
        INSERT INTO pet VALUES (1, 'Rex', 'dog', 3), (2, 'Tom', 'cat', 5), (3, 'Fido', 'dog', 3);
        """
    )
    conn.commit()
    conn.close()
    return path


def test_gold_runs_once_per_question(db: Path) -> None:
    judge = Judge()
    gold = "SELECT name FROM pet WHERE kind = 'dog'"
    for pred in ["SELECT name FROM pet WHERE kind = 'dog'", "SELECT name FROM pet", "SELEC x"]:
        judge.judge(db, gold, pred)
    assert judge.gold_executions == 1
    judge.judge(db, "SELECT count(*) FROM pet", "SELECT 3")
    assert judge.gold_executions == 2


def test_verdict_fields(db: Path) -> None:
    verdict = Judge().judge(db, "SELECT name FROM pet WHERE age = 3", "SELECT name FROM pet WHERE age < 4")
    assert verdict.correct and verdict.pred.ok and verdict.gold.rows == (("Rex",), ("Fido",))
    bad = Judge().judge(db, "SELECT name FROM pet", "SELECT nme FROM pet")
    assert not bad.correct and bad.pred.error is ErrorKind.NO_SUCH_COLUMN


def test_distinct_quirk_and_keep_distinct(db: Path) -> None:
    gold = "SELECT kind FROM pet"  # dog, cat, dog
    pred = "SELECT DISTINCT kind FROM pet"  # dog, cat
    assert Judge(semantics="bird").judge(db, gold, pred).correct  # set semantics
    assert Judge(semantics="spider").judge(db, gold, pred).correct  # DISTINCT removed before running
    assert not Judge(semantics="spider", keep_distinct=True).judge(db, gold, pred).correct  # multisets differ
    assert Judge(semantics="spider").judge(db, "SELECT count(DISTINCT kind) FROM pet", "SELECT 3").correct
    assert Judge(semantics="spider", keep_distinct=True).judge(
        db, "SELECT count(DISTINCT kind) FROM pet", "SELECT 2").correct


def test_spider_postprocess_and_order(db: Path) -> None:
    judge = Judge(semantics="spider")
    assert judge.judge(db, "SELECT name FROM pet WHERE age >= 5", "SELECT name FROM pet WHERE age > = 5").correct
    gold = "SELECT name, age FROM pet ORDER BY age DESC, id"
    assert judge.judge(db, gold, "SELECT age, name FROM pet ORDER BY age DESC, id").correct
    assert not judge.judge(db, gold, "SELECT name, age FROM pet ORDER BY age, id").correct
    assert Judge(semantics="bird").judge(db, gold, "SELECT name, age FROM pet ORDER BY age, id").correct


def test_identical_text_reuses_the_gold_result(db: Path) -> None:
    judge = Judge()
    verdict = judge.judge(db, "SELECT name FROM pet;", "  SELECT name FROM pet ")
    assert verdict.correct and verdict.pred is verdict.gold
    bad = judge.judge(db, "SELECT nme FROM pet", "SELECT nme FROM pet")
    assert not bad.correct  # a failing gold never makes its copy right


def test_missing_gold_database_is_reported(tmp_path: Path) -> None:
    verdict = Judge().judge(tmp_path / "none.sqlite", "SELECT 1", "SELECT 1")
    assert not verdict.correct and verdict.gold.error is ErrorKind.MISSING_DB
    assert not (tmp_path / "none.sqlite").exists()


def test_unknown_semantics_rejected() -> None:
    with pytest.raises(ValueError, match="semantics"):
        Judge(semantics="sets")


def test_prediction_results_are_reused_whatever_the_row_cap(db: Path, monkeypatch) -> None:
    from nl2sql_lib.sql import judge as module

    calls = []
    real = module.execute_sql
    monkeypatch.setattr(module, "execute_sql", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    judge = Judge()
    first = judge.execute(db, "SELECT name FROM pet", max_rows=10)
    again = judge.execute(db, "SELECT name FROM pet", max_rows=20)
    assert again is first and calls == ["SELECT name FROM pet"]
    # a complete result of 3 rows does not fit a cap of 2: that run is truncated, and never cached
    small = judge.execute(db, "SELECT name FROM pet", max_rows=2)
    assert small.truncated and len(small.rows) == 2
    assert judge.execute(db, "SELECT name FROM pet", max_rows=2) is not small
    assert judge.execute(db, "SELECT name FROM pet", max_rows=10) is first


def test_repeated_candidates_get_the_same_verdict(db: Path, monkeypatch) -> None:
    from nl2sql_lib.sql import judge as module

    calls = []
    real = module.execute_sql
    monkeypatch.setattr(module, "execute_sql", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    judge = Judge()
    gold = "SELECT name FROM pet WHERE kind = 'dog'"
    preds = ["SELECT name FROM pet WHERE age = 3", "SELECT name FROM pet", "SELEC x"]
    first = [judge.judge(db, gold, p) for p in preds]
    second = [judge.judge(db, gold, p) for p in preds]
    assert [v.correct for v in first] == [v.correct for v in second] == [True, False, False]
    assert all(a.pred is b.pred and a.gold is b.gold for a, b in zip(first, second))
    assert len(calls) == 1 + len(preds)  # gold once, each candidate once
    # the same candidate against another gold is compared again, with its cached result
    other = judge.judge(db, "SELECT name FROM pet", "SELECT name FROM pet WHERE age = 3")
    assert not other.correct and other.pred is first[0].pred and len(calls) == 2 + len(preds)
    # without a result cache every candidate runs every time
    uncached = Judge(pred_cache_size=0)
    calls.clear()
    for _ in range(2):
        assert [uncached.judge(db, gold, p).correct for p in preds] == [True, False, False]
    assert len(calls) == 1 + 2 * len(preds)


def test_spider_preparation_is_the_same_when_cached(db: Path) -> None:
    judge = Judge(semantics="spider")
    sql = "SELECT DISTINCT name FROM pet WHERE age > = 3"
    assert judge.prepare(sql) == judge.prepare(sql) == "SELECT  name FROM pet WHERE age >= 3"
    assert Judge(semantics="spider", keep_distinct=True).prepare(sql) == "SELECT DISTINCT name FROM pet WHERE age >= 3"
    assert Judge(semantics="bird").prepare(sql) == sql


# ---------------------------------------------------------------------------------------------
# Spider dev
# ---------------------------------------------------------------------------------------------


def _spider_items(spider_dev: Path) -> list[tuple[Path, str]]:
    items = []
    for ex in json.loads((spider_dev / "dev.json").read_text()):
        path = spider_dev / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if path.is_file():
            items.append((path, ex["query"]))
    return items


@pytest.mark.spider
@pytest.mark.parametrize("semantics", ["bird", "spider"])
def test_gold_against_gold_is_perfect_on_spider_dev(spider_dev: Path, semantics: str) -> None:
    items = _spider_items(spider_dev)
    assert len(items) == 972
    judge = Judge(semantics=semantics)
    # The comment makes the prediction's text differ, so it really runs (identical text would
    # reuse the gold result without executing).
    verdicts = [(gold, judge.judge(db, gold, "/* pred */ " + gold)) for db, gold in items]
    assert [gold for gold, v in verdicts if not v.correct] == []
    assert all(v.pred is not v.gold for _, v in verdicts)


def _perturb(gold: str, kind: str) -> str | None:
    tree = sqlglot.parse_one(gold, read="sqlite")
    if kind == "broken":
        return "SELEC" + gold[len("SELECT"):] if gold.upper().startswith("SELECT") else None
    if not isinstance(tree, exp.Select):
        return None
    if kind == "drop_order":
        if tree.args.get("order") is None or tree.args.get("limit") is not None:
            return None
        tree.set("order", None)
    elif kind == "swap_columns":
        if len(tree.expressions) < 2 or any(isinstance(e, exp.Star) for e in tree.expressions):
            return None
        items = list(tree.expressions)
        items[0], items[1] = items[1], items[0]
        tree.set("expressions", items)
    elif kind == "change_literal":
        where = tree.args.get("where")
        literal = next(iter(where.find_all(exp.Literal)), None) if where is not None else None
        if literal is None:
            return None
        if literal.is_number:
            literal.replace(exp.Literal.number(float(literal.this) + 1))
        else:
            literal.replace(exp.Literal.string(literal.this + "zz"))
    elif kind == "add_distinct":
        if tree.args.get("distinct") is not None:
            return None
        tree.set("distinct", exp.Distinct())
    return tree.sql(dialect="sqlite")


def _multiset_equal(pred: tuple, gold: tuple, ordered: bool) -> bool:
    return list(pred) == list(gold) if ordered else Counter(pred) == Counter(gold)


@pytest.mark.spider
def test_perturbed_predictions_follow_the_rules(spider_dev: Path) -> None:
    items = _spider_items(spider_dev)
    bird, spider, keep = Judge("bird"), Judge("spider"), Judge("spider", keep_distinct=True)
    counts: Counter = Counter()
    for db, gold in items:
        # drop ORDER BY (no LIMIT): bird ignores order, spider demands the gold's row order
        pred = _perturb(gold, "drop_order")
        if pred:
            counts["drop_order"] += 1
            b, s = bird.judge(db, gold, pred), spider.judge(db, gold, pred)
            assert b.correct, pred
            assert s.correct == (list(s.pred.rows) == list(s.gold.rows)), pred
            counts["drop_order_spider_wrong"] += not s.correct
        # swapped columns: spider matches up to column permutation, bird does not
        pred = _perturb(gold, "swap_columns")
        if pred:
            counts["swap"] += 1
            b, s = bird.judge(db, gold, pred), spider.judge(db, gold, pred)
            assert s.correct, pred
            columns_differ = any(row[0] != row[1] for row in b.gold.rows)
            assert b.correct == (not columns_differ), pred
            counts["swap_bird_wrong"] += not b.correct
        # changed literal: right only when the rows happen to be the same anyway
        pred = _perturb(gold, "change_literal")
        if pred:
            counts["literal"] += 1
            b, s = bird.judge(db, gold, pred), spider.judge(db, gold, pred)
            if b.pred.ok:
                assert b.correct == (set(b.pred.rows) == set(b.gold.rows)), pred
                assert s.correct == _multiset_equal(s.pred.rows, s.gold.rows, spider.order_matters(gold)), pred
            counts["literal_wrong"] += not b.correct
        # broken syntax: always wrong, classified as a syntax error
        pred = _perturb(gold, "broken")
        if pred:
            counts["broken"] += 1
            for judge in (bird, spider):
                verdict = judge.judge(db, gold, pred)
                assert not verdict.correct and verdict.pred.error is ErrorKind.SYNTAX, pred
        # added DISTINCT: default spider removes it, so always accepts it; without a LIMIT (which
        # could then cut a different set of rows) bird's sets accept it too, and spider with
        # keep_distinct accepts it only when the gold has no duplicate rows
        pred = _perturb(gold, "add_distinct")
        if pred:
            counts["distinct"] += 1
            assert spider.judge(db, gold, pred).correct, pred
            if "limit" not in gold.lower():
                assert bird.judge(db, gold, pred).correct, pred
                k = keep.judge(db, gold, pred)
                assert k.correct == (len(set(k.gold.rows)) == len(k.gold.rows)), pred
                counts["distinct_keep_wrong"] += not k.correct
    # every perturbation was exercised, and each rule actually rejected some predictions
    for key in ("drop_order", "swap", "literal", "broken", "distinct"):
        assert counts[key] >= 30, counts
    for key in ("drop_order_spider_wrong", "swap_bird_wrong", "literal_wrong", "distinct_keep_wrong"):
        assert counts[key] > 0, counts
    print(dict(counts))
