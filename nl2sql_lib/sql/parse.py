"""SQL parsing with sqlglot: validity, normalization, tokens, exact match and component scores.

Every parse goes through sqlglot's SQLite dialect. The component scores compare a prediction
with the gold query clause by clause (SELECT, FROM/JOIN, WHERE, GROUP BY, HAVING, ORDER BY,
LIMIT). Inside a clause items are compared as multisets wherever their order cannot change the
answer: select items, joined tables and join conditions, AND-ed conditions, GROUP BY keys, and
the two sides of ``=`` / ``!=``. ORDER BY keys keep their order. Table aliases are resolved to
table names first, so ``T1.name`` and ``singer.name`` are the same column.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import sqlglot
from sqlglot import exp

__all__ = [
    "COMPONENTS",
    "parse_sql",
    "is_valid_syntax",
    "normalize_sql",
    "sql_tokens",
    "token_edit_distance",
    "component_scores",
    "partial_match_score",
    "exact_match",
]

_DIALECT = "sqlite"
COMPONENTS = ("select", "from", "where", "group_by", "having", "order_by", "limit")


def _parse_statement(sql: str) -> exp.Expression | None:
    """A new tree of the one statement in ``sql`` (None if it does not parse or is several)."""
    try:
        trees = sqlglot.parse(sql, read=_DIALECT)
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        return None
    return trees[0]


# Shared trees: whoever takes one must copy it before changing it (parse_sql does).
_parse_cached = lru_cache(maxsize=4096)(_parse_statement)


def _statement_text(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def parse_sql(sql: str) -> exp.Expression | None:
    """The sqlglot tree of one SQL statement, or None when it does not parse (or is several)."""
    if not sql or not sql.strip():
        return None
    tree = _parse_cached(_statement_text(sql))
    return tree.copy() if tree is not None else None


def is_valid_syntax(sql: str) -> bool:
    """True when sqlglot parses ``sql`` as exactly one query (SELECT / set operation / WITH)."""
    tree = parse_sql(sql)
    if isinstance(tree, exp.Select) and not tree.expressions:
        return False  # a bare "SELECT" parses, but SQLite rejects it
    return isinstance(tree, exp.Query)


def normalize_sql(sql: str) -> str:
    """A canonical spelling: sqlglot's SQLite output with identifiers lower-cased.

    Falls back to collapsing whitespace when the SQL does not parse.
    """
    tree = parse_sql(sql)
    if tree is None:
        return " ".join((sql or "").split())
    tree = _lower_identifiers(tree)
    return tree.sql(dialect=_DIALECT)


def _lower_identifiers(tree: exp.Expression) -> exp.Expression:
    for ident in tree.find_all(exp.Identifier):
        ident.set("this", ident.this.lower())
        ident.set("quoted", False)
    return tree


def sql_tokens(sql: str) -> list[str]:
    """Tokens of the normalized SQL (keywords upper-case, identifiers lower-case, literals as is)."""
    text = normalize_sql(sql)
    try:
        tokens = sqlglot.tokenize(text, read=_DIALECT)
    except (sqlglot.errors.SqlglotError, ValueError):
        return text.split()
    out = []
    for tok in tokens:
        if tok.token_type == sqlglot.TokenType.STRING:
            out.append(f"'{tok.text}'")
        elif tok.token_type in (sqlglot.TokenType.VAR, sqlglot.TokenType.IDENTIFIER):
            out.append(tok.text.lower())
        else:
            out.append(tok.text.upper())
    return out


def token_edit_distance(a: str | list[str], b: str | list[str]) -> int:
    """Levenshtein distance between the token lists of two SQL strings (or token lists)."""
    ta = sql_tokens(a) if isinstance(a, str) else list(a)
    tb = sql_tokens(b) if isinstance(b, str) else list(b)
    if len(ta) < len(tb):
        ta, tb = tb, ta
    previous = list(range(len(tb) + 1))
    for i, x in enumerate(ta, start=1):
        current = [i]
        for j, y in enumerate(tb, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


def _resolve_aliases(select: exp.Select) -> exp.Select:
    """Replace table aliases by table names in column references; drop the alias definitions."""
    aliases: dict[str, str] = {}
    for table in select.find_all(exp.Table):
        if table.alias:
            aliases[table.alias.lower()] = table.name.lower()
    for column in select.find_all(exp.Column):
        if column.table and column.table.lower() in aliases:
            column.set("table", exp.to_identifier(aliases[column.table.lower()]))
    for table in select.find_all(exp.Table):
        if table.alias:
            table.set("alias", None)
    return select


def _canon(node: exp.Expression) -> str:
    """Canonical text of one item; symmetric comparisons get their operands sorted.

    Changes ``node`` in place: callers pass parts of a tree of their own (see _components).
    A swapped pair of operands is put back as copies, so comparisons nested inside an operand
    that was moved are left as they were (the original copy-based version did the same, and
    the scores must not change).
    """
    # copy=False: sqlglot's generator copies the tree first by default, as it may rewrite parts
    # of it; these trees are ours, and what a rewrite changes is what the text shows anyway.
    for cmp in list(node.find_all(exp.EQ, exp.NEQ)):
        left, right = cmp.left, cmp.right
        if right.sql(dialect=_DIALECT, copy=False) < left.sql(dialect=_DIALECT, copy=False):
            cmp.set("this", right.copy())
            cmp.set("expression", left.copy())
    if isinstance(node, exp.Alias):
        node = node.this
    return node.sql(dialect=_DIALECT, copy=False)


def _conjuncts(node: exp.Expression | None) -> list[str]:
    if node is None:
        return []
    cond = node.this if isinstance(node, (exp.Where, exp.Having)) else node
    return sorted(_canon(c) for c in cond.flatten()) if isinstance(cond, exp.And) else [_canon(cond)]


def _select_components(select: exp.Select) -> dict[str, list[str]]:
    """Clause items of one SELECT; changes ``select`` in place (lower-cased, aliases resolved)."""
    select = _resolve_aliases(_lower_identifiers(select))
    comps: dict[str, list[str]] = {}
    items = [_canon(e) for e in select.expressions]
    if select.args.get("distinct") is not None:
        items.append("<distinct>")
    comps["select"] = items
    from_items: list[str] = []
    from_clause = select.args.get("from_") or select.args.get("from")
    if from_clause is not None:
        from_items.append(_canon(from_clause.this))
    for join in select.args.get("joins") or []:
        from_items.append(_canon(join.this))
        on = join.args.get("on")
        if on is not None:
            from_items.extend("on:" + c for c in _conjuncts(on))
    comps["from"] = from_items
    comps["where"] = _conjuncts(select.args.get("where"))
    group = select.args.get("group")
    comps["group_by"] = [_canon(e) for e in group.expressions] if group is not None else []
    comps["having"] = _conjuncts(select.args.get("having"))
    order = select.args.get("order")
    comps["order_by"] = (
        [f"{i}:{_canon(o.this)}:{'desc' if o.args.get('desc') else 'asc'}" for i, o in enumerate(order.expressions)]
        if order is not None else []
    )
    limit = select.args.get("limit")
    comps["limit"] = [_canon(limit.expression)] if limit is not None and limit.expression is not None else []
    return comps


# Clause items per SQL text, worked out once: an evaluation compares every candidate with its
# gold, the gold repeats once per candidate, and exact match, partial score and component F1
# all need the same items. Values are tuples, so no caller can change a cached entry.
_COMPONENTS_CACHE_SIZE = 65536


@lru_cache(maxsize=_COMPONENTS_CACHE_SIZE)
def _components(sql: str) -> dict[str, tuple[str, ...]] | None:
    """Clause items of one query, or None when it does not parse (never raises)."""
    try:
        comps = _components_of_tree(sql)
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError, AttributeError):
        return None
    return None if comps is None else {c: tuple(items) for c, items in comps.items()}


def _components_of_tree(sql: str) -> dict[str, list[str]] | None:
    if not sql or not sql.strip():
        return None
    # A tree of our own, parsed for this call and changed in place: no copies of shared trees.
    tree = _parse_statement(_statement_text(sql))
    if not isinstance(tree, exp.Query):
        return None
    if isinstance(tree, exp.Select):
        return _select_components(tree)
    if isinstance(tree, exp.SetOperation):
        # A compound query: compare its first branch clause by clause, and fold the operator
        # and the other branches into the FROM component so a different compound never matches.
        # The whole query's text is taken first, before the first branch is changed in place.
        whole = normalize_sql(tree.sql(dialect=_DIALECT))
        left = tree.left
        while isinstance(left, exp.SetOperation):
            left = left.left
        comps = _select_components(left) if isinstance(left, exp.Select) else {c: [] for c in COMPONENTS}
        comps["from"] = comps["from"] + [f"<{type(tree).__name__.lower()}>", whole]
        return comps
    comps = {c: [] for c in COMPONENTS}
    comps["from"] = [normalize_sql(tree.sql(dialect=_DIALECT))]
    return comps


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred and not gold:
        return 1.0
    if not pred or not gold:
        return 0.0
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def component_scores(pred: str, gold: str) -> dict[str, float]:
    """F1 per clause between pred and gold (1.0 when both lack the clause; 0.0 if pred is unparsable)."""
    gold_c = _components(gold)
    pred_c = _components(pred)
    if pred_c is None or gold_c is None:
        return {c: 0.0 for c in COMPONENTS}
    return {c: _f1(pred_c[c], gold_c[c]) for c in COMPONENTS}


def partial_match_score(pred: str, gold: str) -> float:
    """Mean component F1 over the clauses present in pred or gold: a continuous score in [0, 1]."""
    gold_c = _components(gold)
    pred_c = _components(pred)
    if pred_c is None or gold_c is None:
        return 0.0
    present = [c for c in COMPONENTS if pred_c[c] or gold_c[c]]
    if not present:
        return 1.0
    return sum(_f1(pred_c[c], gold_c[c]) for c in present) / len(present)


def exact_match(pred: str, gold: str) -> bool:
    """Every clause matches (up to order where order cannot change the answer)."""
    gold_c = _components(gold)
    pred_c = _components(pred)
    if pred_c is None or gold_c is None:
        return False
    return all(Counter(pred_c[c]) == Counter(gold_c[c]) for c in COMPONENTS)
