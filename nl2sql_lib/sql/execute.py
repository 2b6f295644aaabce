"""Safe execution of untrusted SQL against SQLite databases.

Model-written SQL is untrusted input. Every query here runs under five guards, the first three
enforced by SQLite itself rather than by looking at the text:

1. the database is opened read-only through a URI (``file:...?mode=ro``) after checking that the
   file exists, so a missing database is reported, never created;
2. an *authorizer* that allows only reading (SELECT, READ, FUNCTION, RECURSIVE) and denies every
   other action: writes, CREATE/DROP/ALTER, ATTACH/DETACH, PRAGMA, transactions, and the
   ``load_extension`` function. (A read-only open alone does not stop ``VACUUM INTO 'x.db'`` or
   ``ATTACH 'x.db'`` from creating a new file; the authorizer does.) Extension loading is also
   never enabled on the connection, and the number of attachable databases is limited to 0;
3. a progress handler that interrupts the query when its time limit passes. It runs inside
   ``sqlite3_step`` on the calling thread, so when the call returns nothing is left running: no
   watchdog thread, no subprocess;
4. a statement whose first word is a non-query statement keyword (DROP, PRAGMA, ...) is refused
   before it reaches SQLite: a cheap extra layer on top of the three above, which hold on their
   own (tests run the hostile statements against the bare connection too);
5. caps on what a query may produce: at most ``max_rows`` rows and ``max_bytes`` bytes are
   fetched (the result is then marked ``truncated``), a single string or blob may not exceed
   ``MAX_VALUE_BYTES``, and SQLite's own heap is bounded with ``PRAGMA hard_heap_limit``.

Connections are cached per process and thread, one per database path, so evaluating thousands
of candidates on one database pays for the open once.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote


__all__ = [
    "ErrorKind",
    "ExecResult",
    "MissingDatabase",
    "execute_sql",
    "open_readonly",
    "classify_error",
    "clear_connection_cache",
]

# SQLite's heap is capped process-wide (sqlite3_hard_heap_limit64 is global): allocations past it
# fail with "out of memory" instead of growing the process. 1 GiB leaves room for big BIRD
# results while keeping a runaway ORDER BY over a cross join from eating the machine.
HEAP_LIMIT_BYTES = int(os.environ.get("NL2SQL_SQLITE_HEAP_LIMIT", str(1 << 30)))
# Longest single string or blob a query may build (e.g. ``zeroblob(1e9)`` or ``group_concat``);
# small enough that a fetched chunk of maximal values stays bounded (see _chunk_rows).
MAX_VALUE_BYTES = 1024 * 1024
# Default cap on the size of a fetched result, measured as the length of its text representation.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# How many SQLite virtual-machine instructions run between two checks of the clock.
PROGRESS_STEPS = 1000
# Connections kept open per thread (least recently used ones are closed first).
MAX_CACHED_CONNECTIONS = 64


class ErrorKind(str, Enum):
    """The outcome class of one execution."""

    OK = "ok"
    SYNTAX = "syntax"
    NO_SUCH_TABLE = "no_such_table"
    NO_SUCH_COLUMN = "no_such_column"
    TIMEOUT = "timeout"
    TOO_MANY_ROWS = "too_many_rows"
    FORBIDDEN = "forbidden"
    MISSING_DB = "missing_db"
    EMPTY = "empty"
    OTHER = "other"


@dataclass(frozen=True)
class ExecResult:
    """The typed result of running one SQL string.

    ``rows`` is None when the query failed before producing rows. When a cap was hit,
    ``error`` is TOO_MANY_ROWS, ``truncated`` is True and ``rows`` holds what was fetched up to
    the cap (useful for feedback, never for judging).
    """

    rows: tuple[tuple, ...] | None
    columns: tuple[str, ...]
    error: ErrorKind
    message: str
    truncated: bool
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.error == ErrorKind.OK


class MissingDatabase(FileNotFoundError):
    """The database file does not exist; we never create it."""


# ---------------------------------------------------------------------------------------------
# Authorizer
# ---------------------------------------------------------------------------------------------

_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              getattr(sqlite3, "SQLITE_RECURSIVE", 33)})
# Functions that reach outside the database or change the connection.
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


def _authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    """Allow only reading; deny everything else at statement-prepare time."""
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------

_heap_limit_set = False
_local = threading.local()


def _set_heap_limit(conn: sqlite3.Connection) -> None:
    global _heap_limit_set
    if not _heap_limit_set and HEAP_LIMIT_BYTES > 0:
        # Process-wide; the pragma only ever lowers the limit, so a smaller one set by someone
        # else in this process stays in force.
        conn.execute(f"PRAGMA hard_heap_limit={HEAP_LIMIT_BYTES}")
        _heap_limit_set = True


def _chunk_rows(fetched: int, size: int, max_rows: int, max_bytes: int, n_columns: int) -> int:
    """How many rows the next ``fetchmany`` may take without overshooting the caps.

    Python materializes a whole chunk before any cap is checked, so the chunk must be small
    enough that even rows of maximal values (``MAX_VALUE_BYTES`` each; repr inflates blobs about
    4x) cannot exceed the remaining byte budget by more than one row. Ordinary results still come
    in chunks of 512 rows.
    """
    worst_row = 4 * max(1, n_columns) * MAX_VALUE_BYTES
    by_bytes = max(0, max_bytes - size) // worst_row + 1
    return max(1, min(512, max_rows - fetched + 1, by_bytes))


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """Open ``db_path`` read-only with the authorizer and limits installed.

    Raises :class:`MissingDatabase` naming the path when the file does not exist (SQLite would
    otherwise report a vague "unable to open" or, without ``mode=ro``, create an empty file).
    """
    path = Path(db_path)
    if not path.is_file():
        raise MissingDatabase(
            f"database file not found: {path} (resolved: {path.resolve()}); check --db-root / "
            f"Example.db_path; the evaluator never creates database files"
        )
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True)
    # Like the Spider evaluator: undecodable bytes in TEXT never crash a comparison.
    conn.text_factory = lambda b: b.decode(errors="ignore")
    _set_heap_limit(conn)
    conn.execute("PRAGMA query_only=1")
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    # Installed last: from here on the connection itself can no longer run a PRAGMA.
    conn.set_authorizer(_authorizer)
    return conn


_inherited: list = []


def _cache() -> "OrderedDict[str, sqlite3.Connection]":
    # Per process (a forked child must not use its parent's connections) and per thread.
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        if getattr(_local, "connections", None):
            # Connections inherited through fork: never used or closed here, only kept alive so
            # that garbage collection does not run sqlite3_close on the parent's handles.
            _inherited.append(_local.connections)
        _local.pid = pid
        _local.connections = OrderedDict()
    return _local.connections


def _cached_connection(db_path: str | Path) -> sqlite3.Connection:
    key = db_key(db_path)
    cache = _cache()
    conn = cache.get(key)
    if conn is not None:
        cache.move_to_end(key)
        return conn
    conn = open_readonly(key)
    cache[key] = conn
    while len(cache) > MAX_CACHED_CONNECTIONS:
        _, old = cache.popitem(last=False)
        old.close()
    return conn


@lru_cache(maxsize=4096)
def _abspath(path: str) -> str:
    return os.path.abspath(path)


def db_key(db_path: str | Path) -> str:
    """The absolute path string used to key connections and cached results."""
    return _abspath(os.fspath(db_path))


def clear_connection_cache() -> None:
    """Close this thread's cached connections (e.g. before a database file is replaced)."""
    cache = _cache()
    while cache:
        _, conn = cache.popitem()
        conn.close()


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def classify_error(message: str) -> ErrorKind:
    """Map SQLite's error message to an :class:`ErrorKind`."""
    text = message.lower()
    if "no such table" in text or "no such view" in text:
        return ErrorKind.NO_SUCH_TABLE
    if "no such column" in text or "ambiguous column name" in text:
        return ErrorKind.NO_SUCH_COLUMN
    if "syntax error" in text or "incomplete input" in text or "unrecognized token" in text:
        return ErrorKind.SYNTAX
    if "interrupted" in text:
        return ErrorKind.TIMEOUT
    if ("not authorized" in text or "authorization denied" in text or "readonly database" in text or "read-only" in text
            or "one statement at a time" in text or "prohibited" in text):
        return ErrorKind.FORBIDDEN
    if "out of memory" in text or "too big" in text:
        return ErrorKind.TOO_MANY_ROWS
    return ErrorKind.OTHER


