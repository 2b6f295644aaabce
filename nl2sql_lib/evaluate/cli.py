"""Command line: score a predictions file against a gold file.

    python -m nl2sql_lib.evaluate --gold dev.json --pred predict_dev.json --db-root dev_databases \\
        [--semantics bird|spider] [--keep-distinct] [--timeout 5] [--workers 2] \\
        [--out metrics.json] [--per-item items.jsonl] [--report-dir DIR] [--ves-repeats 0] \\
        [--tolerance T] [--no-components] [--skip-missing-db]

GOLD: a BIRD or Spider dev JSON (a list of records with ``db_id`` and ``SQL`` or ``query``), or
a text file of ``SQL<TAB>db_id`` lines (Spider's dev_gold.sql, BIRD's dev.sql).
PRED: BIRD's ``predict_dev.json`` (``{"0": "SQL\\t----- bird -----\\tdb_id", ...}``) or a text
file with one SQL per line. Databases are found at ``DB_ROOT/<db_id>/<db_id>.sqlite``.

The run stops with a clear message (exit code 2) when the counts differ, a line is empty, a
prediction names another database than its gold, a database is missing, or a file is not UTF-8
(the message names the file, the line and the byte offset). Files are read as the official
evaluators' readers read them: a leading UTF-8 byte-order mark is ignored, and lines end at
``\n``, ``\r\n`` or ``\r`` only (a form feed, vertical tab or U+2028 stays inside its
query). Gold SQL runs once per question; its Spider hardness (for gold without difficulty
labels) and its clause items are worked out once, by the process that scores it. With
``--workers N``, work that lasts more than about a second is split by database over N
processes; smaller runs stay in one process, where they are faster (see score_parallel).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..data.example import Example
from ..io import write_json, write_jsonl

__all__ = ["main", "read_gold", "read_predictions", "evaluate_files", "EvalInputError"]

BIRD_SEPARATOR = "\t----- bird -----\t"


class EvalInputError(ValueError):
    """A gold/prediction file or the database root is unusable; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# Reading the inputs
# ---------------------------------------------------------------------------------------------

# Line ends as Python's text mode sees them (universal newlines), which is how both official
# evaluators read their files; str.splitlines() would also break on \f, \v, \x1c-\x1e, \x85,
# U+2028 and U+2029, splitting a query in two and shifting every later answer (issue 15).
_LINE_END = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    """``text`` split at newlines only, trailing blank lines dropped."""
    lines = _LINE_END.split(text)
    while lines and not lines[-1].strip():
        lines.pop()  # trailing newlines are fine
    return lines


