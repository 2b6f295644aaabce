"""Shared helpers for the tree tests (no tests here): a tiny shop database and its questions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nl2sql_lib.data.example import Example

# Gold SQL strings are written so that no scripted answer repeats them verbatim: a test can then
# check that no prompt ever contains the gold SQL.
QUESTIONS = {
    "q1": ("How many items are there?", "SELECT count(*) FROM items WHERE 1 = 1"),
    "q2": ("What is the name of the most expensive item?", "SELECT name FROM items ORDER BY price DESC LIMIT 1 OFFSET 0"),
    "q3": ("List the names of items cheaper than 10.", "SELECT name FROM items WHERE price < 10.0"),
}


def make_shop_db(root: Path, db_id: str = "shop") -> Path:
    """``root/<db_id>/<db_id>.sqlite`` with one table ``items(id, name, price)``, 3 rows."""
    path = root / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?)", [(1, "pen", 1.5), (2, "book", 12.0), (3, "lamp", 30.0)]
        )
    conn.close()
    return path


def shop_examples(db_path: Path, ids=("q1", "q2", "q3")) -> list[Example]:
    return [
        Example(
            question_id=qid, db_id="shop", db_path=str(db_path), question=QUESTIONS[qid][0],
            sql=QUESTIONS[qid][1], difficulty="simple",
        )
        for qid in ids
    ]


def numbered_examples(db_path: Path, count: int) -> list[Example]:
    """``count`` distinct count-questions ("Question 7: how many items?") on the shop database."""
    return [
        Example(
            question_id=f"n{i}", db_id="shop", db_path=str(db_path),
            question=f"Question {i}: how many items?", sql="SELECT count(*) FROM items WHERE 1 = 1",
        )
        for i in range(count)
    ]


def schema_text(example) -> str:
    return "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)"
