"""Question/SQL pair generation over any SQLite database described by a :class:`SchemaInfo`.

Each *shape* (a function below) picks tables and columns that fit it, draws values from the
actual data, and writes one gold SQL plus a question phrased by a randomly chosen template and
randomly chosen nouns and filter wordings. :func:`generate_pairs` executes every draft and keeps
only those that run and return a non-trivial result, so gold SQL is always valid and mostly
non-empty. Shapes are grouped by difficulty:

- simple: one table - filters, counts, aggregates, order-by-limit, look-ups, distinct values;
- moderate: joins along foreign keys, GROUP BY, HAVING, nested IN subqueries;
- challenging: multi-join with GROUP BY/HAVING, subqueries with aggregates, set operations,
  CASE-based percentages and differences, NOT IN anti-joins.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from .schema_info import Column, ForeignKey, SchemaInfo, Table, lit, pluralize, qi

DIFFICULTY_MIX = {"simple": 0.4, "moderate": 0.4, "challenging": 0.2}


@dataclass
class Draft:
    question: str
    sql: str
    evidence: str
    shape: str = ""
    difficulty: str = ""


@dataclass
class Cond:
    """A filter: ``pre`` goes before the noun ("expensive"), ``post`` after it ("from Paris")."""

    sql: str
    pre: str = ""
    post: str = ""
    evidence: str = ""

    def noun(self, noun: str) -> str:
        return f"{self.pre + ' ' if self.pre else ''}{noun}{' ' + self.post if self.post else ''}"


class Skip(Exception):
    """The shape does not fit this database (or this draw); try another."""


class Ctx:
    """The database, what we know about it, and the random generator for one run."""

    def __init__(self, conn: sqlite3.Connection, schema: SchemaInfo, rng: random.Random):
        self.conn = conn
        self.schema = schema
        self.rng = rng
        self._distinct: dict[tuple[str, str], list] = {}
        self._shared: dict[tuple[str, str], set] = {}
        self._tied: dict[tuple[str, str, str], bool] = {}

    # --- drawing things -------------------------------------------------------------------
    def choice(self, options):
        options = list(options)
        if not options:
            raise Skip
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def values(self, table: str, col: str) -> list:
        key = (table, col)
        if key not in self._distinct:
            # Ordered and capped so draws are deterministic and cheap on big tables.
            self._distinct[key] = [r[0] for r in self.conn.execute(
                f"SELECT DISTINCT {qi(col)} FROM (SELECT {qi(col)} FROM {qi(table)} LIMIT 20000) "
                f"WHERE {qi(col)} IS NOT NULL AND {qi(col)} != '' ORDER BY 1 LIMIT 400")]
        return self._distinct[key]

    def value(self, table: str, col: str):
        return self.choice(self.values(table, col))

    def label_value(self, table: Table):
        """A label value that names one row: 'casting credit Chef Allen' matching 8 rows would
        make 'the role type of casting credit Chef Allen' ambiguous, so such draws are skipped."""
        value = self.value(table.name, table.label)
        key = (table.name, table.label)
        if key not in self._shared:  # checked for the capped candidates only: cheap on big tables
            self._shared[key] = shared_values(self.conn, table.name, table.label,
                                              among=self.values(table.name, table.label))
        if value in self._shared[key]:
            raise Skip
        return value

    def extreme_is_tied(self, table: str, column: str, agg: str) -> bool:
        key = (table, column, agg)
        if key not in self._tied:
            self._tied[key] = extreme_is_tied(self.conn, table, column, agg)
        return self._tied[key]

    def tables(self, *needs: str) -> list[Table]:
        """Tables having every listed column kind ('label', 'numeric', 'category', ...)."""
        return [t for t in self.schema.tables.values() if t.rows and all(
            (t.label if need == "label" else t.of_kind(need)) for need in needs)]

    def noun(self, table: Table, plural: bool = True) -> str:
        if not plural:
            return table.singular
        # not the label's own words ("titles" for books): no "the titles of titles"
        label = _label_words(table) if table.label else None
        return self.choice([p for p in table.plurals if p != label] or table.plurals)

    def say(self, templates: list[str], label_of: Table | None = None, **slots) -> str:
        """One template filled in. ``label_of``: the table whose label the SQL returns; when that
        label is not the row itself (buyer_name of sales), only templates that name it
        ({lw}, {lp}) fit - "List the buyer names of sales ...", not "Which sales ...?"."""
        if label_of is not None and not label_of.label_names_row:
            templates = [t for t in templates if "{lw}" in t or "{lp}" in t]
        text = self.choice(templates).format(**slots)
        text = re.sub(r"\s+([?.,])", r"\1", " ".join(text.split()))
        return text[0].upper() + text[1:]

    # --- filters ---------------------------------------------------------------------------
    def show(self, value) -> str:
        """How a value appears in the question: plain or quoted, as people write them."""
        if isinstance(value, str) and self.chance(0.3):
            return f"'{value}'"
        if isinstance(value, float):
            return format(value, "f").rstrip("0").rstrip(".")
        return str(value)

    def cond(self, table: Table, alias: str = "", kinds=("category", "numeric", "date")) -> Cond:
        makers = {"category": self.category_cond, "numeric": self.numeric_cond,
                  "date": self.date_cond}
        options = [(kind, col) for kind in kinds for col in table.of_kind(kind)]
        kind, col = self.choice(options)
        return makers[kind](table, col, alias)

    def category_cond(self, table: Table, col: Column, alias: str = "") -> Cond:
        value = self.value(table.name, col.name)
        ref = f"{alias}{qi(col.name)}"
        sql = f"{ref} = {lit(value)}"
        if value in col.value_words:
            words = col.value_words[value]
            return Cond(sql, post=self.choice(col.word_forms).format(v=words),
                        evidence=f"{words} refers to {col.name} = {lit(value)}")
        forms = col.forms or ()
        generic = (f"whose {col.phrase} is {{v}}", f"with {col.phrase} {{v}}",
                   f"where the {col.phrase} is {{v}}", f"with {_a(col.phrase)} of {{v}}",
                   f"having {col.phrase} {{v}}")
        form = self.choice(forms) if forms and self.chance(0.6) else self.choice(generic)
        return Cond(sql, post=form.format(v=self.show(value)))

    def numeric_cond(self, table: Table, col: Column, alias: str = "") -> Cond:
        ref = f"{alias}{qi(col.name)}"
        if col.thresholds and self.chance(0.75):
            adjective, op, bound = self.choice(col.thresholds)
            return Cond(f"{ref} {op} {lit(bound)}", pre=adjective,
                        evidence=f"{adjective} refers to {col.name} {op} {lit(bound)}")
        values = self.values(table.name, col.name)
        if len(values) < 4:
            raise Skip
        bound = values[self.rng.randint(len(values) // 4, (3 * len(values)) // 4)]
        unit = f" {col.unit}" if col.unit else ""
        if self.chance(0.5):
            words = self.choice(("above", "greater than", "over", "more than", "exceeding"))
            return Cond(f"{ref} > {lit(bound)}",
                        post=f"with {col.phrase} {words} {self.show(bound)}{unit}")
        words = self.choice(("below", "less than", "under", "lower than"))
        return Cond(f"{ref} < {lit(bound)}", post=f"with {col.phrase} {words} {self.show(bound)}{unit}")

    def date_cond(self, table: Table, col: Column, alias: str = "") -> Cond:
        ref = f"{alias}{qi(col.name)}"
        years = sorted({str(v)[:4] for v in self.values(table.name, col.name)})
        forms = col.forms or (f"with {_a(col.phrase)} in {{v}}", f"whose {col.phrase} falls in {{v}}",
                              f"with {col.phrase} during {{v}}")
        if self.chance(0.7):
            year = self.choice(years)
            sql = f"strftime('%Y', {ref}) = '{year}'"
            # evidence names the bare column, as BIRD's does (no query aliases)
            evidence = f"in {year} refers to strftime('%Y', {col.name}) = '{year}'" \
                if self.chance(0.6) else ""
            return Cond(sql, post=self.choice(forms).format(v=year), evidence=evidence)
        values = self.values(table.name, col.name)
        day = str(values[self.rng.randint(len(values) // 5, (4 * len(values)) // 5)])[:10]
        if self.chance(0.5):
            return Cond(f"{ref} > '{day}'", post=f"with {_a(col.phrase)} after {day}")
        return Cond(f"{ref} < '{day}'", post=f"with {_a(col.phrase)} before {day}")

    def ambiguous(self, fk: ForeignKey) -> bool:
        """A self-reference, or one of several keys to the same parent (flights.origin and
        .destination): only questions that say the relation's verb can name such a join."""
        same = [f for f in self.schema.fks if f.child == fk.child and f.parent == fk.parent]
        return fk.child == fk.parent or len(same) > 1

    def fk(self, child_label: bool = False, parent_label: bool = True,
           child_kinds: tuple[str, ...] = (), parent_kinds: tuple[str, ...] = (),
           uses_verb: bool = False) -> ForeignKey:
        options = []
        for fk in self.schema.fks:
            child, parent = self.schema.tables[fk.child], self.schema.tables[fk.parent]
            if not child.rows or not parent.rows:
                continue
            if not uses_verb and self.ambiguous(fk):
                continue
            if child_label and not child.label or parent_label and not parent.label:
                continue
            if any(not child.of_kind(k) for k in child_kinds):
                continue
            if any(not parent.of_kind(k) for k in parent_kinds):
                continue
            options.append(fk)
        return self.choice(options)

    def tab(self, name: str) -> Table:
        return self.schema.tables[name]