def _read_text(path: Path, flag: str) -> str:
    """The file decoded as UTF-8, strictly, without a leading byte-order mark."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(_LINE_END.split(data[:exc.start].decode("utf-8")))
        raise EvalInputError(
            f"{flag} {path}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}, "
            f"counted from 0: {exc.reason}); save the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


# The difficulty of a question whose record has no label, until its Spider hardness is worked
# out (read_gold(derive_hardness=False) leaves that to the scoring, which may run in workers).
HARDNESS_PENDING = ""

# SQL -> Spider hardness, per process: a gold file often repeats its queries (one line per
# sampled candidate), and each hardness costs a full sqlglot parse.
_HARDNESS: dict[str, str] = {}


def _hardness(sql: str) -> str:
    if sql not in _HARDNESS:
        try:  # Spider has no label in dev.json; derive its hardness as Spider's evaluator does
            from ..data.loaders import spider_hardness

            _HARDNESS[sql] = spider_hardness(sql)
        except Exception:  # noqa: BLE001 - a label is a nicety, never a reason to fail
            _HARDNESS[sql] = "unknown"
    return _HARDNESS[sql]


def _difficulty(record: dict, sql: str, derive: bool) -> str:
    """The record's difficulty label, else Spider's hardness of ``sql`` (or HARDNESS_PENDING)."""
    if record.get("difficulty"):
        return str(record["difficulty"])
    return _hardness(sql) if derive else HARDNESS_PENDING


def read_gold(path: str | Path, db_root: str | Path, *, derive_hardness: bool = True) -> list[Example]:
    """Examples from a BIRD/Spider dev JSON or a ``SQL<TAB>db_id`` file (order kept).

    A question without a difficulty label gets Spider's hardness of its gold SQL; with
    ``derive_hardness=False`` it gets HARDNESS_PENDING instead, and the scoring works it out.
    """
    path, db_root = Path(path), Path(db_root)
    if not path.is_file():
        raise EvalInputError(f"--gold {path}: file not found")
    text = _read_text(path, "--gold")
    examples: list[Example] = []
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"--gold {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        for i, rec in enumerate(records):
            sql = rec.get("SQL", rec.get("query")) if isinstance(rec, dict) else None
            if not sql or not rec.get("db_id"):
                raise EvalInputError(f"--gold {path}: record {i} needs 'db_id' and 'SQL' (BIRD) or 'query' (Spider)")
            examples.append(_example(i, rec["db_id"], sql, db_root, rec.get("question_id", i),
                                     rec.get("question", ""), _difficulty(rec, sql, derive_hardness)))
        return examples
    lines = _lines(text)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EvalInputError(f"--gold {path}: line {number} is empty; every line must be 'SQL<TAB>db_id'")
        if "\t" not in line:
            raise EvalInputError(f"--gold {path}: line {number} has no TAB; expected 'SQL<TAB>db_id'")
        sql, db_id = line.rsplit("\t", 1)
        examples.append(_example(number - 1, db_id.strip(), sql.strip(), db_root, number - 1, "",
                                 _difficulty({}, sql.strip(), derive_hardness)))
    return examples


def _example(index: int, db_id: str, sql: str, db_root: Path, qid: Any, question: str, difficulty: str) -> Example:
    return Example(
        question_id=str(qid), db_id=db_id, db_path=_db_path(db_root, db_id),
        question=question, sql=sql, difficulty=difficulty,
    )


@lru_cache(maxsize=4096)
def _db_path(db_root: Path, db_id: str) -> str:
    """DB_ROOT/<db_id>/<db_id>.sqlite, built once per database rather than once per line."""
    return str(db_root / db_id / f"{db_id}.sqlite")


def read_predictions(path: str | Path) -> tuple[list[str], list[str | None]]:
    """(SQL list, db_id list or Nones) from BIRD's predict_dev.json or a one-SQL-per-line file."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"--pred {path}: file not found")
    text = _read_text(path, "--pred")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"--pred {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            keys = sorted(data, key=int)
        except ValueError:
            raise EvalInputError(f"--pred {path}: keys must be question indices \"0\", \"1\", ...") from None
        if [int(k) for k in keys] != list(range(len(keys))):
            missing = sorted(set(range(len(keys))) - {int(k) for k in keys})
            raise EvalInputError(f"--pred {path}: indices must run 0..{len(keys) - 1} without gaps; missing {missing[:10]}")
        sqls, dbs = [], []
        for key in keys:
            value = data[key]
            if not isinstance(value, str):
                raise EvalInputError(f"--pred {path}: entry {key!r} is not a string")
            sql, sep, db_id = value.partition(BIRD_SEPARATOR)
            sqls.append(sql.strip())
            dbs.append(db_id.strip() if sep else None)
        return sqls, dbs
    lines = _lines(text)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise EvalInputError(
                f"--pred {path}: line {number} is empty; write one SQL per line (for a question "
                "without an answer write any placeholder, e.g. SELECT NULL, so the lines stay aligned)"
            )
    return [line.strip() for line in lines], [None] * len(lines)


def check_inputs(examples: list[Example], preds: list[str], pred_dbs: list[str | None], gold: str, pred: str,
                 *, skip_missing: bool = False) -> list[int]:
    """Stop with a clear message on bad inputs; returns the indices to score.

    With ``skip_missing`` questions whose database file is absent are left out (and counted in
    the summary as ``skipped_missing_db``) instead of stopping the run.
    """
    if len(examples) != len(preds):
        raise EvalInputError(
            f"--gold {gold} has {len(examples)} questions but --pred {pred} has {len(preds)} predictions; "
            "they must match one to one, in order"
        )
    for i, (ex, db_id) in enumerate(zip(examples, pred_dbs)):
        if db_id is not None and db_id != ex.db_id:
            raise EvalInputError(f"--pred {pred}: prediction {i} names database {db_id!r} but gold question {i} is on {ex.db_id!r}")
    missing = sorted(path for path in {ex.db_path for ex in examples} if not Path(path).is_file())
    if missing and skip_missing:
        absent = set(missing)
        return [i for i, ex in enumerate(examples) if ex.db_path not in absent]
    if missing:
        shown = "\n  ".join(missing[:10]) + ("\n  ..." if len(missing) > 10 else "")
        raise EvalInputError(
            f"{len(missing)} database file(s) missing under --db-root (expected DB_ROOT/<db_id>/<db_id>.sqlite):\n  {shown}"
            "\n(pass --skip-missing-db to score only the questions whose database exists)"
        )
    return list(range(len(examples)))


