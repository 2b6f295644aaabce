"""Chat prompts for every task, and the assistant targets that go with them.

    messages = sql_messages(example, schema_text)                  # system + user
    target = sql_answer(example)                                   # "SELECT ...;"
    messages = sql_messages(example, schema_text, reasoning=True)  # asks for <think>...</think>
    target = sql_answer(example, reasoning=True)                   # "<think>...</think>\nSELECT ...;"
    linking_messages(example, schema_text) / linking_answer(example)   # JSON of tables, columns
    revision_messages(example, schema_text, previous_sql, execution_feedback(result))

The wording is deliberately short: a 135M model trained with a 384-token budget must see the
whole schema and question, so every instruction token is paid for by schema text. The user
message always has the same order (schema, evidence when present, question) so that the fixed
parts stay a shared prefix across tasks.
"""

from __future__ import annotations

import json

SQL_SYSTEM = "You write SQLite queries. Reply with one SQL query and nothing else."
REASONING_SYSTEM = (
    "You write SQLite queries. Think step by step inside <think></think>, "
    "then reply with one SQL query."
)
LINKING_SYSTEM = (
    'List the tables and columns needed to answer. Reply with JSON: '
    '{"tables": [...], "columns": ["table.column", ...]}'
)
REVISION_SYSTEM = "You fix SQLite queries. Reply with one corrected SQL query and nothing else."


def _user_text(example, schema_text: str) -> str:
    parts = [f"Schema:\n{schema_text.strip()}"]
    evidence = (getattr(example, "evidence", "") or "").strip()
    if evidence:
        parts.append(f"Hint: {evidence}")
    parts.append(f"Question: {example.question.strip()}")
    return "\n\n".join(parts)


def _chat(system: str, user: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def finish_sql(sql: str) -> str:
    """One statement ending in a single ``;`` (a clean stop marker for generation)."""
    return sql.strip().rstrip(";").strip() + ";"


def sql_messages(example, schema_text: str, *, reasoning: bool = False) -> list[dict]:
    """System + user messages asking for the SQL (or reasoning, then the SQL)."""
    return _chat(REASONING_SYSTEM if reasoning else SQL_SYSTEM, _user_text(example, schema_text))


def sql_answer(example, *, reasoning: bool = False) -> str:
    """The assistant target: the gold SQL, or ``<think>reasoning</think>`` then the SQL.

    Without teacher reasoning (``example.reasoning`` is None) the think block is a short plan
    written from the schema-linking labels, so the reasoning format can still be trained.
    """
    sql = finish_sql(example.sql)
    if not reasoning:
        return sql
    thought = (example.reasoning or "").strip() or linking_plan(example)
    return f"<think>\n{thought}\n</think>\n{sql}"


def linking_plan(example) -> str:
    links = example.schema_links or {}
    tables = ", ".join(links.get("tables", [])) or "the tables in the schema"
    columns = ", ".join(links.get("columns", []))
    plan = f"The question needs {tables}."
    if columns:
        plan += f" Use the columns {columns}."
    return plan


def linking_messages(example, schema_text: str) -> list[dict]:
    return _chat(LINKING_SYSTEM, _user_text(example, schema_text))


def linking_answer(example) -> str:
    """The schema-linking target: compact JSON of the gold SQL's tables and columns."""
    links = example.schema_links or {"tables": [], "columns": []}
    return json.dumps(
        {"tables": list(links.get("tables", [])), "columns": list(links.get("columns", []))},
        ensure_ascii=False,
    )


def revision_messages(example, schema_text: str, previous_sql: str, feedback: str) -> list[dict]:
    """Ask for a corrected query given a previous attempt and what executing it gave."""
    user = (
        _user_text(example, schema_text)
        + f"\n\nPrevious SQL:\n{previous_sql.strip()}\n\nResult: {feedback.strip()}"
    )
    return _chat(REVISION_SYSTEM, user)


# Execution feedback is cut to this many characters, so it adds at most that many tokens.
FEEDBACK_MAX_CHARS = 300


def revision_headroom_tokens(max_new_tokens: int) -> int:
    """Tokens a revision prompt may add to its frame (``revision_messages`` with an empty previous
    SQL and feedback): the previous SQL (at most ``max_new_tokens``), the feedback, and a little
    slack for re-tokenizing the SQL. What a vLLM engine's context must leave room for."""
    return max_new_tokens + FEEDBACK_MAX_CHARS + 16


def execution_feedback(exec_result, max_rows: int = 5, max_chars: int = FEEDBACK_MAX_CHARS) -> str:
    """A short text of an :class:`~nl2sql_lib.sql.execute.ExecResult` for a revision prompt.

    Errors give their kind and message; results give the row count, columns and first rows.
    """
    error = getattr(exec_result, "error", None)
    kind = getattr(error, "value", error)
    if kind not in (None, "ok"):
        message = (getattr(exec_result, "message", "") or "").strip()
        return _cut(f"error ({kind}): {message}" if message else f"error ({kind})", max_chars)
    rows = list(getattr(exec_result, "rows", None) or [])
    if not rows:
        return "no rows"
    columns = ", ".join(getattr(exec_result, "columns", ()) or ())
    more = "+" if getattr(exec_result, "truncated", False) else ""
    shown = "; ".join(", ".join(_cell(v) for v in row) for row in rows[:max_rows])
    text = f"{len(rows)}{more} row(s)" + (f" ({columns})" if columns else "") + f": {shown}"
    if len(rows) > max_rows:
        text += "; ..."
    return _cut(text, max_chars)


NO_SQL_FEEDBACK = "error (no_sql): no SQL query was found in the answer"


def failure_feedback(db_path, sql: str, *, timeout: float) -> str | None:
    """What a revision prompt shows for an answer that fails to run: the error as
    :func:`execution_feedback` renders it (or :data:`NO_SQL_FEEDBACK` for an empty answer);
    None when the SQL runs. 06_eval's ``+revise`` and revision SFT's records both use it."""
    from ..sql.execute import ErrorKind, execute_sql

    if not sql.strip():
        return NO_SQL_FEEDBACK
    result = execute_sql(db_path, sql, timeout=timeout, max_rows=50)
    # More rows than the 50 fetched here is a query that runs (the cap only bounds this check),
    # not a failure: before 2026-12-07's fix such answers were sent back for revision.
    if result.ok or result.error == ErrorKind.TOO_MANY_ROWS:
        return None
    return execution_feedback(result)


def _cell(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
