"""Question/SQL pairs for a user's own SQLite database, verified by execution.

The database is opened read-only through a ``file:...?mode=ro`` URI, so the generator can never
change it or create a missing file. Its structure comes from SQLite pragmas; column roles are
guessed from types and data (see :mod:`.schema_info`); then the same shapes as the bundled
benchmark draw values from the data and keep only queries that execute and return rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

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


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.data.bundled.own_db DB [DB ...] --out pairs.jsonl [--n 200]``"""
    import argparse

    from ..example import write_examples
    from ..loaders import sqlite_files

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
    examples = []
    for given in args.databases:
        for db_path in sqlite_files(Path(given)):
            pairs = generate_pairs_for_database(db_path, n=args.n, seed=args.seed)
            print(f"{db_path}: {len(pairs)} pairs")
            examples.extend(pairs)
    write_examples(args.out, examples)
    print(f"wrote {len(examples)} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