# ---------------------------------------------------------------------------------------------
# Scoring, split over processes by database
# ---------------------------------------------------------------------------------------------


def _score(index: int, example: Example, pred: str, judge, components: bool) -> dict:
    """One question's item; a pending difficulty is worked out here, once per gold SQL."""
    from .metrics import score_item

    if example.difficulty == HARDNESS_PENDING:
        example.difficulty = _hardness(example.sql)
    return score_item(index, example, pred, judge, components=components)


# The questions a "fork" pool's workers score: set just before the pool starts, so the workers
# inherit them with the parent's memory instead of receiving them pickled.
_INHERITED: tuple[Sequence[Example], Sequence[str]] | None = None


def _score_chunk(task: tuple) -> list[dict]:
    """Worker: the items of the questions at ``positions``, in one process.

    ``task`` is (positions, examples, preds, judge_kwargs, components): ``examples[k]`` and
    ``preds[k]`` belong to question ``positions[k]``, or, when both are None, the questions are
    _INHERITED and ``positions`` index them.
    """
    positions, examples, preds, judge_kwargs, components = task
    from ..sql.judge import Judge

    if examples is None:
        inherited_examples, inherited_preds = _INHERITED
        examples = [inherited_examples[i] for i in positions]
        preds = [inherited_preds[i] for i in positions]
    judge = Judge(**judge_kwargs)
    return [_score(i, ex, pred, judge, components) for i, ex, pred in zip(positions, examples, preds)]


def split_by_database(examples: Sequence[Example], workers: int) -> list[list[int]]:
    """Question indices in ``workers`` buckets; one database's questions never span buckets."""
    by_db: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_db[ex.db_path].append(i)
    buckets: list[list[int]] = [[] for _ in range(max(1, workers))]
    for indices in sorted(by_db.values(), key=len, reverse=True):  # largest first onto the lightest
        min(buckets, key=len).extend(indices)
    return [sorted(b) for b in buckets if b]


def _start_method() -> str:
    """"fork" when this process has a single thread (cheap and safe), else "spawn".

    Forking a process that runs other threads (torch, tokenizers) can deadlock the child, so a
    notebook kernel with a model loaded gets "spawn", which costs about a second per worker.
    """
    tasks = Path("/proc/self/task")
    if "fork" in multiprocessing.get_all_start_methods() and tasks.is_dir() and len(list(tasks.iterdir())) == 1:
        return "fork"
    return "spawn"


# A process pool costs a fixed start-up (forking and pickling the items back; "spawn" also
# re-imports the library and pickles the questions out, about a second per worker). So scoring
# starts in this process and spreads the rest over the pool only when, after this many seconds
# (counted from the second question: the first one pays for lazy imports), at least as much
# work is estimated to remain. On Spider dev's 7,776 candidates without components (Spider
# hardness and execution, about half a second of work) one process was faster than a pool of 2
# (issue #3; again in issue 15 with other jobs on the cores: 2.4 s against 2.9 s with a pool
# after 0.25 s, medians of 4).
POOL_AFTER_SECONDS = {"fork": 1.0, "spawn": 5.0}


