"""Loaders: Spider (real dev set), BIRD fixtures, sql-create-context, JSONL, and bad input."""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from nl2sql_lib.config import SourceParams
from nl2sql_lib.data.example import Example, read_examples, write_examples
from nl2sql_lib.data.loaders import (
    KNOWN_SOURCES,
    UnknownSourceError,
    load_source,
    spider_hardness,
)
from nl2sql_lib.data.schema import MissingDatabase
from nl2sql_lib.io import DataFileError
from tests.fixtures.bird.build_fixture import build_bird_fixture

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture()
def bird_dir(tmp_path) -> Path:
    return build_bird_fixture(tmp_path / "bird")


# --------------------------------------------------------------------------------------------
# Spider (the real dev set)
# --------------------------------------------------------------------------------------------


@pytest.mark.spider
def test_spider_dev_loads_all_questions_and_reports_the_62_without_database(spider_dev, tmp_path):
    loaded = load_source(SourceParams(type="spider", path=str(spider_dev)), tmp_path)
    dev = loaded["dev"]
    assert len(dev) == 1034 and loaded["train"] == []
    missing = [e for e in dev if e.extra.get("missing_db")]
    assert len(missing) == 62
    assert {e.db_id for e in missing} == {"wta_1"}
    assert sorted(loaded.report["missing_db"]) == sorted(e.question_id for e in missing)
    # the missing path is reported, and loading did not create it
    wta = Path(missing[0].db_path)
    assert wta == spider_dev / "database" / "wta_1" / "wta_1.sqlite"
    assert not wta.exists()
    # every other question points at a database that exists
    assert all(Path(e.db_path).is_file() for e in dev if not e.extra.get("missing_db"))
    assert len({e.question_id for e in dev}) == 1034
    assert dev[0].question_id == "spider-dev-0000"
    assert {e.source for e in dev} == {"spider"}


@pytest.mark.spider
def test_spider_missing_database_can_be_an_error_naming_db_and_path(spider_dev, tmp_path):
    source = SourceParams(type="spider", path=str(spider_dev), on_missing_db="error")
    with pytest.raises(MissingDatabase) as info:
        load_source(source, tmp_path)
    message = str(info.value)
    assert "wta_1" in message
    assert str(spider_dev / "database" / "wta_1" / "wta_1.sqlite") in message
    assert not (spider_dev / "database" / "wta_1" / "wta_1.sqlite").exists()


def _spider_layout(root: Path) -> Path:
    """Spider's release layout with its training files: dev.json, train_spider.json,
    train_others.json, tables.json and database/<db>/<db>.sqlite (two tiny databases)."""
    for db_id, rows in (("concert", [("Ann", 30), ("Bo", 41)]), ("pets", [("Rex", 3)])):
        (root / "database" / db_id).mkdir(parents=True)
        conn = sqlite3.connect(root / "database" / db_id / f"{db_id}.sqlite")
        conn.execute("CREATE TABLE t (name TEXT, age INT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
        conn.commit()
        conn.close()
    (root / "tables.json").write_text(json.dumps([{"db_id": "concert"}, {"db_id": "pets"}]))
    record = lambda db, q, sql: {"db_id": db, "question": q, "query": sql}  # noqa: E731
    (root / "dev.json").write_text(json.dumps([record("pets", "How many pets?", "SELECT count(*) FROM t")]))
    (root / "train_spider.json").write_text(json.dumps([
        record("concert", "List the names.", "SELECT name FROM t"),
        record("concert", "Names older than 35?", "SELECT name FROM t WHERE age > 35"),
    ]))
    (root / "train_others.json").write_text(json.dumps([record("pets", "Oldest pet?", "SELECT max(age) FROM t")]))
    return root


def test_spider_training_files_load_into_train_with_their_own_ids(tmp_path):
    root = _spider_layout(tmp_path / "spider")
    loaded = load_source(SourceParams(type="spider", path=str(root)), tmp_path / "work")
    assert [e.question_id for e in loaded["dev"]] == ["spider-dev-0000"]
    assert [e.question_id for e in loaded["train"]] == ["spider-train-0000", "spider-train-0001", "spider-others-0000"]
    assert [e.difficulty for e in loaded["train"]] == ["easy", "easy", "easy"]
    assert loaded["train"][2].db_path == str(root / "database" / "pets" / "pets.sqlite")
    assert loaded.report["missing_db"] == []
    # one file alone: its own split
    only = load_source(SourceParams(type="spider", path=str(root / "train_spider.json")), tmp_path / "work")
    assert len(only["train"]) == 2 and only["dev"] == []


def test_spider_db_id_missing_from_tables_json_names_file_and_record(tmp_path):
    root = _spider_layout(tmp_path / "spider")
    (root / "tables.json").write_text(json.dumps([{"db_id": "pets"}]))
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="spider", path=str(root)), tmp_path / "work")
    assert str(root / "train_spider.json") in str(info.value) and "record 0" in str(info.value)
    assert "'concert'" in str(info.value) and "tables.json" in str(info.value)


