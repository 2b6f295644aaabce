"""Read a SQLite database's schema and render it as prompt text.

    schema = read_schema("dev_databases/shop/shop.sqlite")          # cached per file
    text = render_schema(schema, max_tokens=300)                     # CREATE TABLE text
    text = render_schema(schema, style="compact")                    # table(col, ...)
    text = schema_text_for(example, cfg.schema_render)               # what the stages call

Introspection opens the file read-only (``mode=ro`` URI), so a missing path raises
:class:`MissingDatabase` naming it instead of leaving an empty database behind. Sample values
come from a bounded scan (``LIMIT`` inside a sub-select), so a million-row table costs no more
than a small one.

Rendering follows a token budget by dropping the least-needed detail first: column
descriptions, then all but one sample value, then sample values, then column types and keys
(compact style), then foreign keys, and only then whole tables (the last ones), with a comment
saying how many were left out.
"""

from __future__ import annotations

import csv
import functools
import math
import re
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

try:  # the SQL helper's error type, so that callers catch one class for both modules
    from ..sql.execute import MissingDatabase
except ImportError:  # pragma: no cover - before nl2sql_lib.sql lands

    class MissingDatabase(FileNotFoundError):
        """A database file does not exist; the message names the path."""


# Rows scanned per column to find distinct sample values: bounds the cost on huge tables.
_SAMPLE_SCAN_ROWS = 1000