def _a(phrase: str) -> str:
    """'an order date', 'a price'."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def shared_values(conn: sqlite3.Connection, table: str, column: str, among: list | None = None) -> set:
    """The values of ``column`` that more than one row of ``table`` holds; with ``among``, only
    those of these candidates (so a million-row table yields at most that many values)."""
    where, args = "", ()
    if among is not None:
        if not among:
            return set()
        where, args = f" WHERE {qi(column)} IN ({', '.join('?' * len(among))})", tuple(among)
    return {r[0] for r in conn.execute(
        f"SELECT {qi(column)} FROM {qi(table)}{where} GROUP BY {qi(column)} HAVING COUNT(*) > 1", args)}


def with_noun(noun: str, words: str) -> str:
    """``noun`` before ``words`` unless ``words`` already starts with it: 'author' + 'Ann Lee' ->
    'author Ann Lee', but 'property' + 'property type' -> 'property type' and 'project' +
    "'Project River'" -> "'Project River'" (no "property property type")."""
    first = words.lstrip("'\"").split(" ", 1)[0].lower()
    return words if first == noun.rsplit(" ", 1)[-1].lower() else f"{noun} {words}"


def _evidence(*conds: Cond | str) -> str:
    parts = [c.evidence if isinstance(c, Cond) else c for c in conds]
    return "; ".join(p for p in parts if p)


def _label_words(table: Table) -> str:
    return pluralize(table.columns[table.label].phrase)


def _on(fk: ForeignKey, child_alias: str = "T1", parent_alias: str = "T2") -> str:
    return f"{child_alias}.{qi(fk.column)} = {parent_alias}.{qi(fk.parent_column)}"


def _key(table: Table, alias: str) -> str:
    return f"{alias}.{qi(table.pk)}" if table.pk else f"{alias}.{qi(table.label)}"


# ================================ simple ==========================================================

def s_count(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables())
    plural = ctx.noun(t)
    if ctx.chance(0.15) or not any(t.of_kind(k) for k in ("category", "numeric", "date")):
        q = ctx.say(["How many {n} are there?", "What is the total number of {n}?",
                     "Count all {n}.", "How many {n} does the database hold?"], n=plural)
        return Draft(q, f"SELECT COUNT(*) FROM {qi(t.name)}", "")
    c = ctx.cond(t)
    q = ctx.say(["How many {np} are there?", "Count the {np}.", "What is the number of {np}?",
                 "Tell me how many {np} there are.", "How many {np} exist?",
                 "Find the total count of {np}.", "What's the count of {np}?"], np=c.noun(plural))
    return Draft(q, f"SELECT COUNT(*) FROM {qi(t.name)} WHERE {c.sql}", _evidence(c))


def s_list(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("label"))
    c = ctx.cond(t)
    q = ctx.say(["List the {lw} of {np}.", "What are the {lw} of the {np}?",
                 "Show the {lw} of all {np}.", "Name the {np}.", "Give me the {lw} of {np}.",
                 "Which {np} are there? List their {lw}.", "Find all {np}.",
                 "Please list {np}.", "Return the {lw} of every {sg} {post}."], label_of=t,
                lw=_label_words(t), np=c.noun(ctx.noun(t)), sg=t.singular, post=c.post or "in the data"
                ) if c.post else ctx.say(
                ["List the {lw} of {np}.", "What are the {lw} of the {np}?", "Name the {np}.",
                 "Show all {np}.", "Give me the {lw} of {np}."], label_of=t,
                lw=_label_words(t), np=c.noun(ctx.noun(t)))
    return Draft(q, f"SELECT {qi(t.label)} FROM {qi(t.name)} WHERE {c.sql}", _evidence(c))


def s_two_filters(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("label"))
    a, b = ctx.cond(t), ctx.cond(t)
    if a.sql.split()[0] == b.sql.split()[0] or a.pre and b.pre:
        raise Skip
    first, second = (a, b) if not b.pre else (b, a)
    if second.pre:
        raise Skip
    # "expensive products made by Acme" / "products from Paris and with price over 20"
    joiner = " and " if first.post else " "
    np = first.noun(ctx.noun(t)) + joiner + second.post
    q = ctx.say(["List the {lw} of {np}.", "Which {np} are there? Give their {lw}.",
                 "Show the {lw} of {np}.", "Find the {np}."], label_of=t, lw=_label_words(t), np=np)
    return Draft(q, f"SELECT {qi(t.label)} FROM {qi(t.name)} WHERE {a.sql} AND {b.sql}",
                 _evidence(a, b))


_AGG_WORDS = {
    "AVG": ("average", "mean"), "MAX": ("highest", "maximum", "largest"),
    "MIN": ("lowest", "minimum", "smallest"), "SUM": ("total", "combined", "overall"),
}


def s_aggregate(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("numeric"))
    col = ctx.choice(t.of_kind("numeric"))
    agg = ctx.choice([a for a in _AGG_WORDS if a != "SUM" or col.additive])
    word = ctx.choice(_AGG_WORDS[agg])
    c = ctx.cond(t) if ctx.chance(0.5) else None
    plural = ctx.noun(t)
    np = c.noun(plural) if c else f"all {plural}"
    q = ctx.say(["What is the {w} {p} of {np}?", "Find the {w} {p} across {np}.",
                 "Compute the {w} {p} for {np}.", "What's the {w} {p} among {np}?",
                 "Give the {w} {p} of {np}.", "Among {np}, what is the {w} {p}?"],
                w=word, p=col.phrase, np=np)
    where = f" WHERE {c.sql}" if c else ""
    hint = f"{word} {col.phrase} refers to {agg}({col.name})" if ctx.chance(0.25) else \
        (col.hint() if ctx.chance(0.4) else "")
    return Draft(q, f"SELECT {agg}({qi(col.name)}) FROM {qi(t.name)}{where}", _evidence(c or "", hint))


def s_top(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("label", "numeric"))
    col = ctx.choice(t.of_kind("numeric"))
    high = ctx.chance(0.6)
    order = "DESC" if high else "ASC"
    word = ctx.choice(("highest", "largest", "greatest") if high else ("lowest", "smallest"))
    k = ctx.choice((1, 1, 1, 3, 5, 10))
    pl, lw = ctx.noun(t), _label_words(t)
    if k == 1:
        q = ctx.say(["Which {sg} has the {w} {p}?", "Name the {sg} with the {w} {p}.",
                     "What is the {lp} of the {sg} with the {w} {p}?",
                     "Find the {sg} whose {p} is the {w}.", "Tell me which {sg} has the {w} {p}."],
                    label_of=t, sg=t.singular, w=word, p=col.phrase, lp=t.columns[t.label].phrase)
        hint = f"{word} {col.phrase} refers to {'MAX' if high else 'MIN'}({col.name})" \
            if ctx.chance(0.35) else ""
        sql = f"SELECT {qi(t.label)} FROM {qi(t.name)} ORDER BY {qi(col.name)} {order} LIMIT 1"
        return Draft(q, sql, hint)
    q = ctx.say(["List the {k} {pl} with the {w} {p}.", "Which {k} {pl} have the {w} {p}?",
                 "Show the top {k} {pl} by {p} ({w} first), with their {p}.",
                 "Give the {lw} and {p} of the {k} {pl} with the {w} {p}."], label_of=t,
                k=k, pl=pl, w=word, p=col.phrase, lw=lw)
    with_value = "with their" in q or " and " in q
    cols = f"{qi(t.label)}, {qi(col.name)}" if with_value else qi(t.label)
    hint = col.hint() if ctx.chance(0.4) else ""
    return Draft(q, f"SELECT {cols} FROM {qi(t.name)} ORDER BY {qi(col.name)} {order} LIMIT {k}", hint)


def s_lookup(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("label"))
    col = ctx.choice([c for c in t.columns.values() if c.kind in ("numeric", "category", "date")])
    value = ctx.label_value(t)
    shown = ctx.show(value)
    q = ctx.say(["What is the {p} of {v}?", "Tell me the {p} of the {sv}.",
                 "For the {sv}, what is the {p}?", "Look up the {p} of {sv}.",
                 "What is {raw}'s {p}?", "Give the {p} for {sq}."],
                p=col.phrase, v=shown, raw=value, sv=with_noun(t.singular, shown),
                sq=with_noun(t.singular, f"'{value}'"))
    hint = col.hint() if ctx.chance(0.5) else ""
    return Draft(q, f"SELECT {qi(col.name)} FROM {qi(t.name)} WHERE {qi(t.label)} = {lit(value)}", hint)


def s_distinct(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category"))
    col = ctx.choice(t.of_kind("category"))
    others = [c for c in t.columns.values() if c.kind in ("numeric", "date", "category") and c is not col]
    c = ctx.cond(t) if others and ctx.chance(0.6) else None
    if c and c.sql.startswith(qi(col.name) + " "):
        raise Skip
    np = c.noun(ctx.noun(t)) if c else ctx.noun(t)
    q = ctx.say(["What different {p} values are there among {np}?",
                 "List the distinct {p} values of {np}.", "Which {ps} appear among {np}?",
                 "What {ps} do {np} have?", "Show each distinct {p} for {np}."],
                p=col.phrase, ps=pluralize(col.phrase), np=np)
    where = f" WHERE {c.sql}" if c else ""
    return Draft(q, f"SELECT DISTINCT {qi(col.name)} FROM {qi(t.name)}{where}", _evidence(c or ""))


# ================================ moderate ========================================================

def m_join_list(ctx: Ctx) -> Draft:
    fk = ctx.fk(child_label=True, uses_verb=True)
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    value = ctx.label_value(parent)
    shown = ctx.show(value)
    q = ctx.say(["List the {lw} of {cpl} {verb} {pv}.", "Which {cpl} are {verb} {v}?",
                 "Show all {cpl} {verb} the {psg} named {v}.",
                 "Give the {lw} of every {csg} {verb} {v}.", "What {cpl} are {verb} {pv}?",
                 "What are the {lw} of {cpl} {verb} {pv}?"], label_of=child,
                lw=_label_words(child), cpl=ctx.noun(child), csg=child.singular, verb=fk.verb,
                psg=parent.singular, v=shown, pv=with_noun(parent.singular, shown))
    sql = (f"SELECT T1.{qi(child.label)} FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 "
           f"ON {_on(fk)} WHERE T2.{qi(parent.label)} = {lit(value)}")
    return Draft(q, sql, "")


def m_join_count(ctx: Ctx) -> Draft:
    fk = ctx.fk(parent_label=False, uses_verb=True)
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    if parent.label and ctx.chance(0.4):
        value = ctx.label_value(parent)
        target = with_noun(parent.singular, ctx.show(value))
        where, ev = f"T2.{qi(parent.label)} = {lit(value)}", ""
    else:
        c = ctx.cond(parent, "T2.")
        target, where, ev = c.noun(ctx.noun(parent)), c.sql, c.evidence
    q = ctx.say(["How many {cpl} are {verb} {t}?", "Count the {cpl} {verb} {t}.",
                 "What is the number of {cpl} {verb} {t}?", "How many {cpl} {verb} {t} are there?",
                 "Find how many {cpl} are {verb} {t}."],
                cpl=ctx.noun(child), verb=fk.verb, t=target)
    sql = (f"SELECT COUNT(*) FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 "
           f"ON {_on(fk)} WHERE {where}")
    return Draft(q, sql, ev)


def m_join_aggregate(ctx: Ctx) -> Draft:
    fk = ctx.fk(parent_label=False, child_kinds=("numeric",), uses_verb=True)
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    col = ctx.choice(child.of_kind("numeric"))
    agg = ctx.choice(("AVG", "SUM", "MAX", "MIN", "AVG") if col.additive else ("AVG", "MAX", "MIN"))
    word = ctx.choice(_AGG_WORDS[agg])
    c = ctx.cond(parent, "T2.")
    q = ctx.say(["What is the {w} {p} of {cpl} {verb} {pnp}?",
                 "For {cpl} {verb} {pnp}, what is the {w} {p}?",
                 "Compute the {w} {p} over all {cpl} {verb} {pnp}.",
                 "Find the {w} {p} among {cpl} {verb} {pnp}."],
                w=word, p=col.phrase, cpl=ctx.noun(child), verb=fk.verb, pnp=c.noun(ctx.noun(parent)))
    sql = (f"SELECT {agg}(T1.{qi(col.name)}) FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} "
           f"AS T2 ON {_on(fk)} WHERE {c.sql}")
    return Draft(q, sql, _evidence(c))


def m_group_count(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category"))
    col = ctx.choice(t.of_kind("category"))
    pl = ctx.noun(t)
    q = ctx.say(["How many {pl} are there for each {p}?", "Give the number of {pl} per {p}.",
                 "For every {p}, count the {pl}.", "Break down the {pl} by {p}, with counts.",
                 "Show each {p} together with how many {pl} have it."], pl=pl, p=col.phrase)
    return Draft(q, f"SELECT {qi(col.name)}, COUNT(*) FROM {qi(t.name)} GROUP BY {qi(col.name)}", "")


def m_group_top(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category"))
    col = ctx.choice(t.of_kind("category"))
    most = ctx.chance(0.75)
    c = ctx.cond(t) if ctx.chance(0.5) else None
    if c and c.sql.startswith(qi(col.name) + " "):
        raise Skip
    np = c.noun(ctx.noun(t)) if c else ctx.noun(t)
    word = "most" if most else "fewest"
    q = ctx.say(["Which {p} has the {w} {np}?",
                 "What is the {adj} {p} among {np}?", "Which {p} appears {often} among {np}?",
                 "Among {np}, which {p} is the {adj}?"],
                p=col.phrase, w=word, np=np, adj="most common" if most else "least common",
                often="most often" if most else "least often")
    where = f" WHERE {c.sql}" if c else ""
    sql = (f"SELECT {qi(col.name)} FROM {qi(t.name)}{where} GROUP BY {qi(col.name)} "
           f"ORDER BY COUNT(*) {'DESC' if most else 'ASC'} LIMIT 1")
    return Draft(q, sql, _evidence(c or ""))


def m_group_aggregate(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category", "numeric"))
    cat, num = ctx.choice(t.of_kind("category")), ctx.choice(t.of_kind("numeric"))
    agg = ctx.choice(("AVG", "SUM", "MAX", "AVG") if num.additive else ("AVG", "MAX", "MIN"))
    word = ctx.choice(_AGG_WORDS[agg])
    pl = ctx.noun(t)
    if ctx.chance(0.5):
        q = ctx.say(["What is the {w} {n} of {pl} in each {c}?", "For each {c}, show the {w} {n} of {pl}.",
                     "Give the {w} {n} per {c} for {pl}.", "For every {c}, give the {w} {n} among its {pl}."],
                    w=word, n=num.phrase, c=cat.phrase, pl=pl)
        sql = f"SELECT {qi(cat.name)}, {agg}({qi(num.name)}) FROM {qi(t.name)} GROUP BY {qi(cat.name)}"
    else:
        agg = "SUM" if agg == "SUM" else "AVG"
        word = ctx.choice(_AGG_WORDS[agg])
        q = ctx.say(["Which {c} has the highest {w} {n} of {pl}?",
                     "Among {pl}, which {c} has the greatest {w} {n}?",
                     "Find the {c} whose {pl} have the highest {w} {n}."],
                    w=word, n=num.phrase, c=cat.phrase, pl=pl)
        sql = (f"SELECT {qi(cat.name)} FROM {qi(t.name)} GROUP BY {qi(cat.name)} "
               f"ORDER BY {agg}({qi(num.name)}) DESC LIMIT 1")
    return Draft(q, sql, _evidence(num.hint() if ctx.chance(0.4) else "", cat.hint() if ctx.chance(0.3) else ""))


def _count_threshold(ctx: Ctx, counts_sql: str) -> int:
    """A HAVING bound that some groups pass: a group count from the lower part of the spread."""
    counts = sorted(r[0] for r in ctx.conn.execute(counts_sql))
    if len(counts) < 3 or counts[0] == counts[-1]:
        raise Skip
    return counts[ctx.rng.randint(len(counts) // 4, (3 * len(counts)) // 4 - 1)]


def m_having(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category"))
    col = ctx.choice(t.of_kind("category"))
    n = _count_threshold(ctx, f"SELECT COUNT(*) FROM {qi(t.name)} GROUP BY {qi(col.name)}")
    pl = ctx.noun(t)
    if ctx.chance(0.5):
        q = ctx.say(["Which {ps} have more than {n} {pl}?", "List the {ps} shared by over {n} {pl}.",
                     "Find each {p} that more than {n} {pl} have."], ps=pluralize(col.phrase),
                    p=col.phrase, n=n, pl=pl)
        having = f"COUNT(*) > {n}"
    else:
        q = ctx.say(["Which {ps} have at least {n} {pl}?", "List every {p} with {n} or more {pl}."],
                    ps=pluralize(col.phrase), p=col.phrase, n=n, pl=pl)
        having = f"COUNT(*) >= {n}"
    return Draft(q, f"SELECT {qi(col.name)} FROM {qi(t.name)} GROUP BY {qi(col.name)} HAVING {having}", "")


def m_in_subquery(ctx: Ctx) -> Draft:
    fk = ctx.fk()
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    if child is parent:
        raise Skip
    c = ctx.cond(child)
    q = ctx.say(["Which {ppl} have {cnp}? Give their {lw}.", "List the {lw} of {ppl} with {cnp}.",
                 "Find {ppl} that have at least one {csg_np}.",
                 "Name the {ppl} having {cnp}."], label_of=parent,
                ppl=ctx.noun(parent), cnp=c.noun(ctx.noun(child)), lw=_label_words(parent),
                csg_np=c.noun(child.singular))
    sql = (f"SELECT {qi(parent.label)} FROM {qi(parent.name)} WHERE {qi(fk.parent_column)} IN "
           f"(SELECT {qi(fk.column)} FROM {qi(child.name)} WHERE {c.sql})")
    return Draft(q, sql, _evidence(c))


def m_join_group(ctx: Ctx) -> Draft:
    fk = ctx.fk()
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    k = ctx.choice((1, 1, 3, 5))
    cpl = ctx.noun(child)
    if k == 1:
        q = ctx.say(["Which {psg} has the most {cpl}?", "Name the {psg} with the largest number of {cpl}.",
                     "What is the {lp} of the {psg} that has the most {cpl}?"], label_of=parent,
                    psg=parent.singular, cpl=cpl, lp=parent.columns[parent.label].phrase)
        sel = f"T2.{qi(parent.label)}"
    else:
        q = ctx.say(["List the {k} {ppl} with the most {cpl} and how many each has.",
                     "Show the top {k} {ppl} by number of {cpl}, with the counts.",
                     "Which {k} {ppl} have the most {cpl}? Include the number."], label_of=parent,
                    k=k, ppl=ctx.noun(parent), cpl=cpl)
        sel = f"T2.{qi(parent.label)}, COUNT(*)"
    sql = (f"SELECT {sel} FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 ON {_on(fk)} "
           f"GROUP BY {_key(parent, 'T2')} ORDER BY COUNT(*) DESC LIMIT {k}")
    return Draft(q, sql, "")


def m_join_group_category(ctx: Ctx) -> Draft:
    fk = ctx.fk(parent_label=False, parent_kinds=("category",))
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    col = ctx.choice(parent.of_kind("category"))
    q = ctx.say(["How many {cpl} are there for each {pp}?",
                 "Count the {cpl} per {p} of their {psg}.",
                 "For each {pp}, how many {cpl} are {verb} such {ppl}?",
                 "Break down {cpl} by the {p} of the {psg} they are {verb}."],
                cpl=ctx.noun(child), psg=parent.singular, ppl=ctx.noun(parent), p=col.phrase,
                pp=with_noun(parent.singular, col.phrase), verb=fk.verb)
    sql = (f"SELECT T2.{qi(col.name)}, COUNT(*) FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} "
           f"AS T2 ON {_on(fk)} GROUP BY T2.{qi(col.name)}")
    return Draft(q, sql, "")


# ================================ challenging =====================================================

def c_above_average(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("label", "numeric"))
    col = ctx.choice(t.of_kind("numeric"))
    pl = ctx.noun(t)
    c = ctx.cond(t) if ctx.chance(0.5) else None
    if c and c.sql.startswith(qi(col.name) + " "):
        raise Skip  # "page count below 300 and below the average page count" says little
    above = ctx.chance(0.7)
    rel = "above" if above else "below"
    if c:
        q = ctx.say(["Among {np}, which have {ap} {rel} the average {p} of all {pl}?",
                     "List the {lw} of {np} whose {p} is {rel} the overall average.",
                     "Which {np} have {ap} {rel} average? Compare against all {pl}."], label_of=t,
                    np=c.noun(pl), p=col.phrase, ap=_a(col.phrase), rel=rel, pl=pl, lw=_label_words(t))
    else:
        q = ctx.say(["Which {pl} have {ap} {rel} the average?",
                     "List the {lw} of {pl} whose {p} is {rel} the average {p}.",
                     "Find all {pl} with {ap} {rel} the mean {p} of all {pl}."], label_of=t,
                    pl=pl, p=col.phrase, ap=_a(col.phrase), rel=rel, lw=_label_words(t))
    op = ">" if above else "<"
    extra = f" AND {c.sql}" if c else ""
    hint = f"{rel} average refers to {col.name} {op} AVG({col.name})" if ctx.chance(0.4) else ""
    sql = (f"SELECT {qi(t.label)} FROM {qi(t.name)} WHERE {qi(col.name)} {op} "
           f"(SELECT AVG({qi(col.name)}) FROM {qi(t.name)}){extra}")
    return Draft(q, sql, _evidence(c or "", hint))


def c_percentage(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables())
    c = ctx.cond(t)
    pl = ctx.noun(t)
    q = ctx.say(["What percentage of {pl} are {np}?", "What is the percentage of {np} among all {pl}?",
                 "Calculate the share, in percent, of {np} out of all {pl}.",
                 "Among all {pl}, what percent are {np}?"], pl=pl, np=c.noun(pl))
    hint = f"percentage = DIVIDE(COUNT({c.sql}), COUNT(*)) * 100" if ctx.chance(0.7) else ""
    sql = (f"SELECT CAST(SUM(CASE WHEN {c.sql} THEN 1 ELSE 0 END) AS REAL) * 100 / COUNT(*) "
           f"FROM {qi(t.name)}")
    return Draft(q, sql, _evidence(c, hint))


def c_join_percentage(ctx: Ctx) -> Draft:
    fk = ctx.fk(parent_label=False, uses_verb=True)
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    c = ctx.cond(parent, "T2.")
    cpl = ctx.noun(child)
    q = ctx.say(["What percentage of {cpl} are {verb} {pnp}?",
                 "Of all {cpl}, what share (in percent) is {verb} {pnp}?",
                 "Calculate the percentage of {cpl} {verb} {pnp}."],
                cpl=cpl, verb=fk.verb, pnp=c.noun(ctx.noun(parent)))
    hint = f"percentage = DIVIDE(COUNT({c.sql.replace('T2.', '')}), COUNT({child.name})) * 100" \
        if ctx.chance(0.6) else ""
    sql = (f"SELECT CAST(SUM(CASE WHEN {c.sql} THEN 1 ELSE 0 END) AS REAL) * 100 / COUNT(*) "
           f"FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 ON {_on(fk)}")
    return Draft(q, sql, _evidence(c, hint))


def c_set_operation(ctx: Ctx) -> Draft:
    fk = ctx.fk()
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    if child is parent:
        raise Skip
    a, b = ctx.cond(child, "T1."), ctx.cond(child, "T1.")
    same_column = a.sql.split()[0] == b.sql.split()[0]
    if a.sql == b.sql or same_column and not (" = " in a.sql and " = " in b.sql):
        raise Skip
    cpl = ctx.noun(child)
    op = ctx.choice(("INTERSECT", "EXCEPT", "UNION"))
    templates = {
        "INTERSECT": ["Which {ppl} have both {a} and {b}?", "List {ppl} with {a} as well as {b}.",
                      "Find the {ppl} that have {a} and also {b}."],
        "EXCEPT": ["Which {ppl} have {a} but no {b}?", "List {ppl} with {a} and without any {b}.",
                   "Find {ppl} that have {a} yet none {b_post}."],
        "UNION": ["Which {ppl} have either {a} or {b}?", "List {ppl} with {a} or {b}."],
    }
    q = ctx.say(templates[op], label_of=parent, ppl=ctx.noun(parent), a=a.noun(cpl), b=b.noun(cpl),
                b_post=b.noun(cpl) if b.pre else (b.post or cpl))
    base = (f"SELECT T2.{qi(parent.label)} FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} "
            f"AS T2 ON {_on(fk)} WHERE ")
    return Draft(q, f"{base}{a.sql} {op} {base}{b.sql}", _evidence(a, b))


def _two_parent_fks(ctx: Ctx) -> tuple[ForeignKey, ForeignKey]:
    """Two foreign keys of one child table (a bridge like enrollments -> students, courses)."""
    options = []
    for first in ctx.schema.fks:
        for second in ctx.schema.fks:
            if first.child == second.child and first.column != second.column and \
                    not ctx.ambiguous(first) and first.parent != second.parent and \
                    ctx.tab(first.parent).label and ctx.tab(first.child).rows and \
                    any(ctx.tab(second.parent).of_kind(k) for k in ("category", "numeric", "date")):
                options.append((first, second))
    return ctx.choice(options)


def c_bridge_having(ctx: Ctx) -> Draft:
    one, two = _two_parent_fks(ctx)
    child, p1, p2 = ctx.tab(one.child), ctx.tab(one.parent), ctx.tab(two.parent)
    c = ctx.cond(p2, "T3.")
    joins = (f"FROM {qi(child.name)} AS T1 INNER JOIN {qi(p1.name)} AS T2 ON {_on(one)} "
             f"INNER JOIN {qi(p2.name)} AS T3 ON {_on(two, 'T1', 'T3')} WHERE {c.sql}")
    n = _count_threshold(ctx, f"SELECT COUNT(*) {joins} GROUP BY {_key(p1, 'T2')}")
    q = ctx.say(["Which {p1pl} have more than {n} {cpl} {verb} {p2np}?",
                 "List the {lw} of {p1pl} with over {n} {cpl} {verb} {p2np}.",
                 "Find {p1pl} that have more than {n} {cpl} {verb} {p2np}."], label_of=p1,
                p1pl=ctx.noun(p1), n=n, cpl=ctx.noun(child), verb=two.verb,
                p2np=c.noun(ctx.noun(p2)), lw=_label_words(p1))
    sql = f"SELECT T2.{qi(p1.label)} {joins} GROUP BY {_key(p1, 'T2')} HAVING COUNT(*) > {n}"
    return Draft(q, sql, _evidence(c))


def c_chain_top(ctx: Ctx) -> Draft:
    """child -> parent -> grandparent: which grandparent has the most children rows."""
    options = [(a, b) for a in ctx.schema.fks for b in ctx.schema.fks
               if a.parent == b.child and a.child != b.child and ctx.tab(b.parent).label
               and not ctx.ambiguous(a) and not ctx.ambiguous(b)
               and ctx.tab(a.child).rows]
    first, second = ctx.choice(options)
    child, mid, top = ctx.tab(first.child), ctx.tab(first.parent), ctx.tab(second.parent)
    c = ctx.cond(mid, "T2.") if ctx.chance(0.5) else None
    target = f"{ctx.noun(child)} (through {c.noun(ctx.noun(mid))})" if c else ctx.noun(child)
    q = ctx.say(["Which {tsg} has the most {t}?", "Name the {tsg} with the largest number of {t}.",
                 "Counting {t}, which {tsg} comes first?"],
                label_of=top, tsg=top.singular, t=target)
    where = f" WHERE {c.sql}" if c else ""
    sql = (f"SELECT T3.{qi(top.label)} FROM {qi(child.name)} AS T1 INNER JOIN {qi(mid.name)} AS T2 "
           f"ON {_on(first)} INNER JOIN {qi(top.name)} AS T3 ON {_on(second, 'T2', 'T3')}{where} "
           f"GROUP BY {_key(top, 'T3')} ORDER BY COUNT(*) DESC LIMIT 1")
    return Draft(q, sql, _evidence(c or ""))


def c_top_total(ctx: Ctx) -> Draft:
    fk = ctx.fk(child_kinds=("numeric",))
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    col = ctx.choice(child.of_kind("numeric"))
    agg = ctx.choice(("SUM", "AVG") if col.additive else ("AVG",))
    word = "total" if agg == "SUM" else "average"
    q = ctx.say(["Which {psg} has the highest {w} {p} across its {cpl}?",
                 "Name the {psg} whose {cpl} have the greatest {w} {p}.",
                 "Among all {ppl}, which one has the largest {w} {p} of {cpl}?"], label_of=parent,
                psg=parent.singular, ppl=ctx.noun(parent), w=word, p=col.phrase, cpl=ctx.noun(child))
    sql = (f"SELECT T2.{qi(parent.label)} FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 "
           f"ON {_on(fk)} GROUP BY {_key(parent, 'T2')} ORDER BY {agg}(T1.{qi(col.name)}) DESC LIMIT 1")
    hint = f"{word} {col.phrase} refers to {agg}({col.name})" if ctx.chance(0.4) else ""
    return Draft(q, sql, hint)


def c_not_in(ctx: Ctx) -> Draft:
    fk = ctx.fk()
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    if child is parent:
        raise Skip
    c = ctx.cond(child)
    q = ctx.say(["Which {ppl} have no {cnp}?", "List the {lw} of {ppl} without any {cnp}.",
                 "Find the {ppl} that never had {cnp}."], label_of=parent,
                ppl=ctx.noun(parent), cnp=c.noun(ctx.noun(child)), lw=_label_words(parent))
    sql = (f"SELECT {qi(parent.label)} FROM {qi(parent.name)} WHERE {qi(fk.parent_column)} NOT IN "
           f"(SELECT {qi(fk.column)} FROM {qi(child.name)} WHERE {qi(fk.column)} IS NOT NULL AND {c.sql})")
    return Draft(q, sql, _evidence(c))


def c_difference(ctx: Ctx) -> Draft:
    t = ctx.choice(ctx.tables("category", "numeric"))
    cat, num = ctx.choice(t.of_kind("category")), ctx.choice(t.of_kind("numeric"))
    values = ctx.values(t.name, cat.name)
    if len(values) < 2:
        raise Skip
    a, b = ctx.rng.sample(values, 2)
    pl = ctx.noun(t)
    q = ctx.say(["How much higher is the average {n} of {pl} with {c} {a} than of those with {c} {b}?",
                 "What is the difference between the average {n} of {a} {pl} and {b} {pl} (by {c})?",
                 "Compare {pl} with {c} {a} and {b}: by how much does their average {n} differ?"],
                n=num.phrase, pl=pl, c=cat.phrase, a=ctx.show(a), b=ctx.show(b))
    hint = (f"difference = SUBTRACT(AVG({num.name} WHERE {cat.name} = {lit(a)}), "
            f"AVG({num.name} WHERE {cat.name} = {lit(b)}))") if ctx.chance(0.6) else ""
    sql = (f"SELECT AVG(CASE WHEN {qi(cat.name)} = {lit(a)} THEN {qi(num.name)} END) - "
           f"AVG(CASE WHEN {qi(cat.name)} = {lit(b)} THEN {qi(num.name)} END) FROM {qi(t.name)}")
    return Draft(q, sql, hint)


def extreme_is_tied(conn: sqlite3.Connection, table: str, column: str, agg: str) -> bool:
    """Whether more than one row of ``table`` holds the MAX/MIN of ``column``; then "the author
    whose birth year is the highest" names no single author."""
    t, c = qi(table), qi(column)
    count = conn.execute(f"SELECT COUNT(*) FROM {t} WHERE {c} = (SELECT {agg}({c}) FROM {t})").fetchone()[0]
    return count > 1


