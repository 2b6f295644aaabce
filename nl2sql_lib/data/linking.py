"""Schema-linking labels: the tables and columns a gold SQL query uses, found by sqlglot.

    schema_links("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON ...", schema)
    -> {"tables": ["concert", "singer"], "columns": ["concert.singer_id", "singer.name", ...]}

Aliases (``T1``), sub-queries and CTEs are resolved through sqlglot's scopes; an unqualified
column is given to the table of its scope that has it. Names use the schema's own spelling.
A double-quoted name that is no column (Spider writes string literals as ``"text"``, which
SQLite accepts) is ignored, as SQLite itself would treat it as a string.

The helpers of a schema-linking model live here too (02_sft trains and prunes with one, 06_eval's
linked systems ask one): :func:`gold_links` (its labels), :func:`linking_prompts` and
:func:`predict_links` (asking it, ``schema`` a :class:`~nl2sql_lib.config.SchemaParams`),
:func:`parse_links` (its JSON answer) and :func:`score_linking` (precision and recall).
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from .schema import DatabaseSchema


def _parse(sql: str) -> exp.Expression | None:
    try:
        return sqlglot.parse_one(sql, read="sqlite")
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, ValueError):
        return None


def schema_links(sql: str, schema: DatabaseSchema) -> dict[str, list[str]]:
    """{"tables": [...], "columns": ["table.column", ...]} used by ``sql`` (sorted, unique).

    A query sqlglot cannot parse gives empty lists rather than an error: labels are a training
    signal, not a gate.
    """
    tree = _parse(sql)
    tables: set[str] = set()
    columns: set[str] = set()
    if tree is None:
        return {"tables": [], "columns": []}
    try:
        scopes = traverse_scope(tree)
    except Exception:  # sqlglot's scope builder rejects a few odd queries; fall back below
        scopes = []
    if not scopes:
        return _links_without_scopes(tree, schema)
    for scope in scopes:
        # alias (or name) -> real table name, for the tables this scope reads directly
        sources: dict[str, str] = {}
        for alias, source in scope.sources.items():
            if isinstance(source, exp.Table):
                table = schema.table(source.name)
                if table is not None:
                    sources[alias.lower()] = table.name
                    tables.add(table.name)
        for column in scope.columns:
            resolved = _resolve(column, sources, schema)
            if resolved:
                columns.add(resolved)
    return {"tables": sorted(tables), "columns": sorted(columns)}


def _resolve(column: exp.Column, sources: dict[str, str], schema: DatabaseSchema) -> str | None:
    name = column.name
    if not name or name == "*":
        return None
    if column.table:
        table_name = sources.get(column.table.lower())
        if table_name is None:  # a derived table or CTE column: its own scope links it
            return None
        table = schema.table(table_name)
        found = table.column(name) if table else None
        return f"{table.name}.{found.name}" if found else None
    for table_name in sources.values():
        table = schema.table(table_name)
        found = table.column(name) if table else None
        if found:
            return f"{table.name}.{found.name}"
    return None


def _links_without_scopes(tree: exp.Expression, schema: DatabaseSchema) -> dict[str, list[str]]:
    tables = {schema.table(t.name).name for t in tree.find_all(exp.Table) if schema.table(t.name)}
    index = schema.columns_by_name()
    columns = set()
    for column in tree.find_all(exp.Column):
        for table in index.get(column.name.lower(), []):
            if table in tables:
                columns.add(f"{table}.{schema.table(table).column(column.name).name}")
    return {"tables": sorted(tables), "columns": sorted(columns)}


# --------------------------------------------------------------------------------------------
# A schema-linking model: its labels, its prompts, parsing and scoring its answers
# (02_sft trains one and prunes with it; 06_eval's linked systems ask one)
# --------------------------------------------------------------------------------------------


def gold_links(example) -> dict[str, list[str]]:
    """The example's schema-linking labels (01_data's, else derived from the gold SQL)."""
    if example.schema_links:
        return example.schema_links
    from .schema import read_schema

    return schema_links(example.sql, read_schema(example.db_path))


def parse_links(text: str) -> dict[str, list[str]] | None:
    """The ``{"tables": [...], "columns": [...]}`` JSON in a model's answer, or None."""
    match = re.search(r"\{.*\}", text or "", re.DOTALL)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    tables = [str(t) for t in data.get("tables", []) if isinstance(t, (str, int))]
    columns = [str(c) for c in data.get("columns", []) if isinstance(c, (str, int))]
    return {"tables": tables, "columns": columns}


def score_linking(predictions: Sequence[dict | None], golds: Sequence[dict]) -> dict[str, float]:
    """Micro-averaged precision/recall of tables and of ``table.column`` names (case-insensitive).

    An answer that is not valid JSON counts as an empty prediction.
    """
    out: dict[str, float] = {}
    for key in ("tables", "columns"):
        tp = n_pred = n_gold = 0
        for pred, gold in zip(predictions, golds):
            p = {x.lower() for x in (pred or {}).get(key, [])}
            g = {x.lower() for x in gold.get(key, [])}
            tp += len(p & g)
            n_pred += len(p)
            n_gold += len(g)
        singular = key[:-1]
        out[f"{singular}_precision"] = round(tp / n_pred, 4) if n_pred else 0.0
        out[f"{singular}_recall"] = round(tp / n_gold, 4) if n_gold else 0.0
    out["valid_json"] = round(sum(p is not None for p in predictions) / max(1, len(predictions)), 4)
    return out


# New tokens a schema-linking model may write (its JSON of tables and columns). The one value for
# SFT's pruning (predict_links) and 06_eval's linked systems, which also size a vLLM engine by it.
LINKING_MAX_NEW_TOKENS = 128


def linking_prompts(examples: Sequence[Any], schema: Any) -> list[list[dict]]:
    """The chat prompts a schema-linking model is asked (the prompts :func:`predict_links` sends;
    06_eval sizes its vLLM engine with them)."""
    from .prompts import linking_messages
    from .schema import schema_text_for

    return [linking_messages(ex, schema_text_for(ex, schema)) for ex in examples]


def predict_links(generator, examples: Sequence[Any], schema: Any) -> list[dict | None]:
    """A schema-linking model's ``keep`` for each example (None where it gave no usable JSON)."""
    messages = linking_prompts(examples, schema)
    texts = generator.generate(messages, max_new_tokens=LINKING_MAX_NEW_TOKENS, desc="linking")
    keeps = []
    for ex, (text,) in zip(examples, texts):
        links = parse_links(text)
        keeps.append(links if links and _links_match_schema(links, ex) else None)
    return keeps


def _links_match_schema(links: dict, example) -> bool:
    """True when the predicted links name at least one real table (else the prompt would be empty)."""
    from .schema import read_schema

    names = {t.name.lower() for t in read_schema(example.db_path).tables}
    named = {t.lower() for t in links.get("tables", [])} | {c.split(".", 1)[0].lower() for c in links.get("columns", [])}
    return bool(names & named)