TokenCounter = Callable[[str], int]


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: three characters per token.

    Schema and SQL text is denser than prose: SmolLM2's tokenizer gives 2.5-3.5 characters per
    token on rendered schemas (3.2 on average over the bundled databases), so dividing by three
    errs on the long side and a budget measured this way holds for the real tokenizer too. This
    is the counter every stage uses by default, which keeps prompts identical from training to
    evaluation; pass a tokenizer's counter only where all stages do the same.
    """
    return math.ceil(len(text) / 3)


@dataclass(frozen=True)
class Column:
    name: str
    type: str = ""
    primary_key: bool = False
    samples: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    description: str = ""

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.primary_key)

    def column(self, name: str) -> Column | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)


@dataclass(frozen=True)
class DatabaseSchema:
    db_id: str
    path: str
    tables: tuple[Table, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table | None:
        lowered = name.lower()
        return next((t for t in self.tables if t.name.lower() == lowered), None)

    @property
    def n_columns(self) -> int:
        return sum(len(t.columns) for t in self.tables)

    @property
    def n_foreign_keys(self) -> int:
        return sum(len(t.foreign_keys) for t in self.tables)

    def columns_by_name(self) -> dict[str, list[str]]:
        """Lower-cased column name -> the tables (their spelling) that have it."""
        index: dict[str, list[str]] = {}
        for table in self.tables:
            for column in table.columns:
                index.setdefault(column.name.lower(), []).append(table.name)
        return index


# --------------------------------------------------------------------------------------------
# Introspection
# --------------------------------------------------------------------------------------------


def connect_readonly(db_path: str | Path) -> sqlite3.Connection:
    """Open an existing database read-only; a missing file raises and is never created."""
    path = Path(db_path)
    if not path.is_file():
        raise MissingDatabase(f"database file not found: {path} (nothing was created)")
    # mode=ro makes SQLite itself refuse to create or write the file.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)


def read_schema(
    db_path: str | Path,
    *,
    sample_values: int = 3,
    max_value_chars: int = 40,
    descriptions_dir: str | Path | None = None,
) -> DatabaseSchema:
    """The tables, columns, types, keys, sample values and descriptions of a database.

    Cached per (file, modification time, options). ``descriptions_dir`` holds BIRD's
    ``<table>.csv`` files; by default the ``database_description`` folder next to the file is
    used when it exists.
    """
    path = Path(db_path)
    if not path.is_file():
        raise MissingDatabase(f"database file not found: {path} (nothing was created)")
    if descriptions_dir is None and (path.parent / "database_description").is_dir():
        descriptions_dir = path.parent / "database_description"
    return _read_schema_cached(
        str(path.resolve()), path.stat().st_mtime_ns, sample_values, max_value_chars,
        str(descriptions_dir) if descriptions_dir else None,
    )


@functools.lru_cache(maxsize=256)
def _read_schema_cached(
    path: str, _mtime: int, sample_values: int, max_value_chars: int, descriptions_dir: str | None
) -> DatabaseSchema:
    descriptions = read_descriptions(descriptions_dir) if descriptions_dir else {}
    conn = connect_readonly(path)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY rowid"
            )
        ]
        tables = tuple(
            _read_table(conn, name, sample_values, max_value_chars, descriptions.get(name.lower(), {}))
            for name in names
        )
    finally:
        conn.close()
    return DatabaseSchema(db_id=Path(path).stem, path=path, tables=tables)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _read_table(
    conn: sqlite3.Connection, name: str, sample_values: int, max_value_chars: int,
    descriptions: dict[str, str],
) -> Table:
    info = conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
    columns = []
    for _cid, col_name, col_type, _notnull, _default, pk in info:
        samples = _samples(conn, name, col_name, sample_values, max_value_chars) if sample_values else ()
        columns.append(
            Column(
                name=col_name, type=(col_type or "").upper(), primary_key=bool(pk),
                samples=samples, description=descriptions.get(col_name.lower(), ""),
            )
        )
    return Table(name=name, columns=tuple(columns), foreign_keys=_foreign_keys(conn, name, columns))


def _foreign_keys(conn: sqlite3.Connection, table: str, columns: list[Column]) -> tuple[ForeignKey, ...]:
    grouped: dict[int, list[tuple]] = {}
    for row in conn.execute(f"PRAGMA foreign_key_list({_quote(table)})").fetchall():
        grouped.setdefault(row[0], []).append(row)
    keys = []
    for rows in grouped.values():
        rows.sort(key=lambda r: r[1])
        ref_table = rows[0][2]
        ref_columns = tuple(r[4] or "" for r in rows)
        if not all(ref_columns):  # "REFERENCES t" without columns means t's primary key
            ref_pk = [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(ref_table)})") if r[5]]
            ref_columns = tuple(ref_pk) if len(ref_pk) == len(rows) else ref_columns
        keys.append(ForeignKey(table, tuple(r[3] for r in rows), ref_table, ref_columns))
    return tuple(keys)


def _samples(conn: sqlite3.Connection, table: str, column: str, k: int, max_chars: int) -> tuple[str, ...]:
    """Up to ``k`` distinct non-null values among the first rows of a column.

    NULLs are dropped after the bounded scan, not before it: a mostly-NULL column would
    otherwise make SQLite read the whole table looking for values.
    """
    sql = (
        f"SELECT DISTINCT v FROM (SELECT {_quote(column)} AS v FROM {_quote(table)} "
        f"LIMIT {_SAMPLE_SCAN_ROWS}) WHERE v IS NOT NULL LIMIT {int(k)}"
    )
    try:
        rows = conn.execute(sql).fetchall()
    except sqlite3.Error:  # e.g. a view or virtual table the module cannot read
        return ()
    values = []
    for (value,) in rows:
        if isinstance(value, (bytes, memoryview)):
            continue
        text = str(value).replace("\n", " ")
        if len(text) > max_chars:
            text = text[: max_chars - 3] + "..."
        values.append(text)
    return tuple(values)


def read_descriptions(folder: str | Path) -> dict[str, dict[str, str]]:
    """BIRD's ``database_description/<table>.csv`` files: {table: {column: text}}, lower-cased keys.

    The text joins the expanded column name (when it says more than the name), the column
    description and the value description. BIRD's files are not all UTF-8, so Latin-1 is the
    fallback.
    """
    result: dict[str, dict[str, str]] = {}
    for csv_path in sorted(Path(folder).glob("*.csv")):
        rows = _read_csv_rows(csv_path)
        columns: dict[str, str] = {}
        for row in rows:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            original = row.get("original_column_name", "")
            if not original:
                continue
            parts = []
            expanded = row.get("column_name", "")
            if expanded and expanded.lower().replace(" ", "_") != original.lower():
                parts.append(expanded)
            for key in ("column_description", "value_description"):
                text = " ".join(row.get(key, "").split())
                if text and text.lower() not in (p.lower() for p in parts) and text.lower() != original.lower():
                    parts.append(text)
            if parts:
                columns[original.lower()] = "; ".join(parts)
        result[csv_path.stem.lower()] = columns
    return result


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            with path.open(encoding=encoding, newline="") as handle:
                return list(csv.DictReader(handle))
        except UnicodeDecodeError:
            continue
    return []


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def prune_schema(schema: DatabaseSchema, keep: dict[str, Iterable[str]] | None) -> DatabaseSchema:
    """Only the tables (and columns) in ``keep`` = {"tables": [...], "columns": ["t.c", ...]}.

    Tables named by a column are kept too. When columns are given, a kept table keeps those
    columns plus its primary key and the foreign-key columns that join it to another kept table,
    so the pruned schema still says how to join. Names match case-insensitively; unknown names
    are ignored (a linking model may invent some).
    """
    if not keep:
        return schema
    tables = {t.lower() for t in keep.get("tables", [])}
    wanted_columns: dict[str, set[str]] = {}
    for item in keep.get("columns", []):
        if "." not in item:
            continue
        table, column = item.lower().split(".", 1)
        tables.add(table)
        wanted_columns.setdefault(table, set()).add(column)
    kept = []
    for table in schema.tables:
        key = table.name.lower()
        if key not in tables:
            continue
        fks = tuple(fk for fk in table.foreign_keys if fk.ref_table.lower() in tables)
        if key in wanted_columns:
            needed = set(wanted_columns[key])
            needed |= {c.lower() for c in table.primary_key}
            needed |= {c.lower() for fk in fks for c in fk.columns}
            # columns other kept tables point at
            for other in schema.tables:
                if other.name.lower() in tables:
                    for fk in other.foreign_keys:
                        if fk.ref_table.lower() == key:
                            needed |= {c.lower() for c in fk.ref_columns}
            # a table whose linked names all missed keeps every column rather than none
            columns = tuple(c for c in table.columns if c.name.lower() in needed) or table.columns
        else:
            columns = table.columns
        kept.append(replace(table, columns=columns, foreign_keys=fks))
    return replace(schema, tables=tuple(kept))


def _render_value(value: str) -> str:
    return value if _looks_numeric(value) else "'" + value.replace("'", "''") + "'"


def _looks_numeric(value: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", value))


def _create_table(table: Table, *, descriptions: bool, samples: int) -> str:
    single_pk = len(table.primary_key) == 1
    lines = []
    for column in table.columns:
        line = f"  {_ident(column.name)}"
        if column.type:
            line += f" {column.type}"
        if column.primary_key and single_pk:
            line += " PRIMARY KEY"
        notes = []
        if descriptions and column.description:
            notes.append(column.description)
        if samples and column.samples:
            notes.append("e.g. " + ", ".join(_render_value(v) for v in column.samples[:samples]))
        lines.append((line, "; ".join(notes)))
    if len(table.primary_key) > 1:
        lines.append((f"  PRIMARY KEY ({', '.join(_ident(c) for c in table.primary_key)})", ""))
    for fk in table.foreign_keys:
        lines.append(
            (
                f"  FOREIGN KEY ({', '.join(_ident(c) for c in fk.columns)}) REFERENCES "
                f"{_ident(fk.ref_table)}({', '.join(_ident(c) for c in fk.ref_columns)})",
                "",
            )
        )
    body = []
    for index, (text, note) in enumerate(lines):
        comma = "," if index < len(lines) - 1 else ""
        body.append(f"{text}{comma}" + (f" -- {note}" if note else ""))
    return f"CREATE TABLE {_ident(table.name)} (\n" + "\n".join(body) + "\n);"


def _compact_table(table: Table) -> str:
    return f"{_ident(table.name)}({', '.join(_ident(c.name) for c in table.columns)})"


def _compact_fks(tables: Iterable[Table]) -> str:
    joins = [
        f"{_ident(fk.table)}.{_ident(a)} = {_ident(fk.ref_table)}.{_ident(b)}"
        for t in tables
        for fk in t.foreign_keys
        for a, b in zip(fk.columns, fk.ref_columns)
    ]
    return ("Foreign keys: " + ", ".join(joins)) if joins else ""


def _ident(name: str) -> str:
    """Quote a name only when SQL needs it (spaces, punctuation, leading digit)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return "`" + name.replace("`", "``") + "`"