# SQLite's statements other than queries (https://sqlite.org/lang.html).
_STATEMENT_KEYWORDS = frozenset(
    "ALTER ANALYZE ATTACH BEGIN COMMIT CREATE DELETE DETACH DROP END INSERT PRAGMA REINDEX "
    "RELEASE REPLACE ROLLBACK SAVEPOINT UPDATE VACUUM".split()
)


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")


def _is_query(sql: str) -> bool:
    """False when the first keyword names a statement other than a query (REINDEX, PRAGMA, ...).

    Only the first word after leading whitespace and comments is looked at: this is a cheap
    extra layer (it runs for every candidate), not the guard itself. Anything else is passed on
    to SQLite, whose authorizer has the final word and which reports syntax errors itself.
    """
    start = _LEADING_NOISE.match(sql).end()
    word = _FIRST_WORD.match(sql, start)
    return word is None or word.group(0).upper() not in _STATEMENT_KEYWORDS


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


def execute_sql(
    db_path: str | Path,
    sql: str,
    *,
    timeout: float = 5.0,
    max_rows: int = 10_000,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ExecResult:
    """Run one SQL statement read-only; never raises for bad SQL or a missing database.

    ``timeout`` is wall-clock seconds for executing and fetching; ``max_rows``/``max_bytes`` cap
    the fetched result (the result is then ``truncated`` with error TOO_MANY_ROWS).
    """
    start = time.perf_counter()

    def result(rows, columns, error, message, truncated=False) -> ExecResult:
        return ExecResult(rows, tuple(columns), error, message, truncated, time.perf_counter() - start)

    if sql is None or not str(sql).strip().strip(";").strip():
        return result(None, (), ErrorKind.EMPTY, "empty SQL")
    if not _is_query(sql):
        first = str(sql).split(None, 1)[0][:30]
        return result(None, (), ErrorKind.FORBIDDEN, f"only queries may run; {first!r} starts another kind of statement")
    try:
        conn = _cached_connection(db_path)
    except MissingDatabase as exc:
        return result(None, (), ErrorKind.MISSING_DB, str(exc))
    except sqlite3.Error as exc:
        return result(None, (), ErrorKind.OTHER, f"cannot open {db_path}: {exc}")

    deadline = time.monotonic() + timeout
    timed_out = False

    def progress() -> int:
        nonlocal timed_out
        if time.monotonic() > deadline:
            timed_out = True
            return 1  # non-zero: SQLite aborts the statement with SQLITE_INTERRUPT
        return 0

    conn.set_progress_handler(progress, PROGRESS_STEPS)
    cursor = conn.cursor()
    rows: list[tuple] = []
    columns: tuple[str, ...] = ()
    try:
        cursor.execute(sql)
        columns = tuple(d[0] for d in cursor.description or ())
        size = 0
        while True:
            chunk = cursor.fetchmany(_chunk_rows(len(rows), size, max_rows, max_bytes, len(columns)))
            if not chunk:
                break
            # Whole chunks are accounted at C speed; only the chunk that crosses a cap is cut row
            # by row, so the caps stay exact without a Python loop over every value.
            chunk_size = len(repr(chunk))
            if len(rows) + len(chunk) <= max_rows and size + chunk_size <= max_bytes:
                rows.extend(chunk)
                size += chunk_size
                continue
            for row in chunk:
                row_size = len(repr(row))
                if len(rows) >= max_rows or size + row_size > max_bytes:
                    what = f"{max_rows} rows" if len(rows) >= max_rows else f"{max_bytes} bytes"
                    return result(tuple(rows), columns, ErrorKind.TOO_MANY_ROWS,
                                  f"result exceeds the cap of {what}; fetched rows are truncated",
                                  truncated=True)
                rows.append(row)
                size += row_size
        return result(tuple(rows), columns, ErrorKind.OK, "")
    except (sqlite3.Error, sqlite3.Warning) as exc:
        message = str(exc)
        if timed_out:
            return result(None, columns, ErrorKind.TIMEOUT, f"query exceeded the {timeout:g} s time limit")
        return result(None, columns, classify_error(message), message)
    except (ValueError, OverflowError, MemoryError) as exc:  # e.g. NUL in SQL, huge integers
        return result(None, columns, ErrorKind.OTHER, f"{type(exc).__name__}: {exc}")
    finally:
        cursor.close()
        conn.set_progress_handler(None, 0)
