"""The bundled benchmark: deterministic databases, verified gold SQL, split by database, varied
phrasing, and the generator for a user's own database."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlglot

from nl2sql_lib.data.bundled import (DEV_DBS, DOMAINS, TRAIN_DBS, build_bundled,
                                     generate_pairs_for_database)
from nl2sql_lib.data.bundled.generate_db import build_database, domain
from nl2sql_lib.data.bundled.questions import (extreme_is_tied, shared_values, tied_at_cut,
                                               with_noun)
from nl2sql_lib.data.bundled.schema_info import pluralize, singularize
from nl2sql_lib.data.example import Example
from tests.fixtures.own_db import small_shop_db


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _readonly(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_bundled(tmp_path_factory.mktemp("bundled_a"), seed=0)


@pytest.fixture(scope="module")
def examples(bench) -> list[Example]:
    return bench.train + bench.dev


def test_regenerates_identically_and_reuses_identical_files(bench, tmp_path):
    again = build_bundled(tmp_path, seed=0)
    assert sorted(bench.databases) == sorted(again.databases)
    for db_id, path in bench.databases.items():
        assert _sha256(path) == _sha256(again.databases[db_id]), db_id
    key = lambda ex: (ex.question_id, ex.question, ex.sql, ex.evidence, ex.difficulty)
    assert [key(e) for e in bench.train + bench.dev] == [key(e) for e in again.train + again.dev]
    # writing again into the same folder keeps the identical files untouched
    stamps = {db: p.stat().st_mtime_ns for db, p in again.databases.items()}
    for item in DOMAINS:
        assert build_database(item, tmp_path, seed=0) == again.databases[item.db_id]
    assert {db: p.stat().st_mtime_ns for db, p in again.databases.items()} == stamps
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".sqlite")]


def test_singularize_and_pluralize():
    cases = {"movies": "movie", "cookies": "cookie", "categories": "category", "cities": "city",
             "companies": "company", "properties": "property", "agencies": "agency",
             "ties": "tie", "user movies": "user movie", "sales": "sale", "boxes": "box",
             "matches": "match", "addresses": "address", "species": "species"}
    for plural, singular in cases.items():
        assert singularize(plural) == singular, plural
        assert pluralize(singular) == plural, singular
    assert singularize("order") == "order"  # already singular


def test_no_question_says_movy(examples):
    assert not [ex.question for ex in examples if re.search(r"\bmovy\b", ex.question, re.I)]


def test_no_question_repeats_a_word_or_its_label_noun(examples):
    assert with_noun("property", "property type") == "property type"
    assert with_noun("project", "'Project River'") == "'Project River'"
    assert with_noun("author", "Ann Lee") == "author Ann Lee"
    assert with_noun("casting credit", "Credit Suisse") == "Credit Suisse"
    doubled = [ex.question for ex in examples if re.search(r"\b(\w+) '?\1\b", ex.question, re.I)]
    assert not doubled  # "for each property property type", "the project Project River"
    # "give the titles of titles": a table's plural is not its label's words
    assert not [ex.question for ex in examples if re.search(r"\b(\w+) of (the )?\1\b", ex.question)]
    assert not [ex.question for ex in examples if "''s " in ex.question]  # "What is 'X''s price?"


def test_questions_name_a_label_that_is_not_the_row(examples):
    """sales are labelled by buyer_name: 'List the buyer names of sales ...', not 'Which sales?'"""
    returned = [(m[1], ex.question) for ex in examples
                if (m := re.match(r"SELECT (?:T\d\.)?(buyer_name|character_name|visitor_name)\b", ex.sql))]
    assert len(returned) >= 10
    assert not [q for label, q in returned if label.replace("_", " ") not in q]


def test_other_seed_gives_other_data(bench, tmp_path):
    path = build_database(domain("retail"), tmp_path, seed=1)
    assert _sha256(path) != _sha256(bench.databases["retail"])


def test_layout_sizes_and_keys(bench):
    assert len(bench.databases) >= 8
    for db_id, path in bench.databases.items():
        assert path == bench.db_root / db_id / f"{db_id}.sqlite"
        with _readonly(path) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            assert len(tables) >= 4, db_id
            fks = sum(len(conn.execute(f"PRAGMA foreign_key_list({t})").fetchall()) for t in tables)
            assert fks >= 3, db_id
            sizes = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables]
            assert max(sizes) >= 1000 and max(sizes) <= 10_000, (db_id, sizes)
            assert sum(1 for s in sizes if s >= 100) >= 3, (db_id, sizes)


def test_counts_labels_and_fields(bench, examples):
    assert len(examples) >= 1500
    assert len(bench.dev) >= 200
    ids = [ex.question_id for ex in examples]
    assert len(set(ids)) == len(ids)
    for ex in examples:
        assert re.fullmatch(rf"bundled-{ex.db_id}-\d{{4}}", ex.question_id)
        assert ex.source == "bundled" and Path(ex.db_path).is_file()
        assert Path(ex.db_path) == bench.databases[ex.db_id]
    by_difficulty = Counter(ex.difficulty for ex in examples)
    assert set(by_difficulty) == {"simple", "moderate", "challenging"}
    assert min(by_difficulty.values()) >= 0.1 * len(examples)
    with_evidence = [ex for ex in examples if ex.evidence]
    assert 0.15 * len(examples) <= len(with_evidence) < len(examples)
    assert any(" refers to " in ex.evidence for ex in with_evidence)


def test_dev_and_train_databases_are_disjoint(bench):
    train_dbs = {ex.db_id for ex in bench.train}
    dev_dbs = {ex.db_id for ex in bench.dev}
    assert train_dbs == set(TRAIN_DBS) and dev_dbs == set(DEV_DBS)
    assert not train_dbs & dev_dbs
    assert not {ex.db_path for ex in bench.train} & {ex.db_path for ex in bench.dev}
    assert len(dev_dbs) >= 2 and len(train_dbs) >= 6


def test_every_gold_sql_executes_and_returns_rows(examples):
    empty = 0
    connections: dict[str, sqlite3.Connection] = {}
    for ex in examples:
        conn = connections.setdefault(ex.db_path, _readonly(ex.db_path))
        rows = conn.execute(ex.sql).fetchall()  # raises if the gold SQL is broken
        if not rows or all(v is None for v in rows[0]):
            empty += 1
        sqlglot.parse_one(ex.sql, read="sqlite")
    for conn in connections.values():
        conn.close()
    assert empty <= 0.05 * len(examples)


def test_top_k_gold_answers_do_not_depend_on_tie_order(examples, tmp_path):
    conn = sqlite3.connect(tmp_path / "ties.sqlite")
    conn.executescript("CREATE TABLE t (name TEXT, score INT);"
                       "INSERT INTO t VALUES ('a', 3), ('b', 3), ('c', 1);")
    assert tied_at_cut(conn, "SELECT name FROM t ORDER BY score DESC LIMIT 1", 2.0)
    assert not tied_at_cut(conn, "SELECT name FROM t ORDER BY score DESC LIMIT 2", 2.0)
    assert not tied_at_cut(conn, "SELECT name FROM t ORDER BY score ASC LIMIT 1", 2.0)
    conn.close()
    top_k = [ex for ex in examples if re.search(r" LIMIT \d+$", ex.sql)]
    assert len(top_k) >= 100
    connections: dict[str, sqlite3.Connection] = {}
    for ex in top_k:
        conn = connections.setdefault(ex.db_path, _readonly(ex.db_path))
        assert not tied_at_cut(conn, ex.sql, 5.0), ex.sql
    for conn in connections.values():
        conn.close()


def test_the_extreme_parent_of_a_question_is_a_single_row(examples, tmp_path):
    conn = sqlite3.connect(tmp_path / "extreme.sqlite")
    conn.executescript("CREATE TABLE authors (name TEXT, birth_year INT);"
                       "INSERT INTO authors VALUES ('a', 1950), ('b', 1950), ('c', 1990);")
    assert extreme_is_tied(conn, "authors", "birth_year", "MIN")
    assert not extreme_is_tied(conn, "authors", "birth_year", "MAX")
    conn.close()
    extreme = [ex for ex in examples if ex.extra["shape"] == "c_of_extreme_parent"]
    assert extreme
    connections: dict[str, sqlite3.Connection] = {}
    for ex in extreme:
        match = re.search(r"WHERE T2\.(\S+) = \(SELECT (MAX|MIN)\(\S+\) FROM (\S+)\)$", ex.sql)
        conn = connections.setdefault(ex.db_path, _readonly(ex.db_path))
        assert not extreme_is_tied(conn, match[3], match[1], match[2]), ex.question
    for conn in connections.values():
        conn.close()


def test_look_ups_name_a_single_row(examples, tmp_path):
    conn = sqlite3.connect(tmp_path / "names.sqlite")
    conn.executescript("CREATE TABLE casting (character_name TEXT, role_type TEXT);"
                       "INSERT INTO casting VALUES ('Chef Allen', 'lead'), ('Chef Allen', 'cameo'),"
                       " ('Spy Moss', 'lead');")
    assert shared_values(conn, "casting", "character_name") == {"Chef Allen"}
    assert shared_values(conn, "casting", "character_name", among=["Spy Moss"]) == set()
    assert shared_values(conn, "casting", "character_name", among=["Spy Moss", "Chef Allen"]) == {"Chef Allen"}
    conn.close()
    lookups = []
    for ex in examples:
        if ex.extra["shape"] == "s_lookup":
            match = re.fullmatch(r"SELECT \S+ FROM (\S+) WHERE (\S+) = (.+)", ex.sql)
        elif ex.extra["shape"] == "m_join_list":
            match = re.search(r"INNER JOIN (\S+) AS T2 ON .* WHERE T2\.(\S+) = (.+)$", ex.sql)
        else:
            continue
        lookups.append((ex, match))
    assert len(lookups) >= 100
    connections: dict[str, sqlite3.Connection] = {}
    for ex, match in lookups:
        conn = connections.setdefault(ex.db_path, _readonly(ex.db_path))
        table, column, value = match.groups()
        count = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = {value}").fetchone()[0]
        assert count == 1, ex.question
    for conn in connections.values():
        conn.close()


def test_query_shapes_cover_the_difficulty_ladder(examples):
    sqls = defaultdict(list)
    for ex in examples:
        sqls[ex.difficulty].append(ex.sql.upper())
    assert not any(" JOIN " in s for s in sqls["simple"])
    for needle in (" JOIN ", " GROUP BY ", " HAVING ", " IN (SELECT"):
        assert any(needle in s for s in sqls["moderate"]), needle
    for needle in (" INTERSECT ", " EXCEPT ", " UNION ", "CASE WHEN", "(SELECT AVG(", " NOT IN "):
        assert any(needle in s for s in sqls["challenging"]), needle


def test_questions_are_phrased_in_varied_ways(examples):
    by_shape = defaultdict(list)
    for ex in examples:
        by_shape[ex.extra["shape"]].append(ex.question)
    assert len(by_shape) >= 20
    for shape, questions in by_shape.items():
        if len(questions) >= 30:
            prefixes = {" ".join(q.split()[:2]).lower() for q in questions}
            assert len(prefixes) >= 3, (shape, prefixes)
    assert len({(ex.db_id, ex.question) for ex in examples}) == len(examples)
    assert len({" ".join(ex.question.split()[:3]) for ex in examples}) >= 300


def test_generator_on_a_users_own_database(tmp_path):
    db = tmp_path / "my shop.sqlite"
    small_shop_db(db)
    before = _sha256(db)
    pairs = generate_pairs_for_database(db, n=60, seed=3)
    assert _sha256(db) == before  # opened read-only, never changed
    assert 40 <= len(pairs) <= 60
    assert pairs == generate_pairs_for_database(db, n=60, seed=3)  # deterministic
    with _readonly(db) as conn:
        for ex in pairs:
            assert ex.db_id == "my shop" and ex.db_path == str(db) and ex.source == "generated"
            assert conn.execute(ex.sql).fetchall(), ex.sql
    assert {ex.difficulty for ex in pairs} == {"simple", "moderate", "challenging"}
    assert any('"sale lines"' in ex.sql and " JOIN " in ex.sql for ex in pairs)
    assert len({ex.question for ex in pairs}) == len(pairs)


def test_generator_never_creates_a_missing_database(tmp_path):
    missing = tmp_path / "nope" / "absent.sqlite"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        generate_pairs_for_database(missing)
    assert not missing.exists() and not missing.parent.exists()


def test_same_questions_in_a_fresh_process_with_other_hash_seed(bench):
    """Nothing depends on set/dict hashing: another interpreter gives the same questions."""
    path = bench.databases["hospital"]
    code = ("import json, sys; from pathlib import Path; "
            "from nl2sql_lib.data.bundled import questions_for; "
            "from nl2sql_lib.data.bundled.generate_db import domain; "
            f"print(json.dumps([[e.question, e.sql, e.evidence] for e in questions_for(domain('hospital'), Path({str(path)!r}))]))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    expected = [[e.question, e.sql, e.evidence] for e in bench.dev if e.db_id == "hospital"]
    assert json.loads(out) == expected