def _render_level(tables: tuple[Table, ...], level: dict) -> str:
    if level["style"] == "compact":
        parts = [_compact_table(t) for t in tables]
        if level["fks"]:
            fks = _compact_fks(tables)
            if fks:
                parts.append(fks)
        return "\n".join(parts)
    return "\n\n".join(
        _create_table(t, descriptions=level["descriptions"], samples=level["samples"]) for t in tables
    )


def render_schema(
    schema: DatabaseSchema,
    *,
    style: str = "create_table",
    include_descriptions: bool = True,
    max_tokens: int | None = None,
    count_tokens: TokenCounter | None = None,
    keep: dict[str, Iterable[str]] | None = None,
    sample_values: int | None = None,
) -> str:
    """The schema as prompt text, within ``max_tokens`` when given.

    ``style``: ``create_table`` (types, keys, sample values and descriptions as comments) or
    ``compact`` (``table(col, ...)`` lines plus one line of foreign keys). ``count_tokens``
    measures text (default: :func:`approx_tokens`). ``sample_values`` caps the values
    shown per column (default: all that ``read_schema`` collected).
    """
    if style not in ("create_table", "compact"):
        raise ValueError(f"schema style must be 'create_table' or 'compact', got {style!r}")
    count = count_tokens or approx_tokens
    tables = prune_schema(schema, keep).tables
    most_samples = max((len(c.samples) for t in tables for c in t.columns), default=0)
    samples = most_samples if sample_values is None else min(sample_values, most_samples)
    levels = _budget_levels(style, include_descriptions, samples)
    text = _render_level(tables, levels[0])
    if max_tokens is None or count(text) <= max_tokens:
        return text
    for level in levels[1:]:
        text = _render_level(tables, level)
        if count(text) <= max_tokens:
            return text
    return _drop_tables(tables, levels[-1], max_tokens, count)