# Spider's evaluation.py hardness rule, applied to the parse Spider ships in dev.json ("sql"):
# an independent oracle for our sqlglot-based version.
_WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")


def _ref_hardness(sql: dict) -> str:
    def count_agg(units):
        return sum(1 for u in units if u[0] != 0)

    # get_nestedSQL: sub-queries in FROM/WHERE/HAVING conditions and set operations - not a
    # sub-query in FROM's table units
    conds = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    nested = [v for cond in conds for v in (cond[3], cond[4]) if isinstance(v, dict)]
    nested += [sql[k] for k in ("intersect", "except", "union") if sql[k] is not None]
    comp1 = sum(bool(x) for x in (sql["where"], sql["groupBy"], sql["orderBy"]))
    comp1 += sql["limit"] is not None
    comp1 += max(len(sql["from"]["table_units"]) - 1, 0)
    comp1 += sum(t == "or" for t in sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2])
    comp1 += sum(c[1] == _WHERE_OPS.index("like") for c in conds)
    aggs = count_agg(sql["select"][1]) + count_agg(sql["where"][::2]) + count_agg(sql["groupBy"])
    if sql["orderBy"]:
        units = sql["orderBy"][1]
        aggs += count_agg([u[1] for u in units if u[1]] + [u[2] for u in units if u[2]])
    aggs += count_agg(sql["having"])
    others = (aggs > 1) + (len(sql["select"][1]) > 1) + (len(sql["where"]) > 1) + (len(sql["groupBy"]) > 1)
    comp2 = len(nested)
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and comp2 == 0)
        or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
        or (comp1 <= 1 and others == 0 and comp2 <= 1)
    ):
        return "hard"
    return "extra"


@pytest.mark.spider
def test_spider_hardness_matches_spiders_rule_on_every_dev_query(spider_dev):
    records = json.loads((spider_dev / "dev.json").read_text())
    disagreements = [
        (r["query"], _ref_hardness(r["sql"]), spider_hardness(r["query"]))
        for r in records
        if _ref_hardness(r["sql"]) != spider_hardness(r["query"])
    ]
    assert disagreements == []
    usable = collections.Counter(spider_hardness(r["query"]) for r in records if r["db_id"] != "wta_1")
    # the figures of ../shared/spider-dev/NOTICE.md, computed with Spider's own evaluation.py
    assert usable == {"easy": 232, "medium": 416, "hard": 160, "extra": 164}


def test_spider_hardness_levels_on_small_queries():
    assert spider_hardness("SELECT count(*) FROM singer") == "easy"
    assert spider_hardness("SELECT name, age FROM singer WHERE age > 20") == "medium"
    assert spider_hardness("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)") == "hard"
    assert (
        spider_hardness(
            "SELECT T1.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T2.x = 1 "
            "GROUP BY T1.name ORDER BY count(*) DESC LIMIT 1"
        )
        == "extra"
    )
    assert spider_hardness("SELECT name FROM a UNION SELECT name FROM b") == "hard"
    # a sub-query in FROM is not "nested" for Spider (dev questions 744/745 are easy)
    assert spider_hardness("SELECT count(*) FROM (SELECT name FROM a INTERSECT SELECT name FROM b)") == "easy"


# --------------------------------------------------------------------------------------------
# BIRD fixtures
# --------------------------------------------------------------------------------------------