def score_parallel(examples: list[Example], preds: list[str], judge_kwargs: dict, *, workers: int = 1,
                   components: bool = True, pool_after: float | None = None) -> list[dict]:
    """Per-question items in order, computed in this process or by ``workers`` processes.

    With ``workers > 1`` the questions are first scored here; once ``pool_after`` seconds
    (default: POOL_AFTER_SECONDS for the start method) have passed and the remaining questions
    are estimated to take at least as long again, they are split by database over ``workers``
    processes. ``pool_after=0`` sends every question to the pool.
    """
    if workers <= 1 or len(examples) <= 1:
        return _score_chunk((range(len(examples)), examples, preds, judge_kwargs, components))
    method = _start_method()
    budget = POOL_AFTER_SECONDS[method] if pool_after is None else pool_after
    if budget > 0:
        items, rest = _score_until(examples, preds, judge_kwargs, components, budget)
    else:
        items, rest = [], list(range(len(examples)))
    if rest:
        items += _score_in_pool(examples, preds, rest, judge_kwargs, workers, components, method)
    return sorted(items, key=lambda it: it["index"])


def _score_until(examples: list[Example], preds: list[str], judge_kwargs: dict, components: bool,
                 budget: float) -> tuple[list[dict], list[int]]:
    """Score in this process; stop after ``budget`` seconds if the rest looks at least as long.

    Returns (items scored, indices left for the pool).
    """
    from ..sql.judge import Judge

    judge = Judge(**judge_kwargs)
    items: list[dict] = [_score(0, examples[0], preds[0], judge, components)] if examples else []
    start = time.perf_counter()  # after the first question, which imports what scoring needs
    decided = False
    for i in range(1, len(examples)):
        items.append(_score(i, examples[i], preds[i], judge, components))
        if not decided and time.perf_counter() - start >= budget:
            decided = True  # estimate once: the rest takes about as long per question as the ones timed
            remaining = len(examples) - i - 1
            if remaining * (time.perf_counter() - start) / i >= budget:
                return items, list(range(i + 1, len(examples)))
    return items, []


def _score_in_pool(examples: list[Example], preds: list[str], positions: list[int], judge_kwargs: dict,
                   workers: int, components: bool, method: str) -> list[dict]:
    """Items of the questions at ``positions``, split by database over a pool of processes.

    Forked workers inherit the questions; spawned ones are sent theirs.
    """
    global _INHERITED
    buckets = [[positions[k] for k in bucket]
               for bucket in split_by_database([examples[i] for i in positions], workers)]
    if len(buckets) <= 1:
        return _score_chunk((buckets[0], examples, preds, judge_kwargs, components)) if buckets else []
    if method == "fork":
        tasks = [(bucket, None, None, judge_kwargs, components) for bucket in buckets]
    else:
        tasks = [(bucket, [examples[i] for i in bucket], [preds[i] for i in bucket], judge_kwargs, components)
                 for bucket in buckets]
    _INHERITED = (examples, preds)
    try:
        with multiprocessing.get_context(method).Pool(len(tasks)) as pool:
            results = pool.map(_score_chunk, tasks)
    finally:
        _INHERITED = None
    return [it for chunk in results for it in chunk]