def _budget_levels(style: str, descriptions: bool, samples: int) -> list[dict]:
    """From the richest rendering to the leanest, each dropping the least-needed detail."""
    levels = []
    if style == "create_table":
        levels.append({"style": style, "descriptions": descriptions, "samples": samples})
        if descriptions:
            levels.append({"style": style, "descriptions": False, "samples": samples})
        if samples > 1:
            levels.append({"style": style, "descriptions": False, "samples": 1})
        if samples > 0:
            levels.append({"style": style, "descriptions": False, "samples": 0})
    levels.append({"style": "compact", "fks": True})
    levels.append({"style": "compact", "fks": False})
    return levels


def _drop_tables(tables: tuple[Table, ...], level: dict, max_tokens: int, count: TokenCounter) -> str:
    """The leanest rendering of as many leading tables as fit, noting how many were dropped."""
    for n in range(len(tables) - 1, 0, -1):
        note = f"-- ... {len(tables) - n} more table(s) not shown"
        text = _render_level(tables[:n], level) + "\n" + note
        if count(text) <= max_tokens:
            return text
    return _render_level(tables[:1], level)


def schema_text_for(example, schema_params=None, count_tokens: TokenCounter | None = None, *, keep=None) -> str:
    """The rendered schema of ``example``'s database under a :class:`SchemaParams`.

    ``keep`` prunes to linked tables/columns (see :func:`prune_schema`). Reading is cached per
    database file, so calling this for every example is cheap.
    """
    if schema_params is None:
        from ..config import SchemaParams

        schema_params = SchemaParams()
    schema = read_schema(
        example.db_path,
        sample_values=schema_params.sample_values,
        max_value_chars=schema_params.max_value_chars,
    )
    return render_schema(
        schema,
        style=schema_params.style,
        include_descriptions=schema_params.include_descriptions,
        max_tokens=schema_params.max_tokens,
        count_tokens=count_tokens,
        keep=keep,
    )
