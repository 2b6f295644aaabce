"""Question/SQL pairs for a user's own SQLite database, verified by execution.

The database is opened read-only through a ``file:...?mode=ro`` URI, so the generator can never
change it or create a missing file. Its structure comes from SQLite pragmas; column roles are
guessed from types and data (see :mod:`.schema_info`); then the same shapes as the bundled
benchmark draw values from the data and keep only queries that execute and return rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from ...io import DataFileError
from ..example import Example
from .questions import generate_pairs
from .schema_info import introspect


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A read-only connection; FileNotFoundError naming the path when the file is missing."""
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"SQLite database not found: {path} (give the path of an existing .sqlite file)")
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def generate_pairs_for_database(db_path: str | Path, *, n: int = 200, seed: int = 0,
                                db_id: str | None = None) -> list[Example]:
    """Up to ``n`` verified question/SQL pairs over the database at ``db_path``.

    Fewer come back when the schema supports few distinct queries (e.g. one tiny table). Each
    Example has question_id ``own-<db_id>-0001``..., source ``"generated"``, a difficulty label
    and, in ``extra["shape"]``, the query shape it came from.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    path = Path(db_path)
    db_id = db_id or path.stem
    conn = open_readonly(path)
    try:
        try:
            schema = introspect(conn)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{path}: not a readable SQLite database ({exc})") from exc
        drafts = generate_pairs(conn, schema, n, seed=f"{seed}:own:{db_id}")
    finally:
        conn.close()
    return [
        Example(question_id=f"own-{db_id}-{i:04d}", db_id=db_id, db_path=str(path),
                question=d.question, sql=d.sql, evidence=d.evidence, difficulty=d.difficulty,
                source="generated", extra={"shape": d.shape})
        for i, d in enumerate(drafts, 1)
    ]


def sqlite_files(path: str | Path) -> list[Path]:
    """``path`` itself, or the ``*.sqlite`` and ``<db>/<db>.sqlite`` files of a folder."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such SQLite file or folder")
    if path.is_file():
        return [path]
    found = sorted(set(path.glob("*.sqlite")) | {p for p in path.glob("*/*.sqlite") if p.stem == p.parent.name})
    if not found:
        raise DataFileError(f"{path}: no *.sqlite or <db>/<db>.sqlite files in this folder")
    return found


def pairs_for_databases(paths: Iterable[str | Path], *, n: int = 200, seed: int = 0
                        ) -> list[tuple[Path, list[Example]]]:
    """(database, its pairs) for every database in ``paths`` (files or folders of them).

    A database's db_id is its file name, so two files of one name (``shop.sqlite`` and
    ``shop/shop.sqlite``) are refused before any work: their question ids would collide.
    """
    files = [f for p in paths for f in sqlite_files(p)]
    by_id: dict[str, list[Path]] = {}
    for f in files:
        by_id.setdefault(f.stem, []).append(f)
    for db_id, same in by_id.items():
        if len(same) > 1:
            raise DataFileError(
                f"{len(same)} databases are named {db_id!r} ({', '.join(map(str, same))}): the file "
                "name is the db_id, so rename all but one"
            )
    return [(f, generate_pairs_for_database(f, n=n, seed=seed)) for f in files]


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.data.bundled.own_db DB [DB ...] --out pairs.jsonl [--n 200]``"""
    import argparse

    from ..example import write_examples

    parser = argparse.ArgumentParser(
        prog="python -m nl2sql_lib.data.bundled.own_db",
        description="Write execution-verified question/SQL pairs for your own SQLite databases "
        "(one Example per line; 01_data reads them with a 'jsonl' source, or use a 'sqlite' source).",
    )
    parser.add_argument("databases", nargs="+", help=".sqlite files, or folders of them")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    parser.add_argument("--n", type=int, default=200, help="pairs per database (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    try:
        generated = pairs_for_databases(args.databases, n=args.n, seed=args.seed)
    except (DataFileError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    examples = []
    for db_path, pairs in generated:
        print(f"{db_path}: {len(pairs)} pairs")
        examples.extend(pairs)
    write_examples(args.out, examples)
    print(f"wrote {len(examples)} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
