"""Loaders: every dataset becomes lists of :class:`Example`, keyed by split.

    load_source(SourceParams(type="bird", path="data/bird/dev"), work_dir) -> {"train": [...], "dev": [...]}

Layouts read (``path`` is the folder, or one of its JSON files):

- ``bird``: ``train.json`` / ``dev.json`` (``question_id`` assigned where missing, ``SQL``,
  ``evidence``, ``difficulty``), ``<split>_databases/<db>/<db>.sqlite`` (any
  ``*_databases`` folder is searched), ``<db>/database_description/*.csv`` (read by the
  schema module), ``<split>_tables.json`` (db_ids checked against it when present). ``path``
  is a question file, a folder holding them, or the folder above BIRD's unpacked
  ``train/`` and ``dev/`` archives.
- ``spider``: ``dev.json`` -> dev, ``train_spider.json`` (+ ``train_others.json``) -> train,
  ``tables.json``, ``database/<db>/<db>.sqlite``. Hardness is not in the files: it is derived
  from the SQL's structure as Spider's evaluator does (:func:`spider_hardness`).
- ``create_context``: JSON or JSONL records ``{question, context, answer}`` as in
  sql-create-context. Each distinct context (by hash) is materialized once into
  ``work_dir/databases/ctx_<hash>/ctx_<hash>.sqlite`` so that execution works (``limit``
  samples records before anything is materialized). The tables are empty: examples carry
  ``extra["empty_tables"]``.
- ``jsonl``: Example records one per line (a file, or a folder with train.jsonl / dev.jsonl).
- ``bundled``: the generated benchmark, written into ``work_dir/databases``.

A missing database raises :class:`MissingDatabase` naming the db_id and the path (no file is
created). Spider's public dev set lacks ``wta_1.sqlite``; Spider therefore defaults to
reporting such questions (``Example.extra["missing_db"]``, ``result.report["missing_db"]``)
instead of stopping. ``on_missing_db`` in the source parameters picks either behaviour.
"""

from __future__ import annotations

import hashlib
import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import sqlglot
from sqlglot import exp

from ..io import DataFileError, iter_jsonl, read_json
from .example import Example, read_examples
from .schema import MissingDatabase

KNOWN_SOURCES = ("bundled", "spider", "bird", "create_context", "jsonl")
SPLITS = ("train", "dev")


class UnknownSourceError(ValueError):
    """A source type no loader knows; the message lists the known ones."""


class LoadedSource(dict):
    """``{"train": [...], "dev": [...]}`` plus ``.report``: what the loader noticed.

    ``report["missing_db"]``: question ids whose database file does not exist;
    ``report["skipped"]``: records left out, with the reason; ``report["files"]``: files read.
    """

    def __init__(self, train=None, dev=None):
        super().__init__(train=list(train or []), dev=list(dev or []))
        self.report: dict[str, Any] = {"missing_db": [], "skipped": [], "files": []}