def c_of_extreme_parent(ctx: Ctx) -> Draft:
    fk = ctx.fk(child_label=True, parent_kinds=("numeric",), uses_verb=True)
    child, parent = ctx.tab(fk.child), ctx.tab(fk.parent)
    if child is parent:
        raise Skip
    col = ctx.choice(parent.of_kind("numeric"))
    high = ctx.chance(0.6)
    word = "highest" if high else "lowest"
    agg = "MAX" if high else "MIN"
    if ctx.extreme_is_tied(parent.name, col.name, agg):
        raise Skip
    q = ctx.say(["List the {cpl} {verb} the {psg} with the {w} {p}.",
                 "Which {cpl} are {verb} the {psg} whose {p} is the {w}?",
                 "Give the {lw} of {cpl} {verb} the {psg} that has the {w} {p}."], label_of=child,
                cpl=ctx.noun(child), verb=fk.verb, psg=parent.singular, w=word, p=col.phrase,
                lw=_label_words(child))
    sql = (f"SELECT T1.{qi(child.label)} FROM {qi(child.name)} AS T1 INNER JOIN {qi(parent.name)} AS T2 "
           f"ON {_on(fk)} WHERE T2.{qi(col.name)} = (SELECT {agg}({qi(col.name)}) FROM {qi(parent.name)})")
    hint = f"{word} {col.phrase} refers to {agg}({col.name})" if ctx.chance(0.5) else ""
    return Draft(q, sql, hint)


