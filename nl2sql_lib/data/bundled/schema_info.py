"""What the question generator knows about a database: tables, column roles, keys, phrasing.

The structure (tables, columns, types, primary and foreign keys) always comes from SQLite's
pragmas, so the same code serves the bundled databases and a user's own file. Column *roles*
(label, category, numeric, date, text, key) are guessed from types and data; the bundled domains
then overlay hand-written annotations (nicer nouns and phrases, thresholds with BIRD-style
evidence, codes that need explaining) through :class:`Annotation`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field

_PLAIN_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQL_WORDS = {
    "select", "from", "where", "group", "order", "by", "limit", "table", "index", "join", "on",
    "as", "and", "or", "not", "in", "is", "null", "case", "when", "then", "else", "end", "union",
    "except", "intersect", "having", "distinct", "values", "default", "check", "primary", "key",
    "references", "foreign", "unique", "to", "all", "date", "time", "transaction", "create",
}
_LABEL_NAMES = ("name", "title", "full_name", "username", "player_name", "product_name")
_DATE_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def qi(name: str) -> str:
    """Quote an identifier only when it needs it (keeps gold SQL readable)."""
    if _PLAIN_IDENT.match(name) and name.lower() not in _SQL_WORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def lit(value) -> str:
    """An SQL literal for a value taken from the database."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        return repr(round(value, 4))
    return str(value)


def humanize(name: str) -> str:
    """'order_date' -> 'order date'; 'UnitPrice' -> 'unit price'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")
    return re.sub(r"\s+", " ", spaced).strip().lower()


# Plurals in "-ies" whose singular ends in "-ie" (not "-y" like categories -> category), and
# nouns whose singular and plural are the same word.
_IE_PLURALS = ("movies", "cookies", "rookies", "bookies", "calories", "zombies", "brownies",
               "selfies", "hippies", "goalies", "smoothies", "hoodies", "pixies", "genies",
               "aunties", "sorties", "prairies", "freebies", "newbies")
_SAME_PLURAL = ("species", "series")


def singularize(noun: str) -> str:
    """'categories' -> 'category', 'movies' -> 'movie', 'sales' -> 'sale' (the last word of a
    phrase: 'user movies' -> 'user movie')."""
    last = noun.rsplit(" ", 1)[-1].lower()
    if last in _SAME_PLURAL:
        return noun
    if last in _IE_PLURALS:
        return noun[:-1]
    if noun.endswith("ies") and len(last) > 4:
        return noun[:-3] + "y"
    if noun.endswith(("sses", "xes", "ches", "shes")):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun[:-1]
    return noun


def pluralize(noun: str) -> str:
    if noun.rsplit(" ", 1)[-1].lower() in _SAME_PLURAL:
        return noun
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


@dataclass
class Column:
    name: str
    kind: str  # key | label | category | numeric | date | text
    phrase: str
    # (adjective, operator, value): "expensive" products -> evidence "expensive refers to price > 500"
    thresholds: tuple[tuple[str, str, float], ...] = ()
    # stored code -> words, e.g. {"F": "female"}; the question says the words, evidence explains
    value_words: dict = field(default_factory=dict)
    # phrasings used when the value is one of value_words: "who are {v}" -> "who are female"
    word_forms: tuple[str, ...] = ("that are {v}",)
    # phrasings of a filter on this column, with {v} for the value: "from {v}", "based in {v}"
    forms: tuple[str, ...] = ()
    unit: str = ""

    @property
    def additive(self) -> bool:
        """Whether SUM makes sense (not for years, minutes, scores, ratings, numbers, rates)."""
        name = self.name.lower()
        return not any(word in name for word in (
            "year", "minute", "score", "rating", "number", "bpm", "rate", "gpa", "experience",
            "age", "floor", "runway", "level", "credit"))

    def hint(self) -> str:
        """BIRD-style evidence mapping the question's wording to the column, when they differ."""
        return f"{self.phrase} refers to {self.name}" if self.phrase != humanize(self.name) else ""


@dataclass
class ForeignKey:
    child: str
    column: str
    parent: str
    parent_column: str
    # "{child plural} {verb} {parent singular} {value}": "orders placed by customer Ann Lee"
    verb: str = "linked to"


@dataclass
class Table:
    name: str
    singular: str
    plurals: tuple[str, ...]
    columns: dict[str, Column]
    pk: str | None
    rows: int
    label: str | None = None
    # False when the label is not the row itself (sales labelled by buyer_name): questions then
    # say "the buyer names of sales ...", never "which sales ...?"
    label_names_row: bool = True

    def of_kind(self, kind: str) -> list[Column]:
        return [c for c in self.columns.values() if c.kind == kind]