def load_source(source, work_dir: str | Path, *, seed: int = 0) -> LoadedSource:
    """Load one source (a :class:`~nl2sql_lib.config.SourceParams`) into train/dev lists.

    ``work_dir`` receives whatever the loader must create (bundled and create-context
    databases). ``source.split`` other than ``auto`` moves every example into that split;
    ``source.limit`` keeps a seeded sample of that many per split (in file order).
    """
    kind = getattr(source, "type", None)
    loader = _LOADERS.get(kind)
    if loader is None:
        raise UnknownSourceError(
            f"unknown data source type {kind!r}; known types: {', '.join(KNOWN_SOURCES)}"
        )
    if kind != "bundled" and not getattr(source, "path", None):
        raise DataFileError(f"data source of type {kind!r} needs a 'path' (a file or folder)")
    on_missing = getattr(source, "on_missing_db", None) or ("report" if kind == "spider" else "error")
    result = loader(source, Path(work_dir), seed=seed, on_missing_db=on_missing)
    name = getattr(source, "name", None) or kind
    split = getattr(source, "split", "auto")
    if split in SPLITS:
        merged = result["train"] + result["dev"]
        result["train"], result["dev"] = ([], [])
        result[split] = merged
    limit = getattr(source, "limit", None)
    for key in SPLITS:
        if limit and len(result[key]) > limit:
            chosen = sorted(random.Random(seed).sample(range(len(result[key])), limit))
            result[key] = [result[key][i] for i in chosen]
        for example in result[key]:
            example.source = name
    result.report["missing_db"] = [
        e.question_id for key in SPLITS for e in result[key] if e.extra.get("missing_db")
    ]
    return result


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def check_database(
    example: Example, on_missing_db: str, origin: str
) -> Example:
    """Raise (``error``) or mark (``report``) an example whose database file does not exist."""
    if Path(example.db_path).is_file():
        return example
    if on_missing_db == "error":
        raise MissingDatabase(
            f"{origin}: database '{example.db_id}' not found at {example.db_path} "
            f"(question {example.question_id}); nothing was created. Put {example.db_id}.sqlite "
            f"there, or set on_missing_db: report to keep such questions without execution"
        )
    example.extra["missing_db"] = True
    return example