def _measure(ctx: Ctx):
    measure = ctx.choice(ctx.schema.measures)
    flt = ctx.choice(measure.filters) if measure.filters and ctx.chance(0.5) else None
    return measure, flt


def _needed_joins(from_sql: str, *uses: str) -> str:
    """Drop joined tables that neither the query nor a kept join refers to (by alias)."""
    first, *joins = from_sql.split(" INNER JOIN ")
    text = " ".join(uses)
    kept: list[str] = []
    for join in reversed(joins):
        alias = join.split(" AS ")[1].split()[0]
        if re.search(rf"\b{alias}\.", text + " " + " ".join(k.split(" ON ", 1)[1] for k in kept)):
            kept.insert(0, join)
    return " INNER JOIN ".join([first] + kept)


def c_measure_total(ctx: Ctx) -> Draft:
    m, flt = _measure(ctx)
    agg = ctx.choice(("SUM", "AVG") if m.per else ("SUM",))
    word = ctx.choice(("total", "overall") if agg == "SUM" else ("average", "mean"))
    where = f" WHERE {flt[0]}" if flt else ""
    scope = (flt[1] if flt else "") + (f" per {m.per}" if agg == "AVG" else "")
    q = ctx.say(["What is the {w} {m} {s}?", "Calculate the {w} {m} {s}.",
                 "How much is the {w} {m} {s}?", "Compute the {w} {m} {s}."],
                w=word, m=m.name, s=scope)
    source = _needed_joins(m.sql, m.expr, where)
    if " JOIN " not in source and "CASE" not in m.expr:
        raise Skip  # a plain one-table SUM/AVG; the simple shapes already ask those
    return Draft(q, f"SELECT {agg}({m.expr}) FROM {source}{where}", m.evidence)


