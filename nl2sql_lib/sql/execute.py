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
of candidates on one database pays for the open once; a cached connection keeps its shared read
lock between queries (see open_readonly), so writing one of these databases from another
connection needs clear_connection_cache() first. Like the Spider evaluator, TEXT that is not
valid UTF-8 is decoded leniently (undecodable bytes dropped) instead of failing the query.
"""

from __future__ import annotations

import math
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


def _lenient_text(value: bytes) -> str:
    """Like the Spider evaluator: undecodable bytes in TEXT are dropped, never a crash."""
    return value.decode(errors="ignore")


def _is_decode_failure(exc: BaseException) -> bool:
    """sqlite3's error when ``text_factory=str`` meets a TEXT value that is not valid UTF-8."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8")


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
    4x) cannot exceed the remaining byte budget by more than one row. With the default 64 MB
    budget that is 17 rows of one column, 9 of two; without a byte budget, up to 512 rows.
    """
    worst_row = 4 * max(1, n_columns) * MAX_VALUE_BYTES
    by_bytes = max(0, max_bytes - size) // worst_row + 1
    return max(1, min(512, max_rows - fetched + 1, by_bytes))


def _within_caps_unmeasured(n_rows: int, n_columns: int, max_rows: int, max_bytes: int) -> bool:
    """True when ``n_rows`` rows stay within both caps whatever their values.

    A value's repr is at most 4 characters per byte plus 3 (``b'...'``), and a row in a list
    adds at most 2 characters per value and 5 of its own (parentheses, a trailing comma and the
    list's separator), so this bounds the text size exactly as it would be measured.
    """
    return n_rows <= max_rows and n_rows * (max(1, n_columns) * (4 * MAX_VALUE_BYTES + 5) + 5) <= max_bytes


class _Clock:
    """The time limit of the query running on one connection, checked by SQLite's progress handler.

    SQLite calls it every PROGRESS_STEPS virtual-machine steps inside ``sqlite3_step``, on the
    calling thread; a non-zero return aborts the statement with SQLITE_INTERRUPT, so when the
    call returns nothing is left running. It is installed once per cached connection (installing
    and removing a handler around every query cost more than the handler itself) and armed by
    execute_sql for the duration of one query; disarmed, it never interrupts anything.
    """

    __slots__ = ("deadline", "timed_out")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.timed_out = False

    def __call__(self) -> int:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0

    def arm(self, timeout: float) -> None:
        self.timed_out = False
        self.deadline = time.monotonic() + timeout

    def disarm(self) -> None:
        self.deadline = math.inf


class _Connection(sqlite3.Connection):
    """A read-only connection that can carry its _Clock (set by _cached_connection)."""

    clock: _Clock


def open_readonly(db_path: str | Path, *, hold_read_lock: bool = False) -> sqlite3.Connection:
    """Open ``db_path`` read-only with the authorizer and limits installed.

    Raises :class:`MissingDatabase` naming the path when the file does not exist (SQLite would
    otherwise report a vague "unable to open" or, without ``mode=ro``, create an empty file).

    ``hold_read_lock``: keep SQLite's shared lock from the first query until the connection
    closes (``locking_mode=EXCLUSIVE`` on a read-only connection). Otherwise every statement
    takes and drops the lock and re-checks the file for changes: about seven system calls,
    15-20% of a typical Spider query. While it is held, a process that tries to write the
    database gets "database is locked"; :func:`clear_connection_cache` releases it.
    """
    path = Path(db_path)
    if not path.is_file():
        raise MissingDatabase(
            f"database file not found: {path} (resolved: {path.resolve()}); check --db-root / "
            f"Example.db_path; the evaluator never creates database files"
        )
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True, factory=_Connection)
    conn.text_factory = _lenient_text
    _set_heap_limit(conn)
    conn.execute("PRAGMA query_only=1")
    if hold_read_lock:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # read-only: the lock it keeps is SHARED
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    # Installed last: from here on the connection itself can no longer run a PRAGMA.
    conn.set_authorizer(_authorizer)
    return conn


_inherited: list = []


def _cache() -> "OrderedDict[str, _Connection]":
    # Per thread, and per process: see _forget_connections_after_fork.
    connections = getattr(_local, "connections", None)
    if connections is None:
        connections = _local.connections = OrderedDict()
    return connections


def _forget_connections_after_fork() -> None:
    """In a forked child: start with no cached connections (the parent's are not ours to use).

    The forking thread's inherited connections are never used or closed here, only kept alive
    so that garbage collection does not run sqlite3_close on the parent's handles. (Run by
    os.register_at_fork, so no call has to compare process ids.)
    """
    inherited = getattr(_local, "connections", None)
    if inherited:
        _inherited.append(inherited)
    _local.connections = OrderedDict()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


def _cached_connection(db_path: str | Path) -> sqlite3.Connection:
    key = db_key(db_path)
    cache = _cache()
    conn = cache.get(key)
    if conn is not None:
        cache.move_to_end(key)
        return conn
    conn = open_readonly(key, hold_read_lock=True)
    # Decode TEXT in C (sqlite3's fast path for ``str``) instead of calling _lenient_text for
    # every value, which cost about 5% of the time spent running Spider dev queries. Valid UTF-8
    # decodes to the very same string; on the first invalid value execute_sql switches this
    # connection back to _lenient_text and runs the query again (see _run_guarded).
    conn.text_factory = str
    conn.clock = _Clock()
    conn.set_progress_handler(conn.clock, PROGRESS_STEPS)
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
    word = _FIRST_WORD.match(sql)  # most SQL starts with its keyword: one regex instead of two
    if word is None:
        word = _FIRST_WORD.match(sql, _LEADING_NOISE.match(sql).end())
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
    run = _Run()
    refusal = _refusal(sql)
    if refusal is not None:
        run.error, run.message = refusal
    else:
        try:
            conn = _cached_connection(db_path)
        except MissingDatabase as exc:
            run.error, run.message = ErrorKind.MISSING_DB, str(exc)
        except sqlite3.Error as exc:
            run.error, run.message = ErrorKind.OTHER, f"cannot open {db_path}: {exc}"
        else:
            _run_guarded(conn, sql, timeout, max_rows, max_bytes, run)
    return ExecResult(run.rows, run.columns, run.error, run.message, run.truncated, time.perf_counter() - start)


class _Run:
    """The outcome of one execution as it is being built (the fields of an ExecResult)."""

    __slots__ = ("rows", "columns", "error", "message", "truncated")

    def __init__(self) -> None:
        self.rows: tuple | None = None
        self.columns: tuple[str, ...] = ()
        self.error = ErrorKind.OK
        self.message = ""
        self.truncated = False


def _refusal(sql: str | None) -> tuple[ErrorKind, str] | None:
    """Why ``sql`` is not even handed to SQLite (empty, or not a query); None when it may run."""
    if sql is None or not str(sql).strip().strip(";").strip():
        return ErrorKind.EMPTY, "empty SQL"
    if not _is_query(sql):
        first = str(sql).split(None, 1)[0][:30]
        return ErrorKind.FORBIDDEN, f"only queries may run; {first!r} starts another kind of statement"
    return None


def _run_guarded(conn: _Connection, sql: str, timeout: float, max_rows: int, max_bytes: int, run: _Run) -> None:
    """Execute and fetch under the time limit, turning every failure into an error class."""
    # The time limit: a Python callback, but SQLite calls it only every PROGRESS_STEPS steps (on
    # Spider dev fewer than once per query), so it costs nothing measurable (issue #3).
    clock = conn.clock
    clock.arm(timeout)
    try:
        try:
            _fetch_capped(conn, sql, max_rows, max_bytes, run)
        except sqlite3.OperationalError as exc:
            if conn.text_factory is not str or not _is_decode_failure(exc):
                raise
            # Cached connections decode TEXT in C, which fails on bytes that are not UTF-8: this
            # database has such text, so decode it leniently from now on and run once more
            # (under the same deadline).
            conn.text_factory = _lenient_text
            _fetch_capped(conn, sql, max_rows, max_bytes, run)
    except (sqlite3.Error, sqlite3.Warning) as exc:
        run.rows, run.truncated = None, False
        if clock.timed_out:
            run.error, run.message = ErrorKind.TIMEOUT, f"query exceeded the {timeout:g} s time limit"
        else:
            run.message = str(exc)
            run.error = classify_error(run.message)
    except (ValueError, OverflowError, MemoryError) as exc:  # e.g. NUL in SQL, huge integers
        run.rows, run.truncated = None, False
        run.error, run.message = ErrorKind.OTHER, f"{type(exc).__name__}: {exc}"
    finally:
        clock.disarm()


def _fetch_capped(conn: sqlite3.Connection, sql: str, max_rows: int, max_bytes: int, run: _Run) -> None:
    """One execution of ``sql``, fetched in chunks until the end of the result or a cap.

    Sets ``run.columns`` as soon as they are known and ``run.rows`` at the end (a truncated
    result sets ``error``, ``message`` and ``truncated`` too). Bytes are counted as the length
    of each chunk's text representation, at C speed; only the chunk that crosses a cap is cut
    row by row, so the caps stay exact without a Python loop over every value.
    """
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        run.columns = columns = tuple([d[0] for d in cursor.description or ()])
        rows: list[tuple] = []
        size = 0
        while True:
            wanted = _chunk_rows(len(rows), size, max_rows, max_bytes, len(columns))
            chunk = cursor.fetchmany(wanted)
            # fetchmany returns fewer rows than asked only at the end of the result.
            done = len(chunk) < wanted
            if done and not rows and _within_caps_unmeasured(len(chunk), len(columns), max_rows, max_bytes):
                run.rows = tuple(chunk)  # the whole result, too small to need measuring (most are)
                return
            chunk_size = len(repr(chunk))
            if len(rows) + len(chunk) <= max_rows and size + chunk_size <= max_bytes:
                rows += chunk
                size += chunk_size
            else:
                for row in chunk:
                    row_size = len(repr(row))
                    if len(rows) >= max_rows or size + row_size > max_bytes:
                        what = f"{max_rows} rows" if len(rows) >= max_rows else f"{max_bytes} bytes"
                        run.rows, run.truncated = tuple(rows), True
                        run.error = ErrorKind.TOO_MANY_ROWS
                        run.message = f"result exceeds the cap of {what}; fetched rows are truncated"
                        return
                    rows.append(row)
                    size += row_size
            if done:
                run.rows = tuple(rows)
                return
    finally:
        cursor.close()