def _records(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataFileError(f"{path}: record {index} is not a JSON object")
    return data


def _field(record: dict, names: tuple[str, ...], path: Path, index: int) -> Any:
    for name in names:
        if name in record:
            return record[name]
    raise DataFileError(
        f"{path}: record {index} has no field {' or '.join(repr(n) for n in names)} "
        f"(its fields: {', '.join(sorted(record))})"
    )


def _split_of_file(path: Path) -> str:
    return "dev" if re.search(r"dev|val|test", path.stem, re.I) else "train"


# --------------------------------------------------------------------------------------------
# BIRD
# --------------------------------------------------------------------------------------------


def load_bird(source, work_dir: Path, *, seed: int = 0, on_missing_db: str = "error") -> LoadedSource:
    root = Path(source.path)
    files = _bird_files(root)
    result = LoadedSource()
    for path in files:
        split = _split_of_file(path)
        folder = path.parent
        db_roots = [folder / f"{split}_databases"] + sorted(
            p for p in folder.glob("*_databases") if p.is_dir() and p.name != f"{split}_databases"
        )
        known_dbs = _spider_tables(folder / f"{path.stem}_tables.json")
        result.report["files"].append(str(path))
        for index, record in enumerate(_records(path)):
            db_id = _field(record, ("db_id",), path, index)
            if known_dbs is not None and db_id not in known_dbs:
                raise DataFileError(
                    f"{path}: record {index}: db_id {db_id!r} is not in {folder / f'{path.stem}_tables.json'}"
                )
            qid = record.get("question_id")
            example = Example(
                question_id=f"bird-{split}-{qid if qid is not None else index}",
                db_id=db_id,
                db_path=str(_find_db(db_roots, db_id)),
                question=_field(record, ("question",), path, index),
                sql=_field(record, ("SQL", "sql", "query"), path, index),
                evidence=record.get("evidence") or "",
                difficulty=record.get("difficulty") or "unknown",
                source="bird",
            )
            result[split].append(check_database(example, on_missing_db, f"{path}: record {index}"))
    return result


def _bird_files(root: Path) -> list[Path]:
    """BIRD's question files under ``root``: the file itself, ``<split>.json`` in the folder, or
    ``<split>.json`` in its split folders as BIRD's archives unpack (``train/``, ``dev/`` or
    ``dev_20240627/``)."""
    if root.is_file():
        return [root]
    files = [root / f"{s}.json" for s in SPLITS if (root / f"{s}.json").is_file()]
    if not files:
        for split in SPLITS:
            for folder in sorted(p for p in root.glob(f"{split}*") if p.is_dir()):
                if (folder / f"{split}.json").is_file():
                    files.append(folder / f"{split}.json")
                    break
    if not files:
        raise DataFileError(
            f"{root}: no BIRD train.json or dev.json found (looked in the folder and in its "
            f"train*/ and dev*/ folders)"
        )
    return files


def _find_db(roots: list[Path], db_id: str) -> Path:
    """The first ``<root>/<db>/<db>.sqlite`` that exists, else the expected path in the first root."""
    for root in roots:
        candidate = root / db_id / f"{db_id}.sqlite"
        if candidate.is_file():
            return candidate
    return roots[0] / db_id / f"{db_id}.sqlite"


# --------------------------------------------------------------------------------------------
# Spider
# --------------------------------------------------------------------------------------------

SPIDER_FILES = {"dev.json": "dev", "train_spider.json": "train", "train_others.json": "train"}
_SPIDER_ID_PREFIX = {"dev.json": "dev", "train_spider.json": "train", "train_others.json": "others"}


def load_spider(source, work_dir: Path, *, seed: int = 0, on_missing_db: str = "report") -> LoadedSource:
    root = Path(source.path)
    if root.is_file():
        files, root = [root], root.parent
    else:
        files = [root / name for name in SPIDER_FILES if (root / name).is_file()]
    if not files:
        raise DataFileError(f"{root}: no Spider dev.json / train_spider.json found")
    known_dbs = _spider_tables(root / "tables.json")
    result = LoadedSource()
    for path in files:
        split = SPIDER_FILES.get(path.name, _split_of_file(path))
        stem = _SPIDER_ID_PREFIX.get(path.name, path.stem)
        result.report["files"].append(str(path))
        for index, record in enumerate(_records(path)):
            db_id = _field(record, ("db_id",), path, index)
            if known_dbs is not None and db_id not in known_dbs:
                raise DataFileError(f"{path}: record {index}: db_id {db_id!r} is not in tables.json")
            sql = _field(record, ("query", "sql"), path, index)
            example = Example(
                question_id=f"spider-{stem}-{index:04d}",
                db_id=db_id,
                db_path=str(root / "database" / db_id / f"{db_id}.sqlite"),
                question=_field(record, ("question",), path, index),
                sql=sql,
                difficulty=spider_hardness(sql),
                source="spider",
            )
            result[split].append(check_database(example, on_missing_db, f"{path}: record {index}"))
    return result


def _spider_tables(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {entry["db_id"] for entry in _records(path) if "db_id" in entry}


def spider_hardness(sql: str) -> str:
    """Spider's hardness level (easy / medium / hard / extra) from the SQL's structure.

    The rule of Spider's ``evaluation.py`` (``Evaluator.eval_hardness``), counted on sqlglot's
    parse instead of Spider's own parser:

    - component1: WHERE, GROUP BY, ORDER BY, LIMIT, each extra table in FROM, each OR and each
      LIKE among the WHERE/HAVING conditions;
    - component2: nested queries (sub-queries in WHERE/HAVING/FROM, a set operation);
    - others: more than one aggregate, more than one selected column, more than one WHERE
      condition, more than one GROUP BY column.

    A query sqlglot cannot parse is ``extra``.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return "extra"
    nested = 0
    while isinstance(tree, exp.SetOperation):  # A UNION B: A's clauses, B is nested
        nested = 1
        tree = tree.left
    while isinstance(tree, (exp.Subquery, exp.Paren)):
        tree = tree.this
    if not isinstance(tree, exp.Select):
        return "extra"
    comp1, comp2, others = _spider_counts(tree)
    comp2 += nested
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and comp2 == 0)
        or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
        or (comp1 <= 1 and others == 0 and comp2 <= 1)
    ):
        return "hard"
    return "extra"


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], int]:
    """Leaf conditions of an AND/OR tree and the number of ORs joining them."""
    if node is None:
        return [], 0
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.And, exp.Or)):
        left, left_ors = _conditions(node.left)
        right, right_ors = _conditions(node.right)
        return left + right, left_ors + right_ors + isinstance(node, exp.Or)
    return [node], 0


def _own_nodes(node: exp.Expression, kind) -> list[exp.Expression]:
    """Nodes of ``kind`` under ``node`` that are not inside a nested query."""
    found = []
    for child in node.iter_expressions():
        if isinstance(child, (exp.Select, exp.Subquery)):
            continue
        if isinstance(child, kind):
            found.append(child)
        found.extend(_own_nodes(child, kind))
    return found


def _direct_queries(node: exp.Expression) -> int:
    """Sub-queries directly under a condition (not counting ones nested inside those)."""
    count = 0
    for child in node.iter_expressions():
        if isinstance(child, (exp.Select, exp.Subquery, exp.SetOperation)):
            count += 1
        else:
            count += _direct_queries(child)
    return count


def _spider_counts(select: exp.Select) -> tuple[int, int, int]:
    where = select.args.get("where")
    having = select.args.get("having")
    group = select.args.get("group")
    order = select.args.get("order")
    where_conds, where_ors = _conditions(where.this if where else None)
    having_conds, having_ors = _conditions(having.this if having else None)

    from_ = select.args.get("from_") or select.args.get("from")
    table_units = (1 if from_ else 0) + len(select.args.get("joins") or [])

    def is_like(cond):
        inner = cond.this if isinstance(cond, exp.Not) else cond
        return isinstance(inner, (exp.Like, exp.ILike))

    comp1 = sum(bool(x) for x in (where, group, order, select.args.get("limit")))
    comp1 += max(table_units - 1, 0)
    comp1 += where_ors + having_ors
    comp1 += sum(is_like(c) for c in where_conds + having_conds)

    comp2 = sum(_direct_queries(c) for c in where_conds + having_conds)
    sources = [from_.this] if from_ else []
    sources += [j.this for j in select.args.get("joins") or []]
    comp2 += sum(isinstance(s, (exp.Subquery, exp.Select)) for s in sources)

    def has_agg(node):
        return bool(_own_nodes(node, exp.AggFunc)) or isinstance(node, exp.AggFunc)

    # Spider's count_agg quirks: a WHERE condition "counts" when negated (NOT IN / NOT LIKE),
    # and each AND/OR joining HAVING conditions counts too.
    aggs = sum(has_agg(e) for e in select.expressions)
    aggs += sum(isinstance(c, exp.Not) for c in where_conds)
    aggs += sum(has_agg(e) for e in (group.expressions if group else []))
    if order:
        aggs += sum(len(_own_nodes(o, exp.AggFunc)) for o in order.expressions)
    aggs += max(len(having_conds) - 1, 0) + sum(isinstance(c, exp.Not) for c in having_conds)
    others = int(aggs > 1)
    others += int(len(select.expressions) > 1)
    others += int(len(where_conds) > 1)
    others += int(bool(group) and len(group.expressions) > 1)
    return comp1, comp2, others


# --------------------------------------------------------------------------------------------
# sql-create-context
# --------------------------------------------------------------------------------------------


def load_create_context(source, work_dir: Path, *, seed: int = 0, on_missing_db: str = "error") -> LoadedSource:
    path = Path(source.path)
    if path.is_dir():
        raise DataFileError(f"{path}: a create_context source is one .json or .jsonl file")
    records = (
        list(enumerate(iter_jsonl(path), start=1)) if path.suffix == ".jsonl"
        else list(enumerate(_records(path)))
    )
    where = "line" if path.suffix == ".jsonl" else "record"
    split = _split_of_file(path)
    limit = getattr(source, "limit", None)
    if limit and len(records) > limit:
        # sample before materializing: the full dataset has ~78k mostly distinct contexts
        chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
        records = [records[i] for i in chosen]
    result = LoadedSource()
    result.report["files"].append(str(path))
    made: dict[str, Path | None] = {}
    for number, record in records:
        context = _field(record, ("context",), path, number)
        key = hashlib.sha1(context.strip().encode()).hexdigest()[:12]
        if key not in made:
            made[key] = materialize_context(context, work_dir / "databases", f"ctx_{key}")
        db_path = made[key]
        if db_path is None:
            result.report["skipped"].append(f"{path}: {where} {number}: its CREATE TABLE context does not run")
            continue
        result[split].append(
            Example(
                question_id=f"ctx-{path.stem}-{number}",
                db_id=f"ctx_{key}",
                db_path=str(db_path),
                question=_field(record, ("question",), path, number),
                sql=_field(record, ("answer", "sql", "query"), path, number),
                source="create_context",
                # the context has no rows: a query that runs returns nothing, so an execution
                # match says little; reward and evaluation code can skip these
                extra={"empty_tables": True},
            )
        )
    result.report["databases_created"] = sum(1 for p in made.values() if p is not None)
    return result


def _is_plain_create_table(statement: exp.Expression) -> bool:
    return (
        isinstance(statement, exp.Create)
        and str(statement.args.get("kind", "")).upper() == "TABLE"
        and statement.args.get("expression") is None  # no CREATE TABLE ... AS SELECT
    )


def materialize_context(context: str, root: Path, db_id: str) -> Path | None:
    """Create ``root/<db_id>/<db_id>.sqlite`` from CREATE TABLE statements (once; atomic).

    Returns None when the statements do not run in SQLite. Each statement is checked by sqlglot
    to be a plain ``CREATE TABLE`` with column definitions (no ``AS SELECT``, views, triggers
    or indexes), so dataset text can never smuggle in other statements or a query that runs
    forever; a time limit guards the execution too.
    """
    target = root / db_id / f"{db_id}.sqlite"
    if target.is_file():
        return target
    try:
        statements = [s for s in sqlglot.parse(context, read="sqlite") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return None
    if not statements or not all(_is_plain_create_table(s) for s in statements):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".sqlite.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        deadline = time.monotonic() + 10.0
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            for statement in statements:
                conn.execute(statement.sql(dialect="sqlite"))
            conn.commit()
        finally:
            conn.close()
    except sqlite3.Error:
        tmp.unlink(missing_ok=True)
        return None
    tmp.replace(target)
    return target


# --------------------------------------------------------------------------------------------
# JSONL of Example records, and the bundled benchmark
# --------------------------------------------------------------------------------------------


def load_jsonl(source, work_dir: Path, *, seed: int = 0, on_missing_db: str = "error") -> LoadedSource:
    path = Path(source.path)
    files = [path] if path.is_file() else [path / f"{s}.jsonl" for s in SPLITS if (path / f"{s}.jsonl").is_file()]
    if not files:
        raise DataFileError(f"{path}: no train.jsonl or dev.jsonl found")
    result = LoadedSource()
    for file in files:
        result.report["files"].append(str(file))
        for number, example in enumerate(read_examples(file), start=1):
            result[_split_of_file(file)].append(
                check_database(example, on_missing_db, f"{file}: line {number}")
            )
    return result


def load_bundled(source, work_dir: Path, *, seed: int = 0, on_missing_db: str = "error") -> LoadedSource:
    from .bundled import build_bundled

    bench = build_bundled(Path(work_dir) / "databases", seed=seed)
    result = LoadedSource(train=bench.train, dev=bench.dev)
    result.report["db_root"] = str(bench.db_root)
    for split in SPLITS:
        for example in result[split]:
            check_database(example, on_missing_db, "bundled benchmark")
    return result


_LOADERS: dict[str, Callable[..., LoadedSource]] = {
    "bundled": load_bundled,
    "spider": load_spider,
    "bird": load_bird,
    "create_context": load_create_context,
    "jsonl": load_jsonl,
}
