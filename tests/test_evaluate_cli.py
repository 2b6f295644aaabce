"""The command line on both gold formats and both prediction formats, and its input errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nl2sql_lib.evaluate.cli import split_by_database

PROJECT = Path(__file__).resolve().parent.parent


def _make_db(root: Path, db_id: str) -> None:
    path = root / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score INTEGER);
        INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 20);
        """
    )
    conn.commit()
    conn.close()


GOLD = [
    ("SELECT name FROM t WHERE score = 20", "db_one", "simple"),
    ("SELECT count(*) FROM t", "db_one", "moderate"),
    ("SELECT name, score FROM t ORDER BY id DESC", "db_two", "challenging"),
    ("SELECT DISTINCT score FROM t", "db_two", "simple"),
]
PRED = [
    "SELECT name FROM t WHERE score > 15",  # right
    "SELECT count(*) FROM t WHERE id > 1",  # wrong
    "SELECT score, name FROM t ORDER BY id DESC",  # spider: right (columns permuted); bird: wrong
    "SELECT score FROM t",  # bird: right (sets); spider: right (DISTINCT removed); keep: wrong
]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "databases"
    for db_id in ("db_one", "db_two"):
        _make_db(root, db_id)
    bird_gold = tmp_path / "dev.json"
    bird_gold.write_text(json.dumps([
        {"question_id": i, "db_id": db, "question": "?", "evidence": "", "SQL": sql, "difficulty": diff}
        for i, (sql, db, diff) in enumerate(GOLD)
    ]))
    spider_gold = tmp_path / "spider_dev.json"
    spider_gold.write_text(json.dumps([{"db_id": db, "query": sql, "question": "?"} for sql, db, _ in GOLD]))
    tsv_gold = tmp_path / "dev_gold.sql"
    tsv_gold.write_text("".join(f"{sql}\t{db}\n" for sql, db, _ in GOLD))
    bird_pred = tmp_path / "predict_dev.json"
    bird_pred.write_text(json.dumps({str(i): f"{sql}\t----- bird -----\t{GOLD[i][1]}" for i, sql in enumerate(PRED)}))
    line_pred = tmp_path / "pred.sql"
    line_pred.write_text("\n".join(PRED) + "\n")
    return {"root": root, "bird_gold": bird_gold, "spider_gold": spider_gold, "tsv_gold": tsv_gold,
            "bird_pred": bird_pred, "line_pred": line_pred, "tmp": tmp_path}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nl2sql_lib.evaluate", *map(str, args)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("gold", ["bird_gold", "tsv_gold", "spider_gold"])