def c_measure_group(ctx: Ctx) -> Draft:
    m, flt = _measure(ctx)
    group, phrase = ctx.choice(m.groups)
    if flt and group in flt[0]:
        raise Skip  # grouping by the column the filter fixes gives one group
    where = f" WHERE {flt[0]}" if flt else ""
    scope = flt[1] if flt else ""
    source = _needed_joins(m.sql, m.expr, group, where)
    if " JOIN " not in source and "CASE" not in m.expr:
        raise Skip
    if ctx.chance(0.5):
        high = ctx.chance(0.75)
        q = ctx.say(["Which {g} has the {hl} total {m} {s}?",
                     "Which {g} generated the {hl} {m} {s}?",
                     "Find the {g} with the {hl} total {m} {s}."],
                    g=phrase, hl="highest" if high else "lowest", m=m.name, s=scope)
        sql = (f"SELECT {group} FROM {source}{where} GROUP BY {group} "
               f"ORDER BY SUM({m.expr}) {'DESC' if high else 'ASC'} LIMIT 1")
    else:
        q = ctx.say(["What is the total {m} for each {g} {s}?", "Break down the {m} by {g} {s}.",
                     "For every {g}, what was the total {m} {s}?", "Show the total {m} per {g} {s}."],
                    g=phrase, m=m.name, s=scope)
        sql = f"SELECT {group}, SUM({m.expr}) FROM {source}{where} GROUP BY {group}"
    return Draft(q, sql, m.evidence)


