"""Safe execution: hostile statements leave the database byte-identical and create no file."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from nl2sql_lib.sql.execute import (
    ErrorKind,
    MissingDatabase,
    classify_error,
    clear_connection_cache,
    execute_sql,
    open_readonly,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, price REAL);
        INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', 30.25);
        CREATE INDEX item_name ON item(name);
        """
    )
    conn.commit()
    conn.close()
    return path


HOSTILE = [
    "DROP TABLE item",
    "DELETE FROM item",
    "UPDATE item SET price = 0",
    "INSERT INTO item VALUES (9, 'x', 1)",
    "CREATE TABLE evil(a)",
    "CREATE TEMP TABLE evil(a)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE INDEX i ON item(name)",
    "ALTER TABLE item ADD COLUMN c",
    "ATTACH DATABASE '{dir}/attached.sqlite' AS other",
    "DETACH DATABASE main",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "VACUUM",
    "VACUUM INTO '{dir}/copy.sqlite'",
    "SELECT load_extension('/tmp/evil.so')",
    "REINDEX",
    "ANALYZE",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
    "SELECT 1; DROP TABLE item",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
]


@pytest.mark.parametrize("statement", HOSTILE)
def test_hostile_statement_changes_nothing(db: Path, statement: str) -> None:
    before = _sha256(db)
    files_before = sorted(p.name for p in db.parent.iterdir())
    result = execute_sql(db, statement.format(dir=db.parent), timeout=0.5)
    assert not result.ok, f"{statement!r} was allowed"
    assert result.rows is None
    assert result.error in {ErrorKind.FORBIDDEN, ErrorKind.TIMEOUT}, (result.error, result.message)
    assert _sha256(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == files_before  # no new file, no journal
    # the connection stays usable and the data is intact
    assert execute_sql(db, "SELECT count(*) FROM item").rows == ((3,),)


@pytest.mark.parametrize("statement", [s for s in HOSTILE if not s.startswith(("WITH", "SELECT 1;"))])
def test_sqlite_itself_refuses_without_the_keyword_check(db: Path, statement: str) -> None:
    """The read-only open + authorizer hold on their own, without execute_sql's first-keyword check."""
    before = _sha256(db)
    files_before = sorted(p.name for p in db.parent.iterdir())
    conn = open_readonly(db)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(statement.format(dir=db.parent)).fetchall()
    finally:
        conn.close()
    assert _sha256(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == files_before


def test_missing_database_is_reported_and_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "nope.sqlite"
    result = execute_sql(missing, "SELECT 1")
    assert result.error is ErrorKind.MISSING_DB
    assert str(missing) in result.message
    assert not missing.exists() and not missing.parent.exists()
    with pytest.raises(MissingDatabase, match="nope.sqlite"):
        open_readonly(missing)


def test_time_limit_stops_the_query_without_leaving_a_thread(db: Path) -> None:
    threads_before = threading.active_count()
    start = time.perf_counter()
    result = execute_sql(
        db, "SELECT count(*) FROM item a, item b, item c, item d, item e, item f, item g, item h, "
        "item i, item j, item k, item l, item m, item n, item o, item p, item q, item r", timeout=0.3
    )
    took = time.perf_counter() - start
    assert result.error is ErrorKind.TIMEOUT
    assert "0.3 s" in result.message
    assert took < 3.0  # generous for a loaded machine; the query itself would never end
    assert threading.active_count() == threads_before
    assert execute_sql(db, "SELECT name FROM item WHERE id = 1").rows == (("pen",),)


def test_row_cap_truncates(db: Path) -> None:
    sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r"
    result = execute_sql(db, sql, max_rows=50)
    assert result.truncated and result.error is ErrorKind.TOO_MANY_ROWS
    assert result.rows == tuple((i,) for i in range(1, 51))
    under = execute_sql(db, "SELECT id FROM item", max_rows=3)
    assert under.ok and not under.truncated and len(under.rows) == 3


def test_byte_cap_and_value_cap(db: Path) -> None:
    sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT printf('%.1000c', 'x') FROM r"
    result = execute_sql(db, sql, max_rows=10**9, max_bytes=100_000)
    assert result.truncated and result.error is ErrorKind.TOO_MANY_ROWS
    assert len(result.rows) <= 102
    huge = execute_sql(db, "SELECT zeroblob(1000000000)")
    assert not huge.ok and "too big" in huge.message


def test_large_values_never_pile_up_in_memory(db: Path) -> None:
    """A chunk of big values is bounded before any cap is checked (fetch size adapts)."""
    import tracemalloc

    sql = ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 200) "
           "SELECT zeroblob(1000000), zeroblob(1000000) FROM r")
    tracemalloc.start()
    try:
        result = execute_sql(db, sql, max_rows=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error is ErrorKind.TOO_MANY_ROWS and result.truncated and len(result.rows) == 1
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 1-row result"
    too_big = execute_sql(db, "SELECT zeroblob(2000000)")  # over MAX_VALUE_BYTES (1 MiB)
    assert not too_big.ok


def test_ok_result_is_typed(db: Path) -> None:
    result = execute_sql(db, "SELECT name, price FROM item ORDER BY id;")
    assert result.ok and result.error is ErrorKind.OK and result.message == ""
    assert result.columns == ("name", "price")
    assert result.rows == (("pen", 1.5), ("book", 12.0), ("lamp", 30.25))
    assert result.elapsed >= 0 and not result.truncated


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("SELEC name FROM item", ErrorKind.SYNTAX),
        ("SELECT name FROM item WHERE", ErrorKind.SYNTAX),
        ("SELECT name FROM items", ErrorKind.NO_SUCH_TABLE),
        ("SELECT nam FROM item", ErrorKind.NO_SUCH_COLUMN),
        ("SELECT nosuchfunc(name) FROM item", ErrorKind.OTHER),
        ("", ErrorKind.EMPTY),
        ("  ;  ", ErrorKind.EMPTY),
    ],
)
def test_error_classes(db: Path, sql: str, kind: ErrorKind) -> None:
    result = execute_sql(db, sql)
    assert result.error is kind, result.message
    assert result.rows is None


