"""Pull the SQL out of a model's text.

Models answer in several shapes; :func:`extract_sql` tries them in this order and returns the
first non-empty SQL it finds:

1. the text after the last ``</think>`` (reasoning before it is never taken as the answer);
2. the last ``<answer>...</answer>`` block (a missing closing tag reads to the end);
3. the last fenced code block (```sql ... ``` or ``` ... ```; an unclosed fence reads to the end);
4. otherwise the bare text from the first SELECT/WITH keyword (upper case preferred, since
   "with"/"select" are common English words) up to the first blank line.

Inside a tag or fence the whole block is taken (blank lines included).

The result is stripped and keeps only the first statement (up to the first semicolon outside a
string literal, found with sqlglot's tokenizer). An empty string means nothing was found.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot.tokens import TokenType

__all__ = ["extract_sql"]

_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_SQL_START = re.compile(r"\b(SELECT|WITH)\b")  # upper case first: "with" is common in prose
_SQL_START_ANY_CASE = re.compile(r"\bselect\b", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _first_statement(sql: str) -> str:
    """Keep text up to the first top-level semicolon (semicolons in literals do not count)."""
    sql = sql.strip()
    if ";" not in sql:
        return sql
    try:
        tokens = sqlglot.tokenize(sql, read="sqlite")
    except (sqlglot.errors.SqlglotError, ValueError):
        return sql.split(";", 1)[0].strip()
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            return sql[: tok.start].strip()
    return sql


def _from_fences(text: str) -> str:
    blocks = [body for lang, body in _FENCE.findall(text) if body.strip()]
    return blocks[-1] if blocks else ""


def _bare(text: str) -> str:
    match = _SQL_START.search(text) or _SQL_START_ANY_CASE.search(text)
    if not match:
        return ""
    rest = text[match.start():]
    return _BLANK_LINE.split(rest, 1)[0]


def extract_sql(text: str) -> str:
    """The SQL in a model's answer text, or "" when there is none (see the module docstring)."""
    if not text or not text.strip():
        return ""
    ends = list(_THINK_END.finditer(text))
    if ends:
        text = text[ends[-1].end():]
    elif re.search(r"<think>", text, re.IGNORECASE):
        return ""  # reasoning that never finished: no answer yet
    fenced_or_tagged = False
    answers = [a for a in _ANSWER.findall(text) if a.strip()]
    if answers:
        text, fenced_or_tagged = answers[-1], True
    if "```" in text:
        text, fenced_or_tagged = _from_fences(text), True
    stripped = text.strip()
    starts_with_sql = re.match(r"(SELECT|WITH)\b", stripped, re.IGNORECASE) is not None
    sql = stripped if (starts_with_sql and fenced_or_tagged) else _bare(stripped)
    return _first_statement(sql)
