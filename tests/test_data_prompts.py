"""Prompt builders: SQL, reasoning, schema linking, revision, execution feedback, lengths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

import pytest

from nl2sql_lib.config import SchemaParams
from nl2sql_lib.data.example import Example
from nl2sql_lib.data.prompts import (
    execution_feedback,
    linking_answer,
    linking_messages,
    revision_messages,
    sql_answer,
    sql_messages,
)
from nl2sql_lib.data.schema import schema_text_for
from tests.fixtures.bird.build_fixture import build_bird_fixture

SCHEMA = "singer(singer_id, name, age)"


def _example(**overrides) -> Example:
    values = dict(
        question_id="q1", db_id="music", db_path="music.sqlite",
        question="How old is the oldest singer?", sql="SELECT max(age) FROM singer ;",
        schema_links={"tables": ["singer"], "columns": ["singer.age"]},
    )
    values.update(overrides)
    return Example(**values)


def test_sql_messages_are_system_then_user_with_schema_and_question():
    messages = sql_messages(_example(), SCHEMA)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert SCHEMA in user and "How old is the oldest singer?" in user
    assert "Hint" not in user
    assert user.index(SCHEMA) < user.index("Question:")


def test_evidence_goes_into_the_user_message_when_present():
    user = sql_messages(_example(evidence="old refers to max(age)"), SCHEMA)[1]["content"]
    assert "Hint: old refers to max(age)" in user
    assert user.index("Hint:") < user.index("Question:")


def test_sql_answer_is_one_statement_ending_with_a_semicolon():
    assert sql_answer(_example()) == "SELECT max(age) FROM singer;"


def test_reasoning_prompt_and_answer():
    system = sql_messages(_example(), SCHEMA, reasoning=True)[0]["content"]
    assert "<think>" in system
    answer = sql_answer(_example(reasoning="Take the max of age."), reasoning=True)
    assert answer == "<think>\nTake the max of age.\n</think>\nSELECT max(age) FROM singer;"
    # without teacher reasoning, a plan from the linking labels fills the think block
    fallback = sql_answer(_example(), reasoning=True)
    assert fallback.startswith("<think>\n") and "singer.age" in fallback
    assert fallback.endswith("</think>\nSELECT max(age) FROM singer;")


def test_linking_prompt_and_json_answer():
    messages = linking_messages(_example(), SCHEMA)
    assert "JSON" in messages[0]["content"] and SCHEMA in messages[1]["content"]
    assert json.loads(linking_answer(_example())) == {"tables": ["singer"], "columns": ["singer.age"]}
    assert json.loads(linking_answer(_example(schema_links=None))) == {"tables": [], "columns": []}


class _Kind(str, Enum):  # mirrors nl2sql_lib.sql.execute.ErrorKind's values
    OK = "ok"
    NO_SUCH_COLUMN = "no_such_column"


@dataclass
class _Result:  # the fields of nl2sql_lib.sql.execute.ExecResult that feedback reads
    rows: tuple | None
    columns: tuple = ()
    error: _Kind = _Kind.OK
    message: str = ""
    truncated: bool = False


def test_execution_feedback_texts():
    error = _Result(None, error=_Kind.NO_SUCH_COLUMN, message="no such column: agee")
    assert execution_feedback(error) == "error (no_such_column): no such column: agee"
    assert execution_feedback(_Result(())) == "no rows"
    rows = tuple((i, f"name{i}") for i in range(8))
    text = execution_feedback(_Result(rows, ("id", "name"), truncated=True), max_rows=2)
    assert text == "8+ row(s) (id, name): 0, name0; 1, name1; ..."


def test_revision_messages_carry_previous_sql_and_feedback():
    messages = revision_messages(_example(), SCHEMA, "SELECT agee FROM singer", "error (no_such_column): agee")
    user = messages[1]["content"]
    assert "Previous SQL:\nSELECT agee FROM singer" in user
    assert "Result: error (no_such_column): agee" in user
    assert user.index("Question:") < user.index("Previous SQL:")


@pytest.mark.slow
def test_prompts_fit_a_384_token_budget_with_smollm2s_tokenizer(tmp_path):
    from nl2sql_lib.models import load_tokenizer

    tokenizer = load_tokenizer("tiny:smollm2")
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    root = build_bird_fixture(tmp_path / "bird")
    db = root / "dev" / "dev_databases" / "debit_card" / "debit_card.sqlite"
    example = Example(
        "q", "debit_card", str(db),
        "What is the total amount spent at premium gas stations in the Czech Republic?",
        "SELECT SUM(T1.Amount) FROM transactions_1k AS T1 INNER JOIN gasstations AS T2 "
        "ON T1.GasStationID = T2.GasStationID WHERE T2.Country = 'CZE' AND T2.Segment = 'Premium'",
        evidence="Czech Republic refers to Country = 'CZE'; premium refers to Segment = 'Premium'",
    )
    schema_text = schema_text_for(example, SchemaParams(max_tokens=200), count_tokens=count)
    assert count(schema_text) <= 200
    messages = sql_messages(example, schema_text) + [{"role": "assistant", "content": sql_answer(example)}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert len(ids) <= 384
    # the fixed parts (system text, labels, chat markup) stay small
    empty = sql_messages(Example("q", "d", "d", "", ""), "")
    assert len(tokenizer.apply_chat_template(empty, tokenize=True, add_generation_prompt=True)["input_ids"]) < 40
