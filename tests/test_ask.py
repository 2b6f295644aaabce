"""The ask command: prompt from the schema, candidates, selection, safe execution, output."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nl2sql_lib.ask import AskError, ask, format_answer, main, question_messages


class ScriptedGenerator:
    """Returns fixed texts: ``greedy`` for temperature 0, ``samples`` (cycled) otherwise."""

    def __init__(self, greedy: str, samples: list[str] | None = None):
        self.greedy, self.samples, self.calls = greedy, samples or [], []

    def generate(self, messages_batch, *, n=1, temperature=0.0, max_new_tokens=128, **kwargs):
        self.calls.append({"messages": messages_batch, "n": n, "temperature": temperature})
        if temperature <= 0:
            return [[self.greedy] * n for _ in messages_batch]
        return [[self.samples[i % len(self.samples)] for i in range(n)] for _ in messages_batch]


class LengthScorer:
    """A stand-in reward model: prefers the longest SQL (enough to check the wiring)."""

    def __init__(self):
        self.seen = []

    def score(self, messages, sqls, db_path=None):
        # db_path lets an execution-feedback reward model run each candidate on the database.
        assert db_path is not None and Path(db_path).is_file()
        self.seen.append((messages, list(sqls)))
        return [float(len(s)) for s in sqls]


@pytest.fixture()
def shop_db(tmp_path) -> Path:
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(1, "pen", 1.5), (2, "book", 12.0), (3, "lamp", 30.0)])
    return db


def test_prompt_holds_schema_and_question(shop_db):
    messages = question_messages("Which items cost more than 10?", shop_db)
    user = messages[-1]["content"]
    assert "CREATE TABLE item" in user and user.endswith("Question: Which items cost more than 10?")


def test_greedy_runs_the_sql_and_returns_exact_rows(shop_db):
    gen = ScriptedGenerator("SELECT name FROM item WHERE price > 10 ORDER BY price;")
    answer = ask("Which items cost more than 10?", shop_db, gen, strategy="greedy")
    assert answer.sql == "SELECT name FROM item WHERE price > 10 ORDER BY price"  # extract_sql drops the ;
    assert answer.result.ok and answer.result.rows == (("book",), ("lamp",))
    assert len(gen.calls) == 1 and gen.calls[0]["temperature"] == 0.0
    text = format_answer(answer)
    assert "SQL: SELECT name FROM item WHERE price > 10" in text and "  book" in text and "rows: 2" in text


def test_vote_picks_the_majority_result(shop_db):
    gen = ScriptedGenerator("SELECT name FROM item WHERE price > 100;",  # greedy: wrong, no rows
                            ["SELECT name FROM item WHERE price > 10;", "SELECT name FROM item WHERE price >= 12;"])
    answer = ask("Items above 10?", shop_db, gen, strategy="vote", n=4)
    assert len(answer.candidates) == 4
    assert set(answer.result.rows) == {("book",), ("lamp",)}  # 3 of 4 candidates agree on this
    assert answer.sql == "SELECT name FROM item WHERE price > 10"


def test_rm_picks_the_best_scored_candidate(shop_db):
    gen = ScriptedGenerator("SELECT name FROM item;", ["SELECT name FROM item WHERE price < 2 ORDER BY name;"])
    scorer = LengthScorer()
    answer = ask("Cheap items?", shop_db, gen, strategy="rm", n=3, scorer=scorer)
    assert answer.sql == "SELECT name FROM item WHERE price < 2 ORDER BY name"
    assert answer.result.rows == (("pen",),)
    assert answer.scores is not None and len(answer.scores) == 3
    assert scorer.seen[0][0][-1]["content"].endswith("Question: Cheap items?")  # scored with the prompt
    assert "score=" in format_answer(answer)


def test_rm_vote_weighs_agreeing_candidates_by_their_scores(shop_db):
    # greedy (short, alone) against two longer samples that return the same rows: the length
    # scorer gives every candidate a large score, so each weighs about 1 and the pair wins
    gen = ScriptedGenerator("SELECT name FROM item;",
                            ["SELECT name FROM item WHERE price > 10;", "SELECT name FROM item WHERE price >= 12;"])
    scorer = LengthScorer()
    answer = ask("Items above 10?", shop_db, gen, strategy="rm_vote", n=3, scorer=scorer)
    assert answer.sql == "SELECT name FROM item WHERE price >= 12"  # the pair's best-scored member
    assert set(answer.result.rows) == {("book",), ("lamp",)}
    assert scorer.seen  # the reward model was asked


def test_unsafe_or_broken_sql_is_reported_not_run(shop_db):
    for text in ("DELETE FROM item;", "SELECT name FROM item; DELETE FROM item;"):
        answer = ask("Delete all", shop_db, ScriptedGenerator(text))
        assert "DELETE" not in answer.sql.upper()  # only the query part is ever run
    with sqlite3.connect(shop_db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM item").fetchone()[0] == 3
    answer = ask("?", shop_db, ScriptedGenerator("SELECT price FROM items;"))
    assert answer.result.error.value == "no_such_table"
    assert "execution error (no_such_table)" in format_answer(answer)
    answer = ask("?", shop_db, ScriptedGenerator("Sorry, I cannot help."))
    assert answer.sql == "" and answer.result is None
    assert "no SQL" in format_answer(answer)


def test_usage_errors(shop_db, tmp_path):
    gen = ScriptedGenerator("SELECT 1;")
    with pytest.raises(AskError, match="database not found"):
        ask("q", tmp_path / "missing.sqlite", gen)
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(AskError, match="unknown strategy"):
        ask("q", shop_db, gen, strategy="best")
    for strategy in ("rm", "rm_vote"):
        with pytest.raises(AskError, match=f"'{strategy}' needs a reward model"):
            ask("q", shop_db, gen, strategy=strategy)


def test_cli_exit_codes_and_messages(shop_db, tmp_path, capsys):
    gen = ScriptedGenerator("SELECT COUNT(*) FROM item;")
    assert main(["--db", str(shop_db), "How many items?"], generator=gen) == 0
    out = capsys.readouterr().out
    assert "SQL: SELECT COUNT(*) FROM item" in out and "  3" in out
    assert main(["--db", str(tmp_path / "nope.sqlite"), "q"], generator=gen) == 2
    err = capsys.readouterr().err
    assert "database not found" in err and "nope.sqlite" in err
    assert main(["--db", str(shop_db), "q"], generator=ScriptedGenerator("SELECT nope FROM item;")) == 1
    assert "no_such_column" in capsys.readouterr().out
    # rm without a trained reward model: a clear pointer to the stage that makes it
    code = main(["--db", str(shop_db), "--strategy", "rm", "--run-dir", str(tmp_path / "run"), "q"], generator=gen)
    assert code == 2 and "05_reward_model" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_with_the_tiny_model_on_a_bundled_database(tmp_path, capsys):
    """The tiny random model writes no real SQL; the command must still run and say what it chose."""
    from nl2sql_lib.data.bundled import build_bundled

    bundled = build_bundled(tmp_path / "bundled", seed=0)
    db = bundled.dev[0].db_path
    code = main(["--db", db, "--model", "tiny:smollm2", "--strategy", "vote", "--n", "2",
                 "--max-new-tokens", "8", bundled.dev[0].question])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "-- strategy: vote" in out and "SQL:" in out
