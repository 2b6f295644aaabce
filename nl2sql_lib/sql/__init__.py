"""SQL engine: safe execution, result comparison, sqlglot parsing, SQL extraction, the judge."""

from .compare import SEMANTICS, query_orders, remove_distinct, results_match
from .execute import ErrorKind, ExecResult, MissingDatabase, execute_sql, open_readonly
from .extract import extract_sql
from .judge import Judge, Verdict
from .parse import (
    component_scores,
    exact_match,
    is_valid_syntax,
    normalize_sql,
    parse_sql,
    partial_match_score,
    sql_tokens,
    token_edit_distance,
)

__all__ = [
    "SEMANTICS", "query_orders", "remove_distinct", "results_match",
    "ErrorKind", "ExecResult", "MissingDatabase", "execute_sql", "open_readonly",
    "extract_sql", "Judge", "Verdict",
    "component_scores", "exact_match", "is_valid_syntax", "normalize_sql", "parse_sql",
    "partial_match_score", "sql_tokens", "token_edit_distance",
]
