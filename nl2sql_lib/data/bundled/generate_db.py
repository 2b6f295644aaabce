"""The registry of bundled domains and the deterministic writer of their SQLite files.

Same seed, same bytes: every database is written by one connection with a fixed page size,
no journal, rows inserted in a fixed order from a ``random.Random`` seeded by (seed, db_id), and
nothing time-dependent. A rebuild goes to a temporary file first; if the result is byte-identical
to the file already in place, the existing file is kept untouched (idempotent, mtime preserved).
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import domains_a as A
from . import domains_b as B
from .schema_info import Annotation, Measure

PAGE_SIZE = 4096


@dataclass(frozen=True)
class Domain:
    db_id: str
    build: Callable[[sqlite3.Connection, random.Random], None]
    annotations: dict[str, Annotation]
    split: str  # "train" or "dev": dev databases are never seen in training
    n_questions: int
    measures: tuple[Measure, ...] = ()


DOMAINS: tuple[Domain, ...] = (
    Domain("retail", A.build_retail, A.RETAIL, "train", 260, tuple(A.RETAIL_MEASURES)),
    Domain("university", A.build_university, A.UNIVERSITY, "train", 260, tuple(A.UNIVERSITY_MEASURES)),
    Domain("library", A.build_library, A.LIBRARY, "train", 260, tuple(A.LIBRARY_MEASURES)),
    Domain("movies", B.build_movies, B.MOVIES, "train", 260, tuple(B.MOVIES_MEASURES)),
    Domain("football", B.build_football, B.FOOTBALL, "train", 260, tuple(B.FOOTBALL_MEASURES)),
    Domain("hr", B.build_hr, B.HR, "train", 260, tuple(B.HR_MEASURES)),
    Domain("real_estate", B.build_real_estate, B.REAL_ESTATE, "train", 260, tuple(B.REAL_ESTATE_MEASURES)),
    Domain("hospital", A.build_hospital, A.HOSPITAL, "dev", 160, tuple(A.HOSPITAL_MEASURES)),
    Domain("flights", A.build_flights, A.FLIGHTS, "dev", 160, tuple(A.FLIGHTS_MEASURES)),
    Domain("music", B.build_music, B.MUSIC, "dev", 160, tuple(B.MUSIC_MEASURES)),
)


def domain(db_id: str) -> Domain:
    for item in DOMAINS:
        if item.db_id == db_id:
            return item
    raise KeyError(f"unknown bundled database {db_id!r}; known: {', '.join(d.db_id for d in DOMAINS)}")


def _write(item: Domain, path: Path, seed: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = OFF")
        item.build(conn, random.Random(f"{seed}:{item.db_id}"))
        conn.commit()
    finally:
        conn.close()


def build_database(item: Domain, out_dir: Path, seed: int = 0) -> Path:
    """Write ``out_dir/<db_id>/<db_id>.sqlite`` (keeping an identical existing file) and return it."""
    target = Path(out_dir) / item.db_id / f"{item.db_id}.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{item.db_id}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # sqlite must create the file itself so the page size applies
        _write(item, tmp, seed)
        if target.is_file() and target.read_bytes() == tmp.read_bytes():
            tmp.unlink()
        else:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
