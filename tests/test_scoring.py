"""The reward model's input format: execution outcomes, their rendering, and one text for all.

Training (build_preference_dataset), pairwise evaluation (evaluate_pairs) and best-of-N
(systems.rm_scores -> RewardScorer.score with db_path) must feed the model the same token ids
for the same (prompt, SQL, database); a recording stand-in model checks that here without
training anything.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import types
from pathlib import Path

import pytest

from nl2sql_lib.scoring import (
    INPUT_FORMAT_FILE,
    PLAIN_FORMAT,
    InputFormat,
    RewardScorer,
    encode_conversation,
    execute_outcome,
    outcome_from_node,
    pair_outcomes,
    prepare_tokenizer,
    render_outcome,
    scored_text,
)

FEEDBACK = InputFormat(execution_feedback=True)


@pytest.fixture()
def shop_db(tmp_path) -> Path:
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL, note TEXT)")
        conn.executemany("INSERT INTO item VALUES (?, ?, ?, ?)", [
            (1, "apple", 1.0 / 3, None),
            (2, "a very long product name that goes on and on", 2.5, "x\ny"),
            (3, "cherry", 10.0, "z"),
        ])
    return db


@pytest.fixture(scope="module")
def tokenizer():
    from nl2sql_lib.models import load_tokenizer

    return prepare_tokenizer(load_tokenizer("tiny:smollm2"))


PROMPT = [{"role": "system", "content": "You write SQLite queries."},
          {"role": "user", "content": "Schema: item(id, name, price, note)\n\nQuestion: cheap items?"}]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def test_render_errors_show_class_and_sqlite_message(shop_db):
    assert render_outcome(execute_outcome(shop_db, "SELECT nope FROM item;", FEEDBACK), FEEDBACK) == \
        "-- result: error no_such_column: no such column: nope"
    assert render_outcome(execute_outcome(shop_db, "SELECT * FROM items", FEEDBACK), FEEDBACK) == \
        "-- result: error no_such_table: no such table: items"
    assert render_outcome(execute_outcome(shop_db, "SELECT name FROM item WHERE", FEEDBACK), FEEDBACK) == \
        "-- result: error syntax: incomplete input"
    assert render_outcome(execute_outcome(shop_db, "SELECT name FORM item", FEEDBACK), FEEDBACK) == \
        '-- result: error syntax: near "item": syntax error'
    missing = render_outcome(execute_outcome(shop_db.parent / "none.sqlite", "SELECT 1", FEEDBACK), FEEDBACK)
    assert missing.startswith("-- result: error missing_db")
    assert not (shop_db.parent / "none.sqlite").exists()  # the safe engine never creates a database


def test_render_rows_count_columns_and_first_rows(shop_db):
    outcome = execute_outcome(shop_db, "SELECT id, name FROM item WHERE price < 5 ORDER BY id", FEEDBACK)
    assert outcome["n_rows"] == 2 and outcome["columns"] == ["id", "name"]
    assert render_outcome(outcome, FEEDBACK) == (
        "-- result: 2 rows x 2 columns (id, name): 1 | apple; 2 | a very long product n..."
    )
    one = execute_outcome(shop_db, "SELECT COUNT(*) FROM item", FEEDBACK)
    assert render_outcome(one, FEEDBACK) == "-- result: 1 row x 1 column (COUNT(*)): 3"
    none = execute_outcome(shop_db, "SELECT name FROM item WHERE price > 99", FEEDBACK)
    assert render_outcome(none, FEEDBACK) == "-- result: 0 rows x 1 column (name)"
    # NULL, rounded floats, newlines inside values flattened; more rows than shown end in "..."
    values = execute_outcome(shop_db, "SELECT price, note FROM item ORDER BY id", FEEDBACK)
    assert render_outcome(values, FEEDBACK) == "-- result: 3 rows x 2 columns (price, note): 0.3333 | NULL; 2.5 | x y; ..."


def test_render_truncates_values_columns_rows_and_length(shop_db):
    small = InputFormat(execution_feedback=True, max_rows=2, preview_rows=1, preview_columns=2, value_chars=6,
                        max_chars=80)
    outcome = execute_outcome(shop_db, "SELECT name, id, price, note FROM item ORDER BY id DESC", small)
    assert outcome["truncated"] and outcome["n_rows"] == 2  # the row cap: "at least 2"
    assert render_outcome(outcome, small) == "-- result: 2+ rows x 4 columns (name, id, ...): cherry | 3 | ...; ..."
    wide = execute_outcome(shop_db, "SELECT " + ", ".join(f"name AS c{i}" for i in range(30)) + " FROM item", FEEDBACK)
    line = render_outcome(wide, FEEDBACK)
    assert len(line) <= FEEDBACK.max_chars and line.endswith("...")
    long_message = {"error": "other", "message": "m" * 500, "n_rows": None}
    assert render_outcome(long_message, FEEDBACK) == "-- result: error other: " + "m" * 97 + "..."
    # A few dozen tokens at most, whatever the result.
    assert len(line) <= 220


def test_scored_text_appends_the_outcome_only_in_the_feedback_format(shop_db):
    outcome = execute_outcome(shop_db, "SELECT nope FROM item", FEEDBACK)
    assert scored_text(" SELECT nope FROM item ;; ", outcome, PLAIN_FORMAT) == "SELECT nope FROM item;"
    assert scored_text("SELECT nope FROM item", outcome, FEEDBACK) == \
        "SELECT nope FROM item;\n-- result: error no_such_column: no such column: nope"
    with pytest.raises(ValueError, match="db_path"):
        scored_text("SELECT 1", None, FEEDBACK)


def test_outcome_is_the_same_with_or_without_the_semicolon(shop_db):
    assert execute_outcome(shop_db, "SELECT name FROM item;", FEEDBACK) == execute_outcome(shop_db, "SELECT name FROM item", FEEDBACK)
    assert execute_outcome(shop_db, "SELECT name FROM item;;", FEEDBACK)["error"] == "ok"


# ---------------------------------------------------------------------------------------------
# The format file
# ---------------------------------------------------------------------------------------------


def test_input_format_file_round_trip(tmp_path):
    assert InputFormat.read(tmp_path) == PLAIN_FORMAT  # an old model folder: prompt + SQL
    fmt = InputFormat(execution_feedback=True, preview_rows=3)
    fmt.write(tmp_path)
    saved = json.loads((tmp_path / INPUT_FORMAT_FILE).read_text())
    assert saved["name"] == "prompt+sql+execution" and saved["execution_feedback"] is True
    assert InputFormat.read(tmp_path) == fmt
    (tmp_path / INPUT_FORMAT_FILE).write_text(json.dumps({**saved, "later_knob": 1}))
    assert InputFormat.read(tmp_path) == fmt  # unknown keys of a same-version file are ignored
    (tmp_path / INPUT_FORMAT_FILE).write_text(json.dumps({**saved, "version": 99}))
    with pytest.raises(ValueError, match="newer"):
        InputFormat.read(tmp_path)


# ---------------------------------------------------------------------------------------------
# Stored outcomes
# ---------------------------------------------------------------------------------------------


def test_tree_node_failures_are_reused_exactly(shop_db):
    from nl2sql_lib.sql.judge import Judge
    from nl2sql_lib.tree.builder import judge_node
    from nl2sql_lib.tree.nodes import Node

    judge = Judge()
    for sql in ("SELECT nope FROM item", "SELECT * FROM items", "SELECT name FROM item WHERE"):
        node = Node(id=0, parent=None, depth=0, sql=sql)
        judge_node(node, judge, str(shop_db), "SELECT name FROM item", None)
        assert outcome_from_node(node.to_dict()) == execute_outcome(shop_db, sql + ";", FEEDBACK)
    ran = Node(id=1, parent=None, depth=0, sql="SELECT name FROM item")
    judge_node(ran, judge, str(shop_db), "SELECT name FROM item", None)
    assert outcome_from_node(ran.to_dict()) is None  # no column names stored: run again


def test_attach_execution_reuses_stores_and_executes(shop_db):
    from nl2sql_lib.train.reward_model import attach_execution

    nodes = {("q1", 5): {"id": 5, "sql": "SELECT nope FROM item", "error": "no_such_column",
                         "message": "no such column: nope"},
             ("q1", 0): {"id": 0, "sql": "SELECT name FROM item", "error": "ok", "message": ""}}
    stored = {"error": "syntax", "message": "stored", "n_rows": None}
    pairs = [
        {"prompt": PROMPT, "question_id": "q1", "chosen": "SELECT name FROM item;", "chosen_node": 0,
         "rejected": "SELECT nope FROM item;", "rejected_node": 5},
        {"prompt": PROMPT, "question_id": "q1", "chosen": "SELECT name FROM item;", "rejected": "SELECT 1;",
         "rejected_exec": stored},
    ]
    out, counts = attach_execution(pairs, FEEDBACK, databases={"q1": str(shop_db)}, nodes=nodes)
    assert counts == {"stored": 1, "reused_from_tree": 1, "executed": 1}  # the chosen SQL ran once
    assert out[0]["db_path"] == str(shop_db) and "db_path" not in pairs[0]  # copies
    assert out[0]["rejected_exec"] == execute_outcome(shop_db, "SELECT nope FROM item", FEEDBACK)
    assert out[0]["chosen_exec"]["n_rows"] == 3 and out[1]["rejected_exec"] is stored
    with pytest.raises(ValueError, match="no database"):
        attach_execution([{**pairs[0], "question_id": "q2"}], FEEDBACK, databases={}, nodes={})


# ---------------------------------------------------------------------------------------------
# One text for training, evaluation and best of N
# ---------------------------------------------------------------------------------------------


class RecordingModel:
    """Stands in for the sequence classifier: records the token ids of every scored row."""

    def __init__(self):
        import torch

        self.config = types.SimpleNamespace(pad_token_id=None)
        self.seen: list[list[int]] = []
        self._param = torch.nn.Parameter(torch.zeros(1))

    def eval(self):
        return self

    def parameters(self):
        return iter([self._param])

    def __call__(self, input_ids, attention_mask, use_cache=False):
        import torch

        for row, mask in zip(input_ids, attention_mask):
            self.seen.append(row[mask.bool()].tolist())
        return types.SimpleNamespace(logits=torch.zeros((len(input_ids), 1)))


def test_training_evaluation_and_best_of_n_read_the_same_text(shop_db, tokenizer):
    from nl2sql_lib.data.example import Example
    from nl2sql_lib.evaluate import systems as sysmod
    from nl2sql_lib.evaluate.reward_model import evaluate_pairs
    from nl2sql_lib.train.reward_model import attach_execution, build_preference_dataset

    example = Example("q1", "shop", str(shop_db), "Names of items cheaper than 5?", "SELECT name FROM item WHERE price < 5")
    system = sysmod.System("sft", "stage:sft", "sft")
    prompt = sysmod.build_messages([example], system.schema())[0]
    chosen, rejected = "SELECT name FROM item WHERE price < 5;", "SELECT nam FROM item WHERE price < 5;"
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "question_id": "q1", "db_path": str(shop_db)}

    # Training: the pairs as the stage prepares them (outcomes attached), then tokenized.
    attached, _ = attach_execution([pair], FEEDBACK)
    dataset, _ = build_preference_dataset(attached, tokenizer, max_length=512, use_margin=False, fmt=FEEDBACK)
    train_ids = [dataset[0]["chosen_ids"], dataset[0]["rejected_ids"]]
    # ... and straight from db_path (no stored outcomes): the same ids.
    direct, _ = build_preference_dataset([pair], tokenizer, max_length=512, use_margin=False, fmt=FEEDBACK)
    assert [direct[0]["chosen_ids"], direct[0]["rejected_ids"]] == train_ids
    text = tokenizer.decode(train_ids[1])
    assert "-- result: error no_such_column: no such column: nam" in text
    assert "-- result: 2 rows x 1 column (name): apple; a very long product n..." in tokenizer.decode(train_ids[0])

    # Pairwise evaluation, from the stored outcomes and from db_path alone.
    model = RecordingModel()
    scorer = RewardScorer(model, tokenizer, input_format=FEEDBACK, batch_size=1)
    for pairs in (attached, [pair]):
        model.seen.clear()
        evaluate_pairs(scorer, pairs)
        assert sorted(model.seen) == sorted(train_ids)

    # Best of N: 06_eval's call (systems.rm_scores passes the example's database).
    model.seen.clear()
    sysmod.rm_scores(scorer, [{"candidates": [chosen.rstrip(";"), "", rejected]}], [example], system)
    assert sorted(model.seen) == sorted(train_ids)

    # The plain format (a model without input_format.json) reads no outcome.
    plain = RewardScorer(RecordingModel(), tokenizer, batch_size=1)
    plain.score(prompt, [chosen], db_path=str(shop_db))
    assert plain.model.seen == [encode_conversation(tokenizer, prompt, chosen)[0]]
    assert "-- result" not in tokenizer.decode(plain.model.seen[0])


def test_feedback_scorer_without_a_database_warns_and_scores_the_sql_alone(tokenizer, caplog):
    scorer = RewardScorer(RecordingModel(), tokenizer, input_format=FEEDBACK)
    with caplog.at_level(logging.WARNING, logger="nl2sql_lib.scoring"):
        assert len(scorer.score(PROMPT, ["SELECT 1", "SELECT 2"])) == 2
    assert "pass db_path" in caplog.text
    assert scorer.model.seen[0] == encode_conversation(tokenizer, PROMPT, "SELECT 1")[0]
    with pytest.raises(ValueError, match="no execution outcome and no database"):
        scorer.score_conversations([PROMPT], ["SELECT 1"], db_paths=[None])
    with pytest.raises(ValueError, match="no execution outcome and no database"):
        pair_outcomes([{"prompt": PROMPT, "chosen": "SELECT 1", "rejected": "SELECT 2"}], FEEDBACK)


def test_pair_outcomes_prefer_stored_ones(shop_db):
    stored = {"error": "ok", "message": "", "n_rows": 7, "truncated": False, "columns": ["a"], "rows": [["1"]]}
    pairs = [{"prompt": PROMPT, "chosen": "SELECT name FROM item", "rejected": "SELECT x", "db_path": str(shop_db),
              "chosen_exec": stored}]
    chosen, rejected = pair_outcomes(pairs, FEEDBACK)
    assert chosen == [stored] and rejected[0]["error"] == "no_such_column"
    assert pair_outcomes(pairs, PLAIN_FORMAT) == ([None], [None])


def test_reward_model_scoring_loads_onto_the_local_ranks_gpu(monkeypatch):
    """06_eval's and ask's RewardScorer scored on the CPU of a GPU machine; now its model goes
    to cuda:{LOCAL_RANK} (in fp32 by default: close scores must not be swapped by rounding)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from nl2sql_lib.config import ModelParams
    from nl2sql_lib.scoring import load_sequence_classifier
    from tests.test_hardware import fake_gpus

    real = AutoModelForSequenceClassification.from_pretrained.__func__
    seen = {}

    def recording(cls, path, **kwargs):
        seen.update(kwargs)
        return real(cls, path, num_labels=1, dtype=torch.float32)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", classmethod(recording))
    fake_gpus(monkeypatch, "Tesla T4", 7, 5, count=2, local_rank=1, world_size=2)
    load_sequence_classifier(ModelParams(spec="tiny:smollm2", dtype="float32"))
    assert seen["device_map"] == {"": 1} and seen["dtype"] == torch.float32