@dataclass
class Annotation:
    """Hand-written hints for one table (bundled domains); every field is optional."""

    singular: str | None = None
    plurals: tuple[str, ...] = ()
    label: str | None = None
    label_names_row: bool = True  # see Table.label_names_row
    columns: dict[str, dict] = field(default_factory=dict)  # column -> Column field overrides
    verbs: dict[str, str] = field(default_factory=dict)  # fk column -> verb phrase


@dataclass
class Measure:
    """A derived quantity over a join, written by hand for a bundled domain (BIRD-style
    "revenue = quantity * price" knowledge). ``sql`` is the FROM clause with aliases; ``groups``
    and ``filters`` are (SQL, phrase) pairs the questions can break down or restrict by."""

    name: str
    expr: str
    sql: str
    evidence: str
    groups: tuple[tuple[str, str], ...] = ()
    filters: tuple[tuple[str, str], ...] = ()
    per: str = ""  # what one row is ("order line"); AVG questions say "average ... per <per>"


@dataclass
class SchemaInfo:
    tables: dict[str, Table]
    fks: list[ForeignKey]
    measures: list[Measure] = field(default_factory=list)


def _guess_kind(conn: sqlite3.Connection, table: str, col: str, decl: str, rows: int,
                is_key: bool) -> str:
    if is_key:
        return "key"
    lowered = col.lower()
    decl = decl.upper()
    sample = [r[0] for r in conn.execute(
        f"SELECT {qi(col)} FROM {qi(table)} WHERE {qi(col)} IS NOT NULL LIMIT 200")]
    if not sample:
        return "text"
    distinct = conn.execute(
        f"SELECT COUNT(DISTINCT {qi(col)}) FROM (SELECT {qi(col)} FROM {qi(table)} LIMIT 5000)"
    ).fetchone()[0]
    if all(isinstance(v, str) and _DATE_VALUE.match(v) for v in sample):
        return "date"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sample):
        if lowered == "id" or lowered.endswith(("_id", "id")) or any(
                word in lowered for word in ("phone", "zip", "postal", "code", "number")):
            return "key"  # identifiers stored as numbers: no averages of phone numbers
        # few distinct numbers (flags, ratings 1-5) read better as categories
        return "category" if distinct <= 2 else "numeric"
    if any(t in decl for t in ("INT", "REAL", "FLOA", "DOUB", "NUM", "DEC")):
        return "numeric"
    if distinct <= 40 and distinct < 0.5 * max(rows, 1):
        return "category"
    return "text"


def introspect(conn: sqlite3.Connection, annotations: dict[str, Annotation] | None = None
               ) -> SchemaInfo:
    """Read tables, columns, keys and roles of the database behind ``conn``."""
    annotations = annotations or {}
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    tables: dict[str, Table] = {}
    fks: list[ForeignKey] = []
    for name in names:
        note = annotations.get(name, Annotation())
        info = conn.execute(f"PRAGMA table_info({qi(name)})").fetchall()
        fk_rows = conn.execute(f"PRAGMA foreign_key_list({qi(name)})").fetchall()
        fk_cols = {r[3] for r in fk_rows}
        pks = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        rows = conn.execute(f"SELECT COUNT(*) FROM {qi(name)}").fetchone()[0]
        columns: dict[str, Column] = {}
        for _cid, col, decl, _notnull, _default, pk in info:
            kind = _guess_kind(conn, name, col, decl or "", rows, bool(pk) or col in fk_cols)
            column = Column(col, kind, humanize(col))
            for key, value in note.columns.get(col, {}).items():
                setattr(column, key, value)
            columns[col] = column
        label = note.label or _guess_label(columns)
        if label:
            columns[label].kind = "label"
        noun = humanize(name)
        singular = note.singular or singularize(noun)
        plurals = note.plurals or (noun if noun != singular else pluralize(noun),)
        tables[name] = Table(name, singular, tuple(plurals), columns,
                             pks[0] if len(pks) == 1 else None, rows, label, note.label_names_row)
        for r in fk_rows:
            parent_col = r[4]
            if parent_col is None:  # "REFERENCES parent" without a column means its primary key
                parent_info = conn.execute(f"PRAGMA table_info({qi(r[2])})").fetchall()
                parent_col = next((p[1] for p in parent_info if p[5]), None)
            if parent_col is None or r[2] not in names:
                continue
            fks.append(ForeignKey(name, r[3], r[2], parent_col,
                                  note.verbs.get(r[3], "linked to")))
    return SchemaInfo(tables, [fk for fk in fks if fk.parent in tables])


def _guess_label(columns: dict[str, Column]) -> str | None:
    for preferred in _LABEL_NAMES:
        for col in columns.values():
            if col.name.lower() == preferred and col.kind in ("text", "category"):
                return col.name
    for col in columns.values():
        if col.kind == "text" and (col.name.lower().endswith("name") or "title" in col.name.lower()):
            return col.name
    return None
