"""Schema-linking labels: the tables and columns a gold SQL query uses, found by sqlglot.

    schema_links("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON ...", schema)
    -> {"tables": ["concert", "singer"], "columns": ["concert.singer_id", "singer.name", ...]}

Aliases (``T1``), sub-queries and CTEs are resolved through sqlglot's scopes; an unqualified
column is given to the table of its scope that has it. Names use the schema's own spelling.
A double-quoted name that is no column (Spider writes string literals as ``"text"``, which
SQLite accepts) is ignored, as SQLite itself would treat it as a string.
"""

from __future__ import annotations

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