@pytest.mark.parametrize("pred", ["bird_pred", "line_pred"])
def test_both_formats_bird_rule(files, gold: str, pred: str) -> None:
    out, items = files["tmp"] / f"m_{gold}_{pred}.json", files["tmp"] / f"i_{gold}_{pred}.jsonl"
    proc = _run("--gold", files[gold], "--pred", files[pred], "--db-root", files["root"],
                "--out", out, "--per-item", items)
    assert proc.returncode == 0, proc.stderr
    assert "EX = 50.00%" in proc.stdout
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 4 and metrics["ex"] == 0.5
    assert metrics["errors"] == {"wrong_result": 2}
    records = [json.loads(line) for line in items.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert [r["correct"] for r in records] == [True, False, False, True]
    assert [r["db_id"] for r in records] == ["db_one", "db_one", "db_two", "db_two"]
    if gold == "bird_gold":
        assert metrics["by_difficulty"]["simple"] == {"n": 2, "ex": 1.0}


def test_spider_rule_keep_distinct_and_workers(files) -> None:
    out = files["tmp"] / "spider.json"
    proc = _run("--gold", files["tsv_gold"], "--pred", files["line_pred"], "--db-root", files["root"],
                "--semantics", "spider", "--workers", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["ex"] == 0.75
    proc = _run("--gold", files["tsv_gold"], "--pred", files["line_pred"], "--db-root", files["root"],
                "--semantics", "spider", "--keep-distinct", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["ex"] == 0.5


def test_report_dir(files) -> None:
    report = files["tmp"] / "report"
    proc = _run("--gold", files["bird_gold"], "--pred", files["line_pred"], "--db-root", files["root"],
                "--report-dir", report)
    assert proc.returncode == 0, proc.stderr
    text = (report / "report.md").read_text()
    assert "| pred/greedy | 4 | 50.0 |" in text and "wrong_result" in text
    assert (report / "plots" / "dev_ex.png").stat().st_size > 1000


def test_mismatched_counts(files) -> None:
    short = files["tmp"] / "short.sql"
    short.write_text("\n".join(PRED[:3]) + "\n")
    proc = _run("--gold", files["tsv_gold"], "--pred", short, "--db-root", files["root"])
    assert proc.returncode == 2
    assert "has 4 questions but --pred" in proc.stderr and "has 3 predictions" in proc.stderr


def test_empty_line(files) -> None:
    holes = files["tmp"] / "holes.sql"
    holes.write_text(PRED[0] + "\n\n" + "\n".join(PRED[2:]) + "\n")
    proc = _run("--gold", files["tsv_gold"], "--pred", holes, "--db-root", files["root"])
    assert proc.returncode == 2 and "line 2 is empty" in proc.stderr
    gold_holes = files["tmp"] / "gold_holes.sql"
    gold_holes.write_text(f"{GOLD[0][0]}\t{GOLD[0][1]}\n\n")
    gold_holes.write_text(f"{GOLD[0][0]}\t{GOLD[0][1]}\n   \n{GOLD[1][0]}\t{GOLD[1][1]}\n")
    proc = _run("--gold", gold_holes, "--pred", files["line_pred"], "--db-root", files["root"])
    assert proc.returncode == 2 and "line 2 is empty" in proc.stderr


def test_missing_database(files) -> None:
    proc = _run("--gold", files["tsv_gold"], "--pred", files["line_pred"], "--db-root", files["tmp"] / "elsewhere")
    assert proc.returncode == 2
    assert "database file(s) missing" in proc.stderr and "db_one/db_one.sqlite" in proc.stderr
    assert not (files["tmp"] / "elsewhere").exists()


def test_prediction_on_another_database(files) -> None:
    wrong = files["tmp"] / "wrong_db.json"
    wrong.write_text(json.dumps({str(i): f"{sql}\t----- bird -----\tdb_two" for i, sql in enumerate(PRED)}))
    proc = _run("--gold", files["bird_gold"], "--pred", wrong, "--db-root", files["root"])
    assert proc.returncode == 2 and "prediction 0 names database 'db_two'" in proc.stderr


def test_split_by_database_keeps_each_database_in_one_bucket() -> None:
    from nl2sql_lib.data.example import Example

    examples = [Example(str(i), db, f"/x/{db}.sqlite", "?", "SELECT 1") for i, db in
                enumerate(["a", "a", "a", "b", "c", "c", "b", "d"])]
    buckets = split_by_database(examples, 2)
    assert sorted(i for b in buckets for i in b) == list(range(8))
    for bucket in buckets:
        dbs = {examples[i].db_id for i in bucket}
        for other in buckets:
            if other is not bucket:
                assert not dbs & {examples[i].db_id for i in other}
    assert sorted(len(b) for b in buckets) == [4, 4]


def test_skip_missing_db(files) -> None:
    import shutil

    shutil.rmtree(files["root"] / "db_two")
    out = files["tmp"] / "skip.json"
    proc = _run("--gold", files["tsv_gold"], "--pred", files["line_pred"], "--db-root", files["root"])
    assert proc.returncode == 2 and "--skip-missing-db" in proc.stderr
    proc = _run("--gold", files["tsv_gold"], "--pred", files["line_pred"], "--db-root", files["root"],
                "--skip-missing-db", "--out", out)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 2 and metrics["skipped_missing_db"] == 2 and metrics["ex"] == 0.5
    assert "skipped 2 question(s)" in proc.stdout


def _examples_and_preds(files) -> tuple[list, list[str]]:
    from nl2sql_lib.evaluate.cli import read_gold

    examples = read_gold(files["tsv_gold"], files["root"])
    return examples * 3, PRED * 3


def test_small_work_stays_in_one_process(files, monkeypatch) -> None:
    """--workers 2 on a few questions: a pool would cost more than it saves, so none starts."""
    import multiprocessing

    from nl2sql_lib.evaluate import cli

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started for a small workload")

    monkeypatch.setattr(multiprocessing, "get_context", no_pool)
    examples, preds = _examples_and_preds(files)
    items = cli.score_parallel(examples, preds, {"semantics": "bird"}, workers=2)
    assert [it["index"] for it in items] == list(range(len(examples)))
    assert [it["correct"] for it in items] == [True, False, False, True] * 3


@pytest.mark.parametrize("pool_after", [0, 1e-9])
def test_pool_gives_the_same_items(files, pool_after: float) -> None:
    """The pool, from the start (0) or after a first stretch scored here (tiny budget), agrees."""
    from nl2sql_lib.evaluate import cli

    examples, preds = _examples_and_preds(files)
    serial = cli.score_parallel(examples, preds, {"semantics": "spider"}, workers=1)
    pooled = cli.score_parallel(examples, preds, {"semantics": "spider"}, workers=2, pool_after=pool_after)
    assert pooled == serial
    assert [it["index"] for it in pooled] == list(range(len(examples)))


# ---------------------------------------------------------------------------------------------
# Malformed input (issue 15): bytes that are not UTF-8, odd line breaks, a BOM, stray semicolons
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pred", "gold", "json_pred"])
def test_bytes_that_are_not_utf8_stop_with_file_line_and_offset(files, which: str) -> None:
    path = files["tmp"] / f"latin1_{which}"
    if which == "pred":
        data = ("\n".join(PRED) + "\n").encode().replace(b"score > 15", b"score > 15 -- caf\xe9")
        gold, pred = files["tsv_gold"], path
        line, offset = 1, data.index(b"\xe9")
    elif which == "gold":
        data = "".join(f"{sql}\t{db}\n" for sql, db, _ in GOLD).encode().replace(b"count(*)", b"count(*) /*\xff*/")
        gold, pred = path, files["line_pred"]
        line, offset = 2, data.index(b"\xff")
    else:
        data = files["bird_pred"].read_bytes().replace(b'"1": "', b'\n"1": "\x80')
        gold, pred = files["bird_gold"], path
        line, offset = 2, data.index(b"\x80")
    path.write_bytes(data)
    proc = _run("--gold", gold, "--pred", pred, "--db-root", files["root"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert str(path) in proc.stderr and "not UTF-8" in proc.stderr
    assert f"line {line}" in proc.stderr and f"byte offset {offset}" in proc.stderr


def test_form_feed_inside_a_query_does_not_split_it(files) -> None:
    """Only newlines end a line: a form feed (or vertical tab, U+2028) stays inside its query."""
    gold3 = files["tmp"] / "gold3.sql"
    gold3.write_text("".join(f"{sql}\t{db}\n" for sql, db, _ in GOLD[:3]))
    two = files["tmp"] / "two.sql"
    two.write_text(PRED[0] + "\n" + "SELECT count(*) FROM t\fWHERE id > 1\n")
    proc = _run("--gold", gold3, "--pred", two, "--db-root", files["root"])
    assert proc.returncode == 2, proc.stdout
    assert "has 3 questions but --pred" in proc.stderr and "has 2 predictions" in proc.stderr

    # Same count: every answer stays with its question, and the breaks inside queries are kept.
    odd = files["tmp"] / "odd_breaks.sql"
    preds = [PRED[0].replace(" WHERE", "\fWHERE"), PRED[1].replace(" WHERE", "\vWHERE"),
             PRED[2].replace(" ORDER", "\u2028ORDER"), PRED[3] + "\x1c"]
    odd.write_bytes("\r\n".join(preds).encode() + b"\r\n")
    gold_odd = files["tmp"] / "gold_odd.sql"
    gold_odd.write_bytes("".join(f"{sql.replace(' FROM', chr(12) + 'FROM')}\t{db}\r\n" for sql, db, _ in GOLD).encode())
    items = files["tmp"] / "odd.jsonl"
    proc = _run("--gold", gold_odd, "--pred", odd, "--db-root", files["root"], "--per-item", items)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in items.read_text(encoding="utf-8").split("\n") if line]
    assert [r["pred_sql"] for r in records] == [p.strip() for p in preds]  # str.strip: \x1c is a blank
    assert [r["correct"] for r in records] == [True, False, False, True]


def test_byte_order_mark_is_stripped(files) -> None:
    bom = b"\xef\xbb\xbf"
    for name in ("tsv_gold", "bird_gold", "line_pred", "bird_pred"):
        copy = files["tmp"] / f"bom_{files[name].name}"
        copy.write_bytes(bom + files[name].read_bytes())
        files[f"bom_{name}"] = copy
    for gold, pred in [("bom_tsv_gold", "bom_line_pred"), ("bom_bird_gold", "bom_bird_pred")]:
        items = files["tmp"] / f"bom_{gold}.jsonl"
        proc = _run("--gold", files[gold], "--pred", files[pred], "--db-root", files["root"], "--per-item", items)
        assert proc.returncode == 0, proc.stderr
        first = json.loads(items.read_text().splitlines()[0])
        assert first["pred_sql"] == PRED[0] and first["correct"]
    # the gold's first query is compared without the mark: a prediction equal to it matches exactly
    same = files["tmp"] / "same.sql"
    same.write_text("\n".join([GOLD[0][0]] + PRED[1:]) + "\n")
    items = files["tmp"] / "bom_same.jsonl"
    proc = _run("--gold", files["bom_tsv_gold"], "--pred", same, "--db-root", files["root"], "--per-item", items)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(items.read_text().splitlines()[0])["exact_match"]


STRAY = ["SELECT count(*) FROM t;;", "SELECT count(*) FROM t; ;", "SELECT count(*) FROM t ; \t",
         "SELECT count(*) FROM t; SELECT 1"]


@pytest.mark.parametrize("flags, expected", [
    # BIRD's evaluator hands the text to sqlite3's cursor.execute, which refuses a second
    # statement, even an empty one: only a single trailing semicolon (and blanks) runs.
    (["--semantics", "bird"], [False, False, True, False]),
    # Test-suite's remove_distinct keeps only sqlparse's first statement (up to its semicolon).
    (["--semantics", "spider"], [True, True, True, True]),
    # With --keep_distinct test-suite runs the text as written, like BIRD.
    (["--semantics", "spider", "--keep-distinct"], [False, False, True, False]),
])
def test_stray_semicolons_get_each_official_verdict(files, flags: list[str], expected: list[bool]) -> None:
    gold = files["tmp"] / "count_gold.sql"
    gold.write_text("SELECT count(*) FROM t\tdb_one\n" * len(STRAY))
    pred = files["tmp"] / "stray.sql"
    pred.write_text("\n".join(STRAY) + "\n")
    items = files["tmp"] / "stray.jsonl"
    proc = _run("--gold", gold, "--pred", pred, "--db-root", files["root"], "--per-item", items,
                "--no-components", *flags)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["correct"] for line in items.read_text().splitlines()] == expected


def test_spider_first_statement_cut_respects_strings_comments_and_parentheses() -> None:
    from nl2sql_lib.sql.compare import remove_distinct

    assert remove_distinct("SELECT DISTINCT a FROM t; ;") == "SELECT  a FROM t;"
    assert remove_distinct("SELECT a FROM t WHERE b = ';' -- ;\n; DROP TABLE t") == \
        "SELECT a FROM t WHERE b = ';' -- ;\n;"
    assert remove_distinct("SELECT (1;2)") == "SELECT (1;2)"
    assert remove_distinct("SELECT a FROM t") == "SELECT a FROM t"


@pytest.mark.parametrize("workers,pool_after", [(1, None), (2, 0)])
def test_hardness_worked_out_while_scoring_matches_read_gold(files, workers: int, pool_after) -> None:
    """The command leaves Spider hardness to the scoring (in the workers, once per gold SQL):
    its items carry the labels read_gold gives when it works them out itself."""
    from nl2sql_lib.evaluate import cli

    labelled = cli.read_gold(files["tsv_gold"], files["root"]) * 3
    pending = cli.read_gold(files["tsv_gold"], files["root"], derive_hardness=False) * 3
    assert {ex.difficulty for ex in pending} == {cli.HARDNESS_PENDING}
    assert cli.HARDNESS_PENDING not in {ex.difficulty for ex in labelled}
    expected = cli.score_parallel(labelled, PRED * 3, {"semantics": "bird"}, workers=1)
    items = cli.score_parallel(pending, PRED * 3, {"semantics": "bird"}, workers=workers, pool_after=pool_after)
    assert items == expected