SHAPES: dict[str, list[Callable[[Ctx], Draft]]] = {
    "simple": [s_count, s_list, s_two_filters, s_aggregate, s_top, s_lookup, s_distinct],
    "moderate": [m_join_list, m_join_count, m_join_aggregate, m_group_count, m_group_top,
                 m_group_aggregate, m_having, m_in_subquery, m_join_group, m_join_group_category],
    "challenging": [c_above_average, c_percentage, c_join_percentage, c_set_operation,
                    c_bridge_having, c_chain_top, c_top_total, c_not_in, c_difference,
                    c_of_extreme_parent, c_measure_total, c_measure_group],
}


def _useful(rows: list[tuple], max_rows: int) -> bool:
    """Non-empty, not just NULL/0, and small enough to read as an answer."""
    if not rows or len(rows) > max_rows:
        return False
    if len(rows) == 1 and all(v is None or v == 0 for v in rows[0]):
        return False
    return True


_TOP_K = re.compile(r"^SELECT (?P<select>.+?) FROM (?P<rest>.+) ORDER BY (?P<key>.+) (?P<dir>ASC|DESC) "
                    r"LIMIT (?P<k>\d+)$", re.DOTALL)


def tied_at_cut(conn: sqlite3.Connection, sql: str, seconds: float) -> bool:
    """Whether an ORDER BY ... LIMIT k query has a tie across the cut (row k and k+1 share the
    sort key), which would make the gold answer depend on SQLite's arbitrary tie order."""
    match = _TOP_K.match(sql)
    if not match:
        return False
    k = int(match["k"])
    keys = _run(conn, f"SELECT {match['key']} FROM {match['rest']} ORDER BY {match['key']} "
                      f"{match['dir']} LIMIT {k + 1}", seconds)
    return keys is None or (len(keys) > k and keys[k - 1] == keys[k])