def evaluate_files(gold: str | Path, pred: str | Path, db_root: str | Path, *, semantics: str = "bird",
                   keep_distinct: bool = False, timeout: float = 5.0, workers: int = 1,
                   components: bool = True, tolerance: float | None = None,
                   ves_repeats: int = 0, skip_missing_db: bool = False) -> tuple[dict[str, Any], list[dict]]:
    """Read, check and score; returns (summary, items)."""
    from .metrics import summarize

    examples = read_gold(gold, db_root, derive_hardness=False)  # hardness comes with the scoring
    preds, pred_dbs = read_predictions(pred)
    keep = check_inputs(examples, preds, pred_dbs, str(gold), str(pred), skip_missing=skip_missing_db)
    skipped = len(examples) - len(keep)
    examples, preds = [examples[i] for i in keep], [preds[i] for i in keep]
    judge_kwargs = {"semantics": semantics, "timeout": timeout, "keep_distinct": keep_distinct, "tolerance": tolerance}
    start = time.perf_counter()
    items = score_parallel(examples, preds, judge_kwargs, workers=workers, components=components)
    summary = summarize(items)
    if ves_repeats > 0:
        from ..sql.judge import Judge
        from .ves import rves, time_ratio, ves

        judge = Judge(**judge_kwargs)
        ratios = [time_ratio(ex.db_path, p, ex.sql, judge, repeats=ves_repeats) if it["correct"] else 0.0
                  for ex, p, it in zip(examples, preds, items)]
        summary["ves"], summary["rves"] = ves(ratios), rves(ratios)
    if skip_missing_db:
        summary["skipped_missing_db"] = skipped
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["settings"] = {"gold": str(gold), "pred": str(pred), "db_root": str(db_root), "semantics": semantics,
                           "keep_distinct": keep_distinct, "timeout": timeout, "workers": workers,
                           "tolerance": tolerance}
    return summary, items


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nl2sql_lib.evaluate",
        description="Execution accuracy (EX) of predicted SQL against gold SQL on SQLite databases.",
        epilog="Input files must be UTF-8: a byte that is not UTF-8 stops the run (exit 2) with the file, "
               "the line and the byte offset; nothing is decoded leniently. A leading byte-order mark is "
               "ignored. Lines end at \\n, \\r\\n or \\r only, as in the official evaluators' readers: a "
               "form feed, vertical tab or U+2028 stays inside its query. Stray semicolons get each official "
               "evaluator's verdict: under --semantics bird (and spider --keep-distinct) the text runs as "
               "written, so 'SELECT ...;;' or 'SELECT ...; ;' is a second statement and wrong; under "
               "--semantics spider only the first statement, up to its semicolon, runs (test-suite keeps "
               "sqlparse's first statement when it removes DISTINCT).",
    )
    parser.add_argument("--gold", required=True, help="BIRD/Spider dev JSON, or a SQL<TAB>db_id file")
    parser.add_argument("--pred", required=True, help="BIRD predict_dev.json, or one SQL per line")
    parser.add_argument("--db-root", required=True, help="folder holding <db_id>/<db_id>.sqlite")
    parser.add_argument("--semantics", choices=["bird", "spider"], default="bird",
                        help="bird: set of rows; spider: test-suite multiset/permutation rule (default bird)")
    parser.add_argument("--keep-distinct", action="store_true",
                        help="spider only: do not remove DISTINCT from both queries before running them")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per predicted query (default 5)")
    parser.add_argument("--tolerance", type=float, default=None, help="numeric tolerance (default: exact)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, work split by database once it is large enough to pay off (default 1)")
    parser.add_argument("--out", help="write the summary (metrics) JSON here")
    parser.add_argument("--per-item", help="write one JSON record per question here (JSON Lines)")
    parser.add_argument("--report-dir", help="also write report.md and plots into this folder")
    parser.add_argument("--no-components", action="store_true", help="skip exact match / component scores")
    parser.add_argument("--ves-repeats", type=int, default=0, help="also compute VES and R-VES with N timings")
    parser.add_argument("--skip-missing-db", action="store_true",
                        help="leave out questions whose database file is missing instead of stopping")
    return parser


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"n = {summary['n']}   EX = {100 * summary['ex']:.2f}%", end="")
    if "exact_match" in summary:
        print(f"   exact match = {100 * summary['exact_match']:.2f}%   partial = {100 * summary['partial']:.2f}%", end="")
    if "ves" in summary:
        print(f"   VES = {summary['ves']:.2f}   R-VES = {summary['rves']:.2f}", end="")
    print()
    if summary["by_difficulty"]:
        print("by difficulty: " + ", ".join(f"{d} {100 * v['ex']:.1f}% (n={v['n']})"
                                            for d, v in summary["by_difficulty"].items()))
    if summary["errors"]:
        print("misses: " + ", ".join(f"{k} {v}" for k, v in summary["errors"].items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        summary, items = evaluate_files(
            args.gold, args.pred, args.db_root, semantics=args.semantics, keep_distinct=args.keep_distinct,
            timeout=args.timeout, workers=args.workers, components=not args.no_components,
            tolerance=args.tolerance, ves_repeats=args.ves_repeats, skip_missing_db=args.skip_missing_db,
        )
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary.get("skipped_missing_db"):
        print(f"skipped {summary['skipped_missing_db']} question(s) whose database file is missing")
    _print_summary(summary)
    if args.out:
        write_json(args.out, summary)
    if args.per_item:
        write_jsonl(args.per_item, items)
    if args.report_dir:
        from .metrics import summarize
        from .report import write_report

        name = Path(args.pred).stem
        path = write_report({Path(args.gold).stem: {f"{name}/greedy": summarize(items)}}, args.report_dir,
                            {Path(args.gold).stem: {f"{name}/greedy": items}})
        print(f"report: {path}")
    return 0
