"""Benchmark: 20 runaway queries under a 1 s limit must each stop within 1.5 s.

    .venv/bin/python -m tests.bench.run_all runaway      # or: make bench BENCH=runaway

Each query (endless recursive CTEs, huge cross joins, sorts and aggregates over them, strings
that double forever) runs through :func:`nl2sql_lib.sql.execute.execute_sql` with
``timeout=1.0`` on a Spider dev database (or a small generated one when Spider is absent). For
each we record the wall time, the outcome class, the Python and OS thread counts before and
after, the process CPU time spent in the 0.3 s after the call returned (0 means nothing kept
running), and the RSS. Writes outputs/bench/runaway.json and prints a table.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parents[2]
SPIDER_DB = PROJECT.parent / "shared" / "spider-dev" / "database" / "car_1" / "car_1.sqlite"
OUT = PROJECT / "outputs" / "bench" / "runaway.json"
LIMIT = 1.0
ALLOWED = 1.5

ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)"
CROSS = "{t} a, {t} b, {t} c, {t} d, {t} e"


def queries(table: str) -> list[tuple[str, str]]:
    cross = CROSS.format(t=table)
    return [
        ("endless CTE, count", f"{ENDLESS} SELECT count(*) FROM r"),
        ("endless CTE, max", f"{ENDLESS} SELECT max(n) FROM r"),
        ("endless CTE, sum of squares", f"{ENDLESS} SELECT sum(n * n) FROM r"),
        ("endless CTE, ORDER BY DESC LIMIT 1", f"{ENDLESS} SELECT n FROM r ORDER BY n DESC LIMIT 1"),
        ("endless CTE, GROUP BY", f"{ENDLESS} SELECT n % 7, count(*) FROM r GROUP BY 1"),
        ("endless CTE, DISTINCT count", f"{ENDLESS} SELECT count(DISTINCT n) FROM r"),
        ("endless CTE, filter never true", f"{ENDLESS} SELECT n FROM r WHERE n < 0"),
        ("endless CTE, text concat", f"{ENDLESS} SELECT max(length(n || 'x')) FROM r"),
        ("endless UNION CTE (dedup set)", "WITH RECURSIVE r(n) AS (SELECT 1 UNION SELECT n + 1 FROM r) "
                                          "SELECT count(*) FROM r"),
        ("doubling string", "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) "
                            "SELECT max(length(s)) FROM r"),
        ("two endless CTEs joined", f"{ENDLESS}, q(m) AS (SELECT 1 UNION ALL SELECT m + 1 FROM q) "
                                    "SELECT count(*) FROM r, q WHERE r.n = q.m + 1"),
        ("cross join x5, count", f"SELECT count(*) FROM {cross}"),
        ("cross join x5, ORDER BY random()", f"SELECT a.rowid FROM {cross} ORDER BY random() LIMIT 1"),
        ("cross join x5, GROUP BY", f"SELECT a.rowid, b.rowid, count(*) FROM {cross} GROUP BY 1, 2"),
        ("cross join x5, DISTINCT", f"SELECT count(*) FROM (SELECT DISTINCT a.rowid, b.rowid, c.rowid, "
                                    f"d.rowid FROM {cross})"),
        ("cross join x5, group_concat", f"SELECT length(group_concat(a.rowid)) FROM {cross}"),
        ("cross join x5, LIKE filter", f"SELECT count(*) FROM {cross} WHERE e.rowid || a.rowid LIKE '%zz%'"),
        ("cross join x3, correlated subquery", f"SELECT count(*) FROM {table} a, {table} b, {table} c "
                                               f"WHERE (SELECT count(*) FROM {table} x WHERE x.rowid > a.rowid) >= 0"),
        ("cross join x6, min", f"SELECT min(a.rowid + f.rowid) FROM {cross}, {table} f"),
        ("endless CTE x cross join", f"{ENDLESS} SELECT count(*) FROM r, {table} a, {table} b"),
    ]


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()


def _database() -> Path:
    if SPIDER_DB.is_file():
        return SPIDER_DB
    path = Path(tempfile.mkdtemp()) / "runaway.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cars_data(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO cars_data VALUES (?, ?)", [(i, f"v{i}") for i in range(400)])
    conn.commit()
    conn.close()
    return path


def main() -> dict:
    from nl2sql_lib.io import write_json
    from nl2sql_lib.sql.execute import execute_sql

    db = _database()
    proc = psutil.Process()
    execute_sql(db, "SELECT 1")  # open the cached connection first
    rss_start = proc.memory_info().rss
    rows = []
    for name, sql in queries("cars_data"):
        threads_before, os_threads_before = threading.active_count(), _os_threads()
        start = time.perf_counter()
        result = execute_sql(db, sql, timeout=LIMIT)
        took = time.perf_counter() - start
        cpu0 = time.process_time()
        time.sleep(0.3)
        cpu_after = time.process_time() - cpu0
        rows.append({
            "query": name,
            "seconds": round(took, 3),
            "outcome": result.error.value,
            "message": result.message[:80],
            "within_limit": took <= ALLOWED,
            "python_threads_delta": threading.active_count() - threads_before,
            "os_threads_delta": _os_threads() - os_threads_before,
            "cpu_seconds_after_return": round(cpu_after, 4),
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
        })
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "runaway",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
        "database": str(db),
        "time_limit_s": LIMIT,
        "allowed_s": ALLOWED,
        "queries": rows,
        "all_within_limit": all(r["within_limit"] for r in rows),
        "max_seconds": max(r["seconds"] for r in rows),
        "no_leftover_threads": all(r["python_threads_delta"] == 0 and r["os_threads_delta"] == 0 for r in rows),
        "max_cpu_seconds_after_return": max(r["cpu_seconds_after_return"] for r in rows),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(proc.memory_info().rss / 2**20, 1),
        "peak_rss_mb": round(peak_mb, 1),
    }
    write_json(OUT, result)  # atomic: a killed run never leaves half a file
    print(f"{'query':<38}{'seconds':>8}  {'outcome':<14}{'threads':>8}{'cpu after':>10}{'RSS MB':>8}")
    for r in rows:
        print(f"{r['query']:<38}{r['seconds']:>8.3f}  {r['outcome']:<14}{r['os_threads_delta']:>8}"
              f"{r['cpu_seconds_after_return']:>10.4f}{r['rss_mb']:>8.1f}")
    print(f"all within {ALLOWED} s: {result['all_within_limit']} (max {result['max_seconds']} s); "
          f"no leftover threads: {result['no_leftover_threads']}; RSS {result['rss_start_mb']} -> "
          f"{result['rss_end_mb']} MB, peak {result['peak_rss_mb']} MB; written to {OUT.relative_to(PROJECT)}")
    return result


if __name__ == "__main__":
    main()