def _run(conn: sqlite3.Connection, sql: str, seconds: float) -> list[tuple] | None:
    deadline = time.monotonic() + seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.set_progress_handler(None, 0)


def generate_pairs(conn: sqlite3.Connection, schema: SchemaInfo, n: int, seed: str,
                   mix: dict[str, float] = DIFFICULTY_MIX, max_rows: int = 300,
                   time_limit: float = 2.0) -> list[Draft]:
    """Up to ``n`` distinct verified drafts (fewer when the database supports too few shapes)."""
    rng = random.Random(seed)
    ctx = Ctx(conn, schema, rng)
    drafts: list[Draft] = []
    seen_sql: set[str] = set()
    seen_questions: set[str] = set()
    levels, weights = list(mix), list(mix.values())
    attempts = 0
    while len(drafts) < n and attempts < n * 40:
        attempts += 1
        level = rng.choices(levels, weights=weights)[0]
        shape = rng.choice(SHAPES[level])
        try:
            draft = shape(ctx)
        except Skip:
            continue
        if draft.sql in seen_sql or draft.question in seen_questions:
            continue
        rows = _run(conn, draft.sql, time_limit)
        if rows is None or not _useful(rows, max_rows) or tied_at_cut(conn, draft.sql, time_limit):
            continue
        draft.shape, draft.difficulty = shape.__name__, level
        seen_sql.add(draft.sql)
        seen_questions.add(draft.question)
        drafts.append(draft)
    return drafts