def test_classify_error_messages() -> None:
    assert classify_error('near "x": syntax error') is ErrorKind.SYNTAX
    assert classify_error("no such table: t") is ErrorKind.NO_SUCH_TABLE
    assert classify_error("no such column: c") is ErrorKind.NO_SUCH_COLUMN
    assert classify_error("not authorized") is ErrorKind.FORBIDDEN
    assert classify_error("interrupted") is ErrorKind.TIMEOUT
    assert classify_error("something else") is ErrorKind.OTHER


def test_connection_is_cached_and_read_only(db: Path) -> None:
    from nl2sql_lib.sql import execute as module

    clear_connection_cache()
    execute_sql(db, "SELECT 1")
    execute_sql(db, "SELECT 2")
    cache = module._cache()
    assert list(cache) == [str(db.resolve())]
    conn = cache[str(db.resolve())]
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM item")


def test_cached_connection_holds_its_read_lock_until_the_cache_is_cleared(db: Path) -> None:
    """Queries skip SQLite's per-statement lock and change check; writers wait for a clear."""
    clear_connection_cache()
    assert execute_sql(db, "SELECT count(*) FROM item").rows == ((3,),)
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0)
    assert reader.execute("SELECT count(*) FROM item").fetchone() == (3,)  # readers share the lock
    reader.close()
    writer = sqlite3.connect(db, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.execute("INSERT INTO item (name, price) VALUES ('lamp', 30.0)")
        writer.commit()
    writer.rollback()
    clear_connection_cache()  # releases the lock
    writer.execute("INSERT INTO item (name, price) VALUES ('lamp', 30.0)")
    writer.commit()
    writer.close()
    assert execute_sql(db, "SELECT count(*) FROM item").rows == ((4,),)  # a new connection sees it
    clear_connection_cache()


def test_undecodable_text_is_decoded_leniently(tmp_path: Path) -> None:
    """Cached connections decode TEXT in C; a value that is not UTF-8 falls back to dropping bytes."""
    path = tmp_path / "latin.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER, name TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'plain'), (2, CAST(x'61ff62' AS TEXT)), (3, 'caf\u00e9')")
    conn.commit()
    conn.close()
    clear_connection_cache()
    assert execute_sql(path, "SELECT name FROM t WHERE id = 3").rows == (("caf\u00e9",),)
    result = execute_sql(path, "SELECT name FROM t ORDER BY id")
    assert result.ok and result.rows == (("plain",), ("ab",), ("caf\u00e9",))
    assert execute_sql(path, "SELECT name FROM t WHERE id = 2").rows == (("ab",),)
    assert execute_sql(path, "SELECT count(*) FROM t").rows == ((3,),)


@pytest.mark.parametrize("n", [0, 1, 16, 17, 18, 33, 34, 35, 600])
def test_every_row_is_fetched_at_chunk_boundaries(db: Path, n: int) -> None:
    """Results that end exactly on, just before or just after a fetch chunk are complete."""
    one = f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {n}) SELECT n FROM r WHERE n <= {n}"
    two = one.replace("SELECT n FROM r WHERE", "SELECT n, -n FROM r WHERE")
    assert execute_sql(db, one).rows == tuple((i,) for i in range(1, n + 1))
    assert execute_sql(db, two).rows == tuple((i, -i) for i in range(1, n + 1))
    capped = execute_sql(db, one, max_rows=n)
    assert capped.ok and len(capped.rows) == n
    if n:
        over = execute_sql(db, one, max_rows=n - 1)
        assert over.truncated and len(over.rows) == n - 1


def test_forked_child_opens_its_own_connections(db: Path) -> None:
    """A child forked after connections were cached starts with none and still runs queries."""
    import multiprocessing

    from nl2sql_lib.sql import execute as module

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    execute_sql(db, "SELECT 1")
    parent_conn = module._cache()[str(db.resolve())]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        cached_before, rows = pool.apply(_child_query, (str(db),))
    assert cached_before == 0 and rows == ((3,),)
    assert module._cache()[str(db.resolve())] is parent_conn  # the parent's cache is untouched
    assert execute_sql(db, "SELECT count(*) FROM item").rows == ((3,),)


def _child_query(db: str) -> tuple[int, tuple]:
    from nl2sql_lib.sql import execute as module

    cached_before = len(module._cache())
    return cached_before, execute_sql(db, "SELECT count(*) FROM item").rows


def test_byte_cap_is_exact_for_results_that_end_in_their_first_chunk(db: Path) -> None:
    """Small results skip measuring only when even maximal values could not reach the cap."""
    from nl2sql_lib.sql.execute import MAX_VALUE_BYTES

    sql = ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2) "
           f"SELECT zeroblob({MAX_VALUE_BYTES}) FROM r")
    row_text = len(repr((bytes(MAX_VALUE_BYTES),)))  # b'\x00\x00...' - 4 characters per byte
    fits = execute_sql(db, sql, max_bytes=2 * row_text)
    assert fits.ok and len(fits.rows) == 2
    over = execute_sql(db, sql, max_bytes=2 * row_text - 1)
    assert over.truncated and over.error is ErrorKind.TOO_MANY_ROWS and len(over.rows) == 1
    small = execute_sql(db, "SELECT name FROM item ORDER BY id", max_bytes=10)
    assert small.truncated and small.rows == (("pen",),)  # repr(('pen',)) is 8 characters