def test_bird_fixture_loads_and_round_trips_through_jsonl(bird_dir, tmp_path):
    loaded = load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path / "work")
    dev, train = loaded["dev"], loaded["train"]
    assert [e.question_id for e in dev] == [f"bird-dev-{i}" for i in range(5)]
    # train.json has neither question_id nor difficulty: ids are assigned
    assert [e.question_id for e in train] == ["bird-train-0", "bird-train-1"]
    assert {e.difficulty for e in train} == {"unknown"}
    assert [e.difficulty for e in dev] == ["simple", "moderate", "challenging", "simple", "moderate"]
    assert dev[0].evidence == "Czech koruna refers to Currency = 'CZK'"
    assert dev[2].evidence == ""
    assert dev[1].sql.startswith("SELECT SUM(T1.Amount)")
    assert Path(dev[3].db_path) == bird_dir / "dev" / "dev_databases" / "toxicology" / "toxicology.sqlite"
    assert Path(train[0].db_path) == bird_dir / "train" / "train_databases" / "movie_platform" / "movie_platform.sqlite"
    # every gold query executes on its database and returns what BIRD's gold file expects
    results = {}
    for example in dev + train:
        conn = sqlite3.connect(f"file:{example.db_path}?mode=ro", uri=True)
        results[example.question_id] = conn.execute(example.sql).fetchall()
        conn.close()
    assert results["bird-dev-0"] == [(1,)]  # customer 4: SME paying in CZK
    assert sorted(results["bird-dev-3"]) == [("c",), ("cl",)]
    assert all(results.values())
    # both splits survive a trip through JSONL unchanged
    for split, examples in (("dev", dev), ("train", train)):
        path = write_examples(tmp_path / f"{split}.jsonl", examples)
        assert read_examples(path) == examples


def test_bird_split_folders_and_the_folder_above_them_load_alike(bird_dir, tmp_path):
    whole = load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    dev_only = load_source(SourceParams(type="bird", path=str(bird_dir / "dev")), tmp_path)
    train_only = load_source(SourceParams(type="bird", path=str(bird_dir / "train")), tmp_path)
    assert dev_only["dev"] == whole["dev"] and dev_only["train"] == []
    assert train_only["train"] == whole["train"] and train_only["dev"] == []
    # the gold file BIRD ships beside dev.json agrees with the loaded SQL
    gold = (bird_dir / "dev" / "dev.sql").read_text().splitlines()
    assert [line.split("\t") for line in gold] == [[e.sql, e.db_id] for e in whole["dev"]]


def test_bird_db_id_missing_from_tables_json_names_file_and_record(bird_dir, tmp_path):
    tables_path = bird_dir / "dev" / "dev_tables.json"
    tables = [t for t in json.loads(tables_path.read_text()) if t["db_id"] != "toxicology"]
    tables_path.write_text(json.dumps(tables))
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    message = str(info.value)
    assert str(bird_dir / "dev" / "dev.json") in message and "record 3" in message
    assert "'toxicology'" in message and "dev_tables.json" in message


def test_bird_folder_without_question_files_says_where_it_looked(tmp_path):
    (tmp_path / "bird" / "dev").mkdir(parents=True)
    with pytest.raises(DataFileError, match="no BIRD train.json or dev.json"):
        load_source(SourceParams(type="bird", path=str(tmp_path / "bird")), tmp_path)


def test_bird_single_file_path_and_split_override(bird_dir, tmp_path):
    loaded = load_source(SourceParams(type="bird", path=str(bird_dir / "dev" / "dev.json"), split="train"), tmp_path)
    assert len(loaded["train"]) == 5 and loaded["dev"] == []


def test_bird_missing_database_names_db_and_path_and_creates_nothing(bird_dir, tmp_path):
    db = bird_dir / "dev" / "dev_databases" / "toxicology" / "toxicology.sqlite"
    db.unlink()
    with pytest.raises(MissingDatabase) as info:
        load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    assert "toxicology" in str(info.value) and str(db) in str(info.value)
    assert not db.exists()


def test_malformed_json_names_the_file_line_and_record(bird_dir, tmp_path):
    bad = bird_dir / "dev" / "dev.json"
    records = json.loads(bad.read_text())
    text = json.dumps(records, indent=2)
    broken = text.replace('"question_id": 2,', '"question_id": 2', 1)  # a missing comma in record 2
    bad.write_text(broken)
    line = broken[: broken.index('"question_id": 2')].count("\n") + 2
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    message = str(info.value)
    assert str(bad) in message and f"line {line}," in message and "record 2" in message
    # a comma missing between two records names the second one
    records_text = text.split("},\n  {")
    bad.write_text("},\n  {".join(records_text[:3]) + "}\n  {" + "},\n  {".join(records_text[3:]))
    with pytest.raises(DataFileError, match="record 3 of the list"):
        load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)


def test_record_without_sql_names_the_file_and_record(bird_dir, tmp_path):
    records = json.loads((bird_dir / "dev" / "dev.json").read_text())
    del records[3]["SQL"]
    (bird_dir / "dev" / "dev.json").write_text(json.dumps(records))
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    assert str(bird_dir / "dev" / "dev.json") in str(info.value) and "record 3" in str(info.value)
    assert "SQL" in str(info.value)


# --------------------------------------------------------------------------------------------
# sql-create-context, JSONL, unknown types
# --------------------------------------------------------------------------------------------


