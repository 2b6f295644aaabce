"""Extraction of SQL from model text."""

from __future__ import annotations

import pytest

from nl2sql_lib.sql.extract import extract_sql


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SELECT a FROM t", "SELECT a FROM t"),
        ("  SELECT a FROM t;  ", "SELECT a FROM t"),
        ("```sql\nSELECT a\nFROM t;\n```", "SELECT a\nFROM t"),
        ("Sure!\n```\nSELECT 1\n```\nand better:\n```sql\nSELECT 2\n```", "SELECT 2"),
        ("```sql\nSELECT a FROM t", "SELECT a FROM t"),  # unclosed fence
        ("<answer>SELECT a FROM t</answer>", "SELECT a FROM t"),
        ("<answer>\n```sql\nSELECT a FROM t\n```\n</answer>", "SELECT a FROM t"),
        ("<think>maybe SELECT b FROM u</think>SELECT a FROM t", "SELECT a FROM t"),
        ("<think>maybe SELECT b FROM u</think>\n<answer>SELECT a FROM t</answer>", "SELECT a FROM t"),
        ("<think>still thinking SELECT b", ""),
        ("The answer is: SELECT a FROM t WHERE b = 'x;y'; -- done", "SELECT a FROM t WHERE b = 'x;y'"),
        ("Query: SELECT a FROM t\n\nThis lists every a.", "SELECT a FROM t"),
        ("We start with table t.\nSELECT a FROM t", "SELECT a FROM t"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("I cannot answer that.", ""),
        ("", ""),
    ],
)
def test_extract_sql(text: str, expected: str) -> None:
    assert extract_sql(text) == expected
