"""Reward functions on hand-made completions: right, wrong, failing, malformed, slow, chat and plain."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import pytest

from nl2sql_lib.config import RewardWeights
from nl2sql_lib.train.grpo import RewardModelReward
from nl2sql_lib.rewards import (
    REWARD_NAMES,
    RewardFunction,
    ExecutionScorer,
    build_rewards,
    completion_text,
    format_ok,
)

GOLD = "SELECT name FROM singer WHERE country = 'France' ORDER BY age"
RIGHT = "SELECT name FROM singer WHERE country = 'France';"
WRONG = "SELECT name FROM singer WHERE country = 'Spain'"
FAILING = "SELECT nickname FROM singer WHERE country = 'France'"
MALFORMED = "Sure! The singers from France are the ones you want to look at."
# 2000^3 rows: runs for minutes unless the time limit stops it.
SLOW = "SELECT count(*) FROM numbers AS a, numbers AS b, numbers AS c WHERE a.n + b.n + c.n = -1"


def make_db(path: Path) -> Path:
    """A small database: singers and concerts, plus a 2000-row table for runaway joins."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(singer_id),
                              year INTEGER, venue TEXT);
        CREATE TABLE numbers (n INTEGER);
        INSERT INTO singer VALUES (1, 'Ana', 'France', 30), (2, 'Ben', 'Spain', 41),
                                  (3, 'Cleo', 'France', 25), (4, 'Dan', 'Italy', 52);
        INSERT INTO concert VALUES (1, 1, 2014, 'Arena'), (2, 1, 2015, 'Hall'), (3, 2, 2015, 'Park'),
                                   (4, 4, 2016, 'Arena');
        """
    )
    conn.executemany("INSERT INTO numbers VALUES (?)", [(i,) for i in range(2000)])
    conn.commit()
    conn.close()
    return path


@pytest.fixture()
def db(tmp_path: Path) -> str:
    return str(make_db(tmp_path / "music.sqlite"))


def call(name: str, completions, db: str, gold: str = GOLD, scorer: ExecutionScorer | None = None, **extra):
    func = RewardFunction(name, scorer or ExecutionScorer(timeout=1.0), reasoning=extra.pop("reasoning", False))
    n = len(completions)
    return func(prompts=[[{"role": "user", "content": "q"}]] * n, completions=completions,
                db_path=[db] * n, sql=[gold] * n, **extra)


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---- execution / executable -------------------------------------------------------------------


def test_execution_and_executable_on_right_wrong_failing_malformed(db):
    completions = [RIGHT, WRONG, FAILING, MALFORMED, ""]
    assert call("execution", completions, db) == [1.0, 0.0, 0.0, 0.0, 0.0]
    # executable: valid SQL that runs earns it even when wrong; failing or no SQL does not
    assert call("executable", completions, db) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_chat_and_plain_completions_score_the_same(db):
    texts = [RIGHT, WRONG, FAILING, MALFORMED, f"```sql\n{RIGHT}\n```"]
    for name in REWARD_NAMES:
        plain = call(name, texts, db)
        conversational = call(name, [chat(t) for t in texts], db)
        assert plain == conversational, name
    assert call("execution", [chat(f"```sql\n{RIGHT}\n```")], db) == [1.0]


def test_completion_text_shapes():
    assert completion_text("SELECT 1") == "SELECT 1"
    assert completion_text(chat("SELECT 2")) == "SELECT 2"
    assert completion_text({"role": "assistant", "content": [{"type": "text", "text": "SELECT 3"}]}) == "SELECT 3"
    assert completion_text(None) == ""


def test_slow_candidate_is_cut_short_and_scores_zero(db):
    scorer = ExecutionScorer(timeout=2.0, min_timeout=0.05, slow_factor=20)
    start = time.perf_counter()
    assert call("execution", [SLOW, RIGHT], db, scorer=scorer) == [0.0, 1.0]
    elapsed = time.perf_counter() - start
    # the limit is ~20x the gold's milliseconds, floored at 50 ms: the query is cut long before
    # the 2 s hard limit would stop it (a loose bound: this is behaviour, not a speed target)
    assert elapsed < 1.9, elapsed
    assert scorer.last_stats.timeouts == 1
    assert call("executable", [SLOW, RIGHT], db, scorer=scorer) == [0.0, 1.0]


def test_batch_budget_bounds_a_batch_of_runaways(db):
    # Distinct runaway queries (identical ones would be run once): each would use 0.3 s, but
    # once 0.4 s are spent the rest get only min_timeout.
    slow = [SLOW.replace("-1", str(-i)) for i in range(1, 9)]
    scorer = ExecutionScorer(timeout=0.3, slow_factor=1000, min_timeout=0.02, batch_budget=0.4)
    scores = call("execution", slow + [RIGHT], db, scorer=scorer)
    assert scores == [0.0] * 8 + [1.0]
    assert scorer.last_stats.budget_exhausted  # the remaining runaways got only min_timeout


def test_gold_runs_once_and_candidates_once_per_batch(db):
    scorer = ExecutionScorer(timeout=1.0)
    funcs, _ = build_rewards(RewardWeights(execution=1.0, executable=0.1), scorer=scorer)
    batch = [RIGHT, RIGHT, WRONG, chat(RIGHT), FAILING, WRONG, RIGHT, MALFORMED]
    kwargs = dict(db_path=[db] * 8, sql=[GOLD] * 8)
    for func in funcs:
        func(prompts=[None] * 8, completions=batch, **kwargs)
    assert scorer.judge.gold_executions == 1
    # 3 distinct SQL strings ran (right, wrong, failing); the second function reused them
    assert scorer.last_stats.executed_queries == 3
    funcs[0](prompts=[None] * 8, completions=[WRONG] * 8, **kwargs)  # a new batch
    assert scorer.judge.gold_executions == 1


def test_gold_that_fails_leaves_the_question_unscored(db):
    assert call("execution", [RIGHT], db, gold="SELECT nope FROM singer") == [None]
    assert call("executable", [RIGHT], db, gold="SELECT nope FROM singer") == [1.0]


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.sqlite"):
        call("execution", [RIGHT], str(tmp_path / "missing.sqlite"))


# ---- dataset columns ---------------------------------------------------------------------------


def test_rewards_read_dataset_columns_and_ignore_trl_extras(db, tmp_path):
    other = str(make_db(tmp_path / "other.sqlite"))
    with sqlite3.connect(other) as conn:
        conn.execute("UPDATE singer SET country = 'Spain' WHERE name = 'Cleo'")
    hard_coded = "SELECT name FROM singer WHERE name IN ('Ana', 'Cleo')"  # right on `db` only
    func = RewardFunction("execution", ExecutionScorer(timeout=1.0))
    logged = {}
    scores = func(
        prompts=["p"] * 3, completions=[hard_coded, hard_coded, RIGHT], completion_ids=[[1], [2], [3]],
        db_path=[db, other, db], gold=[GOLD, GOLD, WRONG], db_id=["music"] * 3,
        trainer_state=None, log_extra=lambda *a: None, log_metric=lambda k, v: logged.setdefault(k, v),
    )
    assert scores == [1.0, 0.0, 0.0]  # each completion is judged on its own row's database and gold
    assert "sql/seconds" in logged and "sql/timeout_rate" in logged


def test_missing_column_names_what_is_needed(db):
    func = RewardFunction("execution", ExecutionScorer(timeout=1.0))
    with pytest.raises(KeyError, match="db_path"):
        func(prompts=["p"], completions=[RIGHT], sql=[GOLD], db_id=["music"])
    with pytest.raises(KeyError, match="'sql'"):
        func(prompts=["p"], completions=[RIGHT], db_path=[db])


# ---- partial, syntax, format ------------------------------------------------------------------


def test_partial_is_continuous_and_order_insensitive(db):
    gold = "SELECT name, age FROM singer WHERE country = 'France' AND age > 20"
    scores = call("partial", [
        "SELECT age, name FROM singer WHERE age > 20 AND country = 'France'",  # reordered
        "SELECT name, age FROM singer WHERE country = 'Spain' AND age > 20",   # one condition off
        "SELECT venue FROM concert",                                           # unrelated
        MALFORMED,
    ], db, gold=gold)
    assert scores[0] == 1.0
    assert 0.0 < scores[1] < 1.0
    assert scores[2] < scores[1]
    assert scores[3] == 0.0


def test_syntax_reward(db):
    assert call("syntax", [RIGHT, FAILING, "SELECT FROM WHERE", MALFORMED, chat(WRONG)], db) == [1.0, 1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("text, ok", [
    ("<think>France singers, by age.</think>\nSELECT name FROM singer;", True),
    ("<think>\nplan\n</think>\n```sql\nSELECT name FROM singer\n```", True),
    ("SELECT name FROM singer", False),                                       # no think block
    ("<think></think>SELECT name FROM singer", False),                        # empty thought
    ("<think>a</think>SELECT name FROM singer; SELECT age FROM singer;", False),  # two answers
    ("<think>a</think>Here it is: SELECT name FROM singer", False),          # chatter
    ("<think>a</think>SELECT name FROM singer<think>b</think>", False),
    ("<think>a</think>", False),
])
def test_format_reasoning(text, ok):
    assert format_ok(text, reasoning=True) is ok


@pytest.mark.parametrize("text, ok", [
    ("SELECT name FROM singer;", True),
    ("```sql\nSELECT name FROM singer\n```", True),
    ("The query is SELECT name FROM singer", False),
    ("SELECT name FROM singer; SELECT 1;", False),
    ("<think>a</think>SELECT name FROM singer", False),
])
def test_format_plain(text, ok):
    assert format_ok(text, reasoning=False) is ok


def test_format_reward_function_uses_the_format(db):
    good = "<think>x</think>\nSELECT name FROM singer;"
    assert call("format", [good, chat(good), RIGHT], db, reasoning=True) == [1.0, 1.0, 0.0]
    assert call("format", [good, RIGHT], db, reasoning=False) == [0.0, 1.0]


# ---- building from parameters -------------------------------------------------------------


def test_build_rewards_from_weights_has_distinct_names_for_trl():
    from trl.trainer.utils import get_callable_name

    funcs, weights = build_rewards(RewardWeights(execution=1.0, executable=0.1, partial=0.3, syntax=0.0, format=0.2))
    assert [get_callable_name(f) for f in funcs] == ["execution", "executable", "partial", "format"]
    assert weights == [1.0, 0.1, 0.3, 0.2]
    assert len({id(f.scorer) for f in funcs if f.name in ("execution", "executable")}) == 1
    with pytest.raises(ValueError, match="every reward weight is 0"):
        build_rewards(RewardWeights(execution=0, executable=0, partial=0))
    with pytest.raises(ValueError, match="unknown reward"):
        build_rewards({"execution": 1.0, "style": 1.0})


def test_module_level_functions_have_their_names(db):
    from nl2sql_lib import rewards

    for name in REWARD_NAMES:
        func = getattr(rewards, f"{name}_reward")
        assert func.__name__ == name
    assert rewards.execution_reward(prompts=None, completions=[RIGHT], db_path=[db], sql=[GOLD]) == [1.0]


# ---- the trained reward model as a reward ------------------------------------------------------


class FakeScorer:
    """Stands in for nl2sql_lib.scoring.RewardScorer: scores by length, records what it saw."""

    def __init__(self):
        self.calls = []

    def score_conversations(self, prompts, sqls, *, db_paths=None, outcomes=None):
        self.calls.append((prompts, sqls, db_paths))
        return [len(sql) / 10 - 4.0 for sql in sqls]


def test_reward_model_reward_scores_the_sql_with_its_prompt_and_database(db):
    scorer = FakeScorer()
    reward = RewardModelReward(scorer=scorer)
    prompt = [{"role": "user", "content": "Singers from France?"}]
    completions = [
        [{"role": "assistant", "content": RIGHT}],  # conversational
        MALFORMED,  # no SQL: 0, never shown to the model
        "```sql\n" + WRONG + "\n```",
    ]
    values = reward([prompt] * 3, completions, db_path=[db] * 3, sql=[GOLD] * 3)
    prompts, sqls, db_paths = scorer.calls[0]
    assert sqls == [RIGHT.rstrip(";"), WRONG] and db_paths == [db, db] and prompts == [prompt, prompt]
    expected = [1 / (1 + math.exp(-(len(sql) / 10 - 4.0))) for sql in sqls]
    assert values == [pytest.approx(expected[0]), 0.0, pytest.approx(expected[1])]
    assert all(0.0 < v < 1.0 for v in (values[0], values[2]))
    assert reward.__name__ == "reward_model"
    # a plain-text prompt becomes one user message; the database column is required
    reward(["Singers?"], [RIGHT], db_path=[db])
    assert scorer.calls[-1][0] == [[{"role": "user", "content": "Singers?"}]]
    with pytest.raises(KeyError, match="reward 'reward_model' needs the dataset column 'db_path'"):
        reward([prompt], [RIGHT])


def test_build_rewards_appends_the_reward_model_when_weighted():
    model_reward = RewardModelReward(scorer=FakeScorer())
    funcs, weights = build_rewards(RewardWeights(execution=1.0, executable=0, partial=0, reward_model=0.5),
                                   reward_model=model_reward)
    assert [f.__name__ for f in funcs] == ["execution", "reward_model"] and weights == [1.0, 0.5]
    assert funcs[-1] is model_reward
    with pytest.raises(ValueError, match="no reward model was given: set the parameter reward_model"):
        build_rewards(RewardWeights(reward_model=0.5))
    # weight 0: the model is not used even when given
    funcs, _ = build_rewards(RewardWeights(), reward_model=model_reward)
    assert model_reward not in funcs


def test_grpo_params_name_the_missing_reward_model():
    from nl2sql_lib.config import ParamsError, parse_params

    with pytest.raises(ParamsError, match="rewards.reward_model > 0 needs the parameter reward_model"):
        parse_params("grpo", {"profile": "smoke", "rewards": {"execution": 1.0, "reward_model": 0.5}})
    cfg = parse_params("grpo", {"profile": "smoke", "rewards": {"reward_model": 0.5}, "reward_model": "stage:reward_model"})
    assert cfg.rewards.reward_model == 0.5 and cfg.reward_model == "stage:reward_model"


# ---- the registry: names, weights and functions cannot drift -------------------------------------


def test_every_weight_field_names_a_registered_reward_and_back():
    """RewardWeights' fields and rewards.REWARDS (+ the reward model) are the same names, so a
    reward without a weight default, or a weight without a reward, cannot slip in."""
    from nl2sql_lib import rewards

    assert set(RewardWeights.model_fields) == set(rewards.reward_weight_names())
    assert REWARD_NAMES == tuple(rewards.REWARDS)
    for name in REWARD_NAMES:
        assert RewardFunction(name).name == name  # every registered name builds


def test_a_weight_field_without_a_reward_fails_validation():
    class Drifted(RewardWeights):  # a weight added to the model, no function registered
        brevity: float = 0.0

    with pytest.raises(ValueError, match=r"brevity.*no reward in nl2sql_lib.rewards.REWARDS"):
        Drifted()


def test_unknown_reward_names_stop_at_validation():
    from nl2sql_lib.config import ParamsError, parse_params

    with pytest.raises(ValueError, match="unknown reward 'style'"):
        RewardWeights.model_validate({"execution": 1.0, "style": 0.5})
    with pytest.raises(ParamsError, match="style"):
        parse_params("grpo", {"rewards": {"style": 0.5}})
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        RewardFunction("nope")


def test_a_new_reward_is_one_function_and_one_registry_line(db, monkeypatch):
    """Register a function (one line), weight it from parameters, and GRPO's rewards use it."""
    from nl2sql_lib import rewards
    from nl2sql_lib.config import parse_params

    def brevity(ctx, prompts, completions, **kwargs):
        return [1.0 if len(completion_text(c)) <= 60 else 0.0 for c in completions]

    monkeypatch.setitem(rewards.REWARDS, "brevity", brevity)  # the one registry line

    cfg = parse_params("grpo", {"rewards": {"execution": 1.0, "executable": 0.0, "partial": 0.0, "brevity": 0.25}})
    funcs, weights = build_rewards(cfg.rewards)
    assert [f.__name__ for f in funcs] == ["execution", "brevity"] and weights == [1.0, 0.25]
    completions = [RIGHT, MALFORMED + " " + MALFORMED]
    values = funcs[1](prompts=None, completions=completions, db_path=[db] * 2, sql=[GOLD] * 2)
    assert values == [1.0, 0.0]
    # without a weight it stays off, like any reward weighted 0
    assert "brevity" not in [f.__name__ for f in build_rewards(RewardWeights())[0]]