def test_create_context_materializes_each_distinct_context_once(tmp_path):
    source = SourceParams(type="create_context", path=str(FIXTURES / "create_context.jsonl"))
    loaded = load_source(source, tmp_path)
    train = loaded["train"]
    assert len(train) == 4  # the fifth record's context has a DROP TABLE: skipped and reported
    assert len(loaded.report["skipped"]) == 1 and "line 5" in loaded.report["skipped"][0]
    assert len({e.db_id for e in train}) == 3  # records 2 and 3 share one context
    assert train[1].db_path == train[2].db_path
    assert all(e.extra["empty_tables"] for e in train)
    for example in train:
        path = Path(example.db_path)
        assert path.is_file() and path.is_relative_to(tmp_path / "databases")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute(example.sql).fetchall()  # the gold SQL runs against the materialized schema
        conn.close()
    tables = sqlite3.connect(train[3].db_path).execute("SELECT name FROM sqlite_master").fetchall()
    assert {t[0] for t in tables} == {"department", "management", "head"}
    assert train[0].question_id == "ctx-create_context-1"
    # loading again reuses the files
    mtime = Path(train[0].db_path).stat().st_mtime_ns
    again = load_source(source, tmp_path)
    assert [e.db_path for e in again["train"]] == [e.db_path for e in train]
    assert Path(train[0].db_path).stat().st_mtime_ns == mtime


def test_jsonl_folder_loads_train_and_dev_and_checks_databases(bird_dir, tmp_path):
    loaded = load_source(SourceParams(type="bird", path=str(bird_dir)), tmp_path)
    folder = tmp_path / "data"
    write_examples(folder / "train.jsonl", loaded["train"])
    write_examples(folder / "dev.jsonl", loaded["dev"])
    again = load_source(SourceParams(type="jsonl", path=str(folder), name="mine"), tmp_path)
    assert [e.question_id for e in again["train"]] == [e.question_id for e in loaded["train"]]
    assert [e.sql for e in again["dev"]] == [e.sql for e in loaded["dev"]]
    assert {e.source for e in again["dev"]} == {"mine"}
    # a record whose database is gone: error naming db and path
    gone = Example("q1", "nowhere", str(tmp_path / "nowhere" / "nowhere.sqlite"), "q?", "SELECT 1")
    write_examples(tmp_path / "other.jsonl", [gone])
    with pytest.raises(MissingDatabase) as info:
        load_source(SourceParams(type="jsonl", path=str(tmp_path / "other.jsonl")), tmp_path)
    assert "nowhere" in str(info.value) and gone.db_path in str(info.value)
    assert not Path(gone.db_path).exists()


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    good = Example("q1", "d", "d.sqlite", "q?", "SELECT 1").to_dict()
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="jsonl", path=str(path)), tmp_path)
    assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_unknown_source_type_lists_the_known_ones(tmp_path):
    class Odd:
        type = "csv"
        path = str(tmp_path)

    with pytest.raises(UnknownSourceError) as info:
        load_source(Odd(), tmp_path)
    for kind in KNOWN_SOURCES:
        assert kind in str(info.value)
    with pytest.raises(ValidationError) as info:
        SourceParams(type="csv", path=str(tmp_path))
    assert "bird" in str(info.value) and "create_context" in str(info.value)


def test_limit_keeps_a_seeded_sample_in_file_order(bird_dir, tmp_path):
    source = SourceParams(type="bird", path=str(bird_dir), limit=3)
    first = load_source(source, tmp_path, seed=1)["dev"]
    second = load_source(source, tmp_path, seed=1)["dev"]
    assert len(first) == 3 and [e.question_id for e in first] == [e.question_id for e in second]
    ids = [int(e.question_id.rsplit("-", 1)[1]) for e in first]
    assert ids == sorted(ids)


def test_create_context_limit_samples_before_materializing(tmp_path):
    source = SourceParams(type="create_context", path=str(FIXTURES / "create_context.jsonl"), limit=2)
    # seed 4 draws records 2 and 3, which share one context: one database, not the file's three
    loaded = load_source(source, tmp_path / "a", seed=4)
    assert [e.question_id for e in loaded["train"]] == ["ctx-create_context-2", "ctx-create_context-3"]
    created = list((tmp_path / "a" / "databases").glob("*/*.sqlite"))
    assert [p.parent.name for p in created] == [loaded["train"][0].db_id]
    # seed 1 draws records 1 and 2: two contexts, two databases, the sampled ones only
    loaded = load_source(source, tmp_path / "b", seed=1)
    created = sorted(p.parent.name for p in (tmp_path / "b" / "databases").glob("*/*.sqlite"))
    assert created == sorted(e.db_id for e in loaded["train"]) and len(created) == 2


@pytest.mark.parametrize("context", [
    "CREATE TABLE t AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
    "CREATE VIEW v AS SELECT 1",
    "CREATE TABLE t (a INT); CREATE INDEX i ON t (a)",
    "CREATE TABLE t (a INT); DROP TABLE t",
])
def test_create_context_accepts_only_plain_create_table(tmp_path, context):
    from nl2sql_lib.data.loaders import materialize_context

    assert materialize_context(context, tmp_path, "ctx") is None
    assert not list(tmp_path.rglob("*.sqlite"))
    assert materialize_context("CREATE TABLE t (a INT, b TEXT)", tmp_path, "ok") is not None


# --------------------------------------------------------------------------------------------
# Your own SQLite databases: generated pairs, verified by execution
# --------------------------------------------------------------------------------------------


def test_sqlite_source_generates_verified_pairs_for_each_database(tmp_path):
    from tests.fixtures.own_db import small_shop_db

    folder = tmp_path / "mine"
    (folder / "branch").mkdir(parents=True)
    small_shop_db(folder / "shop.sqlite")
    small_shop_db(folder / "branch" / "branch.sqlite")
    before = {p: p.read_bytes() for p in folder.rglob("*.sqlite")}
    loaded = load_source(SourceParams(type="sqlite", path=str(folder), pairs_per_database=30), tmp_path / "work")
    assert loaded["dev"] == [] and loaded.report["files"] == [
        str(folder / "branch" / "branch.sqlite"), str(folder / "shop.sqlite")
    ]
    by_db = collections.Counter(e.db_id for e in loaded["train"])
    assert set(by_db) == {"shop", "branch"} and all(20 <= n <= 30 for n in by_db.values()), by_db
    for example in loaded["train"]:
        conn = sqlite3.connect(f"file:{example.db_path}?mode=ro", uri=True)
        assert conn.execute(example.sql).fetchall(), example.sql  # executes and returns rows
        conn.close()
    assert {p: p.read_bytes() for p in folder.rglob("*.sqlite")} == before  # read-only
    assert not list((tmp_path / "work").glob("**/*.sqlite"))  # nothing copied or created


def test_own_database_command_writes_pairs_that_reload(tmp_path, capsys):
    from nl2sql_lib.data.bundled.own_db import main
    from tests.fixtures.own_db import small_shop_db

    db = tmp_path / "shop.sqlite"
    small_shop_db(db)
    out = tmp_path / "pairs.jsonl"
    assert main([str(db), "--out", str(out), "--n", "25"]) == 0
    assert "wrote" in capsys.readouterr().out
    written = read_examples(out)
    assert 15 <= len(written) <= 25 and {e.source for e in written} == {"generated"}
    again = load_source(SourceParams(type="jsonl", path=str(out)), tmp_path)
    assert [e.sql for e in again["train"]] == [e.sql for e in written]


def test_sqlite_source_with_no_database_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFileError, match="no \\*.sqlite"):
        load_source(SourceParams(type="sqlite", path=str(tmp_path / "empty")), tmp_path)


def test_two_databases_of_one_name_are_refused_naming_both(tmp_path):
    from tests.fixtures.own_db import small_shop_db

    (tmp_path / "mine" / "shop").mkdir(parents=True)
    small_shop_db(tmp_path / "mine" / "shop.sqlite")
    small_shop_db(tmp_path / "mine" / "shop" / "shop.sqlite")
    with pytest.raises(DataFileError) as info:
        load_source(SourceParams(type="sqlite", path=str(tmp_path / "mine")), tmp_path)
    assert "'shop'" in str(info.value) and str(tmp_path / "mine" / "shop" / "shop.sqlite") in str(info.value)


def test_own_database_command_reports_bad_input_without_a_traceback(tmp_path, capsys):
    from nl2sql_lib.data.bundled.own_db import main

    for argv, expected in (([str(tmp_path / "absent.sqlite")], "no such SQLite file"),
                           ([str(tmp_path), "--n", "0"], "--n must be at least 1")):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--out", str(tmp_path / "out.jsonl")])
        assert info.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_every_source_type_has_its_loader_and_no_loader_is_unreachable():
    """config.SOURCE_TYPES (what parameter files may name) and the loaders cannot drift."""
    from nl2sql_lib.config import SOURCE_TYPES
    from nl2sql_lib.data.loaders import _LOADERS

    assert set(_LOADERS) == set(SOURCE_TYPES) == set(KNOWN_SOURCES)
    assert [SourceParams(type=kind, path=None).type for kind in SOURCE_TYPES] == list(SOURCE_TYPES)
