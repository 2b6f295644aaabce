"""06_eval: systems, predictions cache, best of N, metrics.json and the report.

Generation is scripted (a fake generator answers each question with fixed SQL), so every EX
below is known exactly; one slow test runs the real tiny model end to end.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nl2sql_lib.config import EvalParams, load_params
from nl2sql_lib.data.example import Example, read_examples, write_examples
from nl2sql_lib.evaluate import systems as sysmod
from nl2sql_lib.evaluate.stage import (
    EvalStageError,
    add_statistics,
    comparison_plan,
    run_eval,
    selection_summary,
)
from nl2sql_lib.io import read_json, read_jsonl, write_json
from nl2sql_lib.runs import MissingStageOutput, StageRun
from nl2sql_lib.sql.judge import Judge

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "params" / "smoke" / "eval.yaml"

# ---------------------------------------------------------------------------------------------
# A small database and six questions with known answers
# ---------------------------------------------------------------------------------------------

GOLD = {
    "q1": ("How many items are there?", "SELECT count(*) FROM items", "simple"),
    "q2": ("List the names of all items.", "SELECT name FROM items", "simple"),
    "q3": ("What is the price of the pen?", "SELECT price FROM items WHERE name = 'pen'", "simple"),
    "q4": ("Which items cost more than 2?", "SELECT name FROM items WHERE price > 2", "moderate"),
    "q5": ("What is the total price per category?",
           "SELECT category, sum(price) FROM items GROUP BY category", "moderate"),
    "q6": ("Which category has the most items?",
           "SELECT category FROM items GROUP BY category ORDER BY count(*) DESC LIMIT 1", "challenging"),
}

WRONG = "SELECT name FROM items WHERE price < 0"          # runs, answers nothing: wrong
BROKEN = "SELECT name, FROM items"                      # syntax error
NO_TABLE = "SELECT * FROM nowhere"                        # unknown table


def _make_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, category TEXT)")
    conn.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?)",
        [(1, "pen", 1.5, "office"), (2, "desk", 120.0, "furniture"), (3, "lamp", 25.0, "furniture"),
         (4, "paper", 4.0, "office"), (5, "clip", 0.5, "office")],
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture()
def run_cfg(tmp_path: Path) -> EvalParams:
    """A run with data/dev.jsonl over one small database, and finished (fake) sft/grpo stages."""
    db = _make_db(tmp_path / "dbs" / "shop" / "shop.sqlite")
    examples = [
        Example(question_id=qid, db_id="shop", db_path=str(db), question=q, sql=sql, difficulty=d)
        for qid, (q, sql, d) in GOLD.items()
    ]
    # The scripted generator stands in for plain systems; constrained ones have their own test.
    cfg = load_params("eval", SMOKE, output_root=str(tmp_path / "outputs"), run="t", plots=False,
                      systems=["base", "sft", "grpo"])
    write_examples(cfg.run_dir / "data" / "dev.jsonl", examples)
    for stage in ("sft", "grpo"):
        _finish_fake_stage(cfg, stage)
    return cfg


def _finish_fake_stage(cfg: EvalParams, stage: str, marker: str = "v1") -> None:
    (cfg.run_dir / stage / "adapter").mkdir(parents=True, exist_ok=True)
    write_json(cfg.run_dir / stage / "manifest.json", {"stage": stage, "marker": marker})


# ---------------------------------------------------------------------------------------------
# Scripted generation and reward model
# ---------------------------------------------------------------------------------------------

# What each system answers greedily, per question.
GREEDY = {
    "base": {"q1": BROKEN, "q2": GOLD["q2"][1], "q3": NO_TABLE, "q4": WRONG, "q5": "", "q6": WRONG},
    "sft": {"q1": GOLD["q1"][1], "q2": GOLD["q2"][1], "q3": WRONG, "q4": WRONG,
            "q5": GOLD["q5"][1], "q6": BROKEN},
    "grpo": {"q1": GOLD["q1"][1], "q2": GOLD["q2"][1], "q3": GOLD["q3"][1], "q4": WRONG,
             "q5": GOLD["q5"][1], "q6": WRONG},
}
# sft's three samples per question (the pool is greedy + these).
Q3_RIGHT_REWRITTEN = "SELECT price FROM items WHERE name = 'pen' AND id = 1"
SAMPLES = {
    "q1": [WRONG, GOLD["q1"][1], BROKEN],                     # vote: count(*) (2 of 3 runnable)
    "q2": [GOLD["q2"][1], WRONG, GOLD["q2"][1]],
    "q3": [WRONG, Q3_RIGHT_REWRITTEN, WRONG],                  # vote: WRONG wins 3 to 1; oracle: right
    "q4": [WRONG, "SELECT name FROM items WHERE price > 2.0", NO_TABLE],   # vote: WRONG 2 to 1
    "q5": [GOLD["q5"][1], GOLD["q5"][1], WRONG],
    "q6": [BROKEN, BROKEN, BROKEN],                            # nothing right anywhere
}


class ScriptedGenerator:
    """Answers each prompt with fixed text, found by the question inside the user message."""

    def __init__(self, system: str, calls: list):
        self.system = system
        self.calls = calls

    def _qid(self, messages: list[dict]) -> str:
        user = "\n".join(m["content"] for m in messages if m["role"] == "user")
        hits = [qid for qid, (q, _, _) in GOLD.items() if q in user]
        assert len(hits) == 1, f"the prompt should hold exactly one known question: {user!r}"
        assert "CREATE TABLE" in user or "items" in user, "the prompt should hold the schema"
        return hits[0]

    def generate(self, messages_batch, *, n=1, temperature=0.0, max_new_tokens=128):
        self.calls.append((self.system, len(messages_batch), n, temperature))
        out = []
        for messages in messages_batch:
            qid = self._qid(messages)
            if temperature == 0.0:
                # Wrap in a fence as a chatty model would: extraction must find the SQL.
                out.append([f"Here is the query:\n```sql\n{GREEDY[self.system][qid]}\n```"] * n)
            else:
                out.append(SAMPLES[qid][:n])
        return out


def scripted_factory(calls: list):
    return lambda system, cfg: ScriptedGenerator(system.name, calls)


class ScriptedScorer:
    """A 'reward model' that likes SQL with a WHERE clause comparing > and dislikes broken SQL."""

    def __init__(self):
        self.calls = 0

    def score(self, prompt_messages, sql_list, db_path=None):
        self.calls += 1
        assert prompt_messages and prompt_messages[-1]["role"] == "user"
        assert db_path and Path(db_path).is_file()  # best-of-N passes the candidates' database
        return [(2.0 if ">" in sql or "id = 1" in sql else 0.0) - (5.0 if sql == BROKEN else 0.0)
                for sql in sql_list]


def _bon_cfg(cfg: EvalParams, **changes) -> EvalParams:
    """Best of 4, nothing optional, no plots (matplotlib is slow) unless a test asks."""
    values = {**cfg.model_dump(), "num_candidates": 4, "optional_systems": [], "plots": False, **changes}
    return EvalParams.model_validate(values)


def _run(cfg, calls=None, scorer=None):
    calls = [] if calls is None else calls
    stage = StageRun(cfg, "eval").start()
    factory = scripted_factory(calls)
    metrics = run_eval(cfg, stage, generator_factory=factory,
                       scorer_factory=(lambda c: scorer) if scorer else None, progress=False)
    return metrics, stage


def _finish_fake_reward_model(cfg: EvalParams) -> None:
    _finish_fake_stage(cfg, "reward_model")


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_exact_metrics_for_known_predictions(run_cfg):
    cfg = _bon_cfg(run_cfg, plots=True)
    _finish_fake_reward_model(cfg)
    scorer = ScriptedScorer()
    metrics, stage = _run(cfg, scorer=scorer)

    dev = metrics["dev"]
    assert set(dev) == {"base/greedy", "sft/greedy", "grpo/greedy",
                        "sft/vote@4", "sft/rm@4", "sft/rm_vote@4", "sft/oracle@4"}
    # base: only q2 right; sft: q1 q2 q5; grpo: q1 q2 q3 q5.
    assert dev["base/greedy"]["n"] == 6
    assert dev["base/greedy"]["ex"] == pytest.approx(1 / 6)
    assert dev["sft/greedy"]["ex"] == pytest.approx(3 / 6)
    assert dev["grpo/greedy"]["ex"] == pytest.approx(4 / 6)
    # by difficulty: simple q1-q3, moderate q4-q5, challenging q6
    grpo = dev["grpo/greedy"]["by_difficulty"]
    assert grpo["simple"] == {**grpo["simple"], "n": 3, "ex": pytest.approx(1.0)}
    assert grpo["moderate"]["n"] == 2 and grpo["moderate"]["ex"] == pytest.approx(0.5)
    assert grpo["challenging"]["ex"] == 0.0
    # base's misses: one syntax error, one unknown table, one empty answer, two wrong results
    errors = dev["base/greedy"]["errors"]
    assert errors.get("syntax") == 1 and errors.get("no_such_table") == 1
    assert errors.get("empty") == 1

    # Pools (greedy first): q1 [right, WRONG, right, BROKEN] q2 [right, right, WRONG, right]
    # q3 [WRONG, WRONG, right', WRONG] q4 [WRONG, WRONG, right, NO_TABLE]
    # q5 [right, right, right, WRONG] q6 [BROKEN x4]
    assert dev["sft/oracle@4"]["ex"] == pytest.approx(5 / 6)        # all but q6
    assert dev["sft/vote@4"]["ex"] == pytest.approx(3 / 6)          # q1 q2 q5 (q3, q4: WRONG wins)
    assert dev["sft/rm@4"]["ex"] == pytest.approx(5 / 6)            # the scorer finds q3 and q4
    # rm_vote: the scorer's 2.0 weighs sigmoid(2) = 0.88 and its 0.0 weighs 0.5, so in q3 and q4
    # the right lone candidate loses to WRONG's 3 x 0.5 and 2 x 0.5: q1 q2 q5 as the plain vote
    assert dev["sft/rm_vote@4"]["ex"] == pytest.approx(3 / 6)
    assert scorer.calls == 6  # one scoring serves rm and rm_vote

    # metrics.json holds exactly what run_eval returned; the manifest is the notebook's job.
    assert read_json(stage.dir / "metrics.json") == json.loads(json.dumps(metrics))
    selection = selection_summary(metrics, 4)["dev"]["sft"]
    assert selection["headroom"] == pytest.approx(2 / 6, abs=1e-4)
    assert selection["rm_recovered"] == pytest.approx(1.0)
    assert selection["vote_recovered"] == pytest.approx(0.0)
    assert selection["rm_vote"] == pytest.approx(3 / 6) and selection["rm_vote_recovered"] == pytest.approx(0.0)

    report = (stage.dir / "report.md").read_text()
    for key in dev:
        assert key in report
    assert "headroom" in report
    assert (stage.dir / "plots" / "dev_ex.png").is_file()            # EX overall and by difficulty
    assert (stage.dir / "plots" / "best_of_n.png").is_file()
    assert report.index("## Run") < report.index("## dev") < report.index("## Best of 4")

    rows = read_jsonl(stage.dir / "predictions_sft.jsonl")
    assert [r["question_id"] for r in rows] == list(GOLD)
    assert rows[0]["pred_sql"] == GOLD["q1"][1]                       # extracted from the fence
    assert rows[2]["candidates"] == [WRONG, WRONG, Q3_RIGHT_REWRITTEN, WRONG]
    assert rows[2]["selected"]["oracle@4"]["correct"] is True
    assert rows[2]["selected"]["greedy"]["correct"] is False
    assert len(read_jsonl(stage.dir / "predictions_base.jsonl")) == 6
    assert "candidates" not in read_jsonl(stage.dir / "predictions_base.jsonl")[0]


def test_metrics_json_shape(run_cfg):
    metrics, stage = _run(run_cfg)
    on_disk = read_json(stage.dir / "metrics.json")
    assert list(on_disk) == ["dev"]
    for key, entry in on_disk["dev"].items():
        system, strategy = key.split("/")
        assert system in {"base", "sft", "grpo"} and strategy in {"greedy", "vote@2", "oracle@2"}
        assert {"n", "ex", "by_difficulty", "errors"} <= set(entry)
        assert isinstance(entry["ex"], float) and 0.0 <= entry["ex"] <= 1.0
        assert sum(level["n"] for level in entry["by_difficulty"].values()) == entry["n"] == 6


def test_every_ex_carries_its_wilson_interval_and_n(run_cfg):
    cfg = _bon_cfg(run_cfg)
    metrics, stage = _run(cfg)
    dev = read_json(stage.dir / "metrics.json")["dev"]
    # base 1 of 6, sft 3 of 6, grpo 4 of 6, the oracle 5 of 6 (see the test above)
    for key, (k, low, high) in {"base/greedy": (1, 0.0301, 0.5635), "sft/greedy": (3, 0.1876, 0.8124),
                                "grpo/greedy": (4, 0.3, 0.9032), "sft/oracle@4": (5, 0.4365, 0.9699)}.items():
        assert dev[key]["n"] == 6 and dev[key]["ex"] == pytest.approx(k / 6)
        assert dev[key]["ex_ci"] == pytest.approx([low, high], abs=1e-4), key
    grpo = dev["grpo/greedy"]
    assert grpo["by_difficulty"]["simple"]["ex_ci"] == pytest.approx([0.4385, 1.0], abs=1e-4)      # 3 of 3
    assert grpo["by_difficulty"]["challenging"]["ex_ci"] == pytest.approx([0.0, 0.7935], abs=1e-4)  # 0 of 1
    assert grpo["by_difficulty"]["moderate"]["ex_ci"] == pytest.approx([0.0945, 0.9055], abs=1e-4)  # 1 of 2
    assert grpo["by_db"]["shop"]["ex_ci"] == grpo["ex_ci"]

    report = (stage.dir / "report.md").read_text()
    assert "| base/greedy | 6 | 16.7 | [3.0, 56.4] |" in report
    assert "| grpo/greedy | 100.0 [43.9, 100.0] (3) | 50.0 [9.5, 90.5] (2) | 0.0 [0.0, 79.3] (1) |" in report
    # the best-of-N table: n, then each strategy's EX with its interval
    assert "| dev | sft | 6 | 50.0 [18.8, 81.2] | 50.0 [18.8, 81.2] | - | - | 83.3 [43.6, 97.0] |" in report


def test_paired_comparisons_in_metrics_json_and_report(run_cfg):
    cfg = _bon_cfg(run_cfg)
    _finish_fake_reward_model(cfg)
    metrics, stage = _run(cfg, scorer=ScriptedScorer())
    dev = read_json(stage.dir / "metrics.json")["dev"]
    found = {(before, after): c for after, m in dev.items() for before, c in m.get("comparisons", {}).items()}
    assert list(found) == [
        ("base/greedy", "sft/greedy"), ("sft/greedy", "sft/vote@4"), ("sft/greedy", "sft/rm@4"),
        ("sft/greedy", "sft/rm_vote@4"), ("sft/greedy", "sft/oracle@4"), ("sft/greedy", "grpo/greedy"),
    ]
    # base -> sft: q1 and q5 gained, nothing lost: +2/6, McNemar p = 2 * 0.5^2
    sft = found[("base/greedy", "sft/greedy")]
    assert (sft["n"], sft["gained"], sft["lost"]) == (6, 2, 0)
    assert sft["difference"] == pytest.approx(2 / 6) and sft["p_value"] == pytest.approx(0.5)
    assert sft["difference_ci"][0] >= 0.0 and sft["difference_ci"][1] <= 1.0 and not sft["significant"]
    assert sft["sentence"].endswith("2 gained and 0 lost; exact McNemar p = 0.5: within noise at 0.05.")
    # sft -> grpo: q3 gained: p = 1
    grpo = found[("sft/greedy", "grpo/greedy")]
    assert (grpo["gained"], grpo["lost"], grpo["p_value"]) == (1, 0, 1.0)
    # the vote picks exactly greedy's verdicts here: identical, p = 1, interval [0, 0]
    vote = found[("sft/greedy", "sft/vote@4")]
    assert (vote["gained"], vote["lost"], vote["difference"], vote["difference_ci"], vote["p_value"]) == (
        0, 0, 0.0, [0.0, 0.0], 1.0)
    # the oracle and the reward model both add q3 and q4
    for key in ("sft/oracle@4", "sft/rm@4"):
        c = found[("sft/greedy", key)]
        assert (c["gained"], c["lost"], c["p_value"]) == (2, 0, pytest.approx(0.5))

    report = (stage.dir / "report.md").read_text()
    section = report[report.index("### Paired comparisons"):report.index("### EX by difficulty")]
    assert "| sft/greedy | base/greedy | 6 | +33.3 [" in section and "| 2 | 0 | 0.5 | within noise |" in section
    assert "- sft/vote@4 against sft/greedy: the same verdict on all 6 questions, no difference (p = 1)." in section
    assert "No difference here is significant at 0.05: all are within noise." in section


def _scored(verdicts: dict[str, bool]) -> list[dict]:
    return [{"question_id": qid, "db_id": "shop", "difficulty": "simple", "correct": ok} for qid, ok in verdicts.items()]


def test_add_statistics_matches_questions_by_id_and_skips_other_question_sets():
    right = {f"q{i}": i < 7 for i in range(10)}           # sft: q0-q6 right
    items = {
        "base/greedy": _scored({f"q{i}": i == 0 for i in range(10)}),
        "sft/greedy": _scored(dict(reversed(list(right.items())))),   # same verdicts, other order
        "sft+constrained/greedy": _scored({**right, "q6": False, "q9": True}),
        "grpo/greedy": _scored({f"z{i}": True for i in range(10)}),   # other questions: no pairing
    }
    entries = {key: {"n": 10, "ex": sum(it["correct"] for it in rows) / 10,
                     "by_difficulty": {"simple": {"n": 10, "ex": 0.0}}} for key, rows in items.items()}
    add_statistics(entries, items, seed=0)

    assert entries["base/greedy"]["ex_ci"] == pytest.approx([0.0179, 0.4042], abs=1e-4)   # 1 of 10
    assert entries["base/greedy"]["by_difficulty"]["simple"]["ex_ci"] == entries["base/greedy"]["ex_ci"]
    assert "comparisons" not in entries["base/greedy"] and "comparisons" not in entries["grpo/greedy"]
    gain = entries["sft/greedy"]["comparisons"]["base/greedy"]
    assert (gain["gained"], gain["lost"]) == (6, 0)  # by position it would be 3 gained, 1 lost
    assert gain["p_value"] == pytest.approx(0.03125) and gain["significant"] is True
    assert gain["sentence"].endswith("significant at 0.05 (sft/greedy is better).")
    constrained = entries["sft+constrained/greedy"]["comparisons"]["sft/greedy"]
    assert (constrained["gained"], constrained["lost"], constrained["p_value"]) == (1, 1, 1.0)
    assert constrained["difference"] == 0.0


def test_comparison_plan_covers_training_variants_and_selectors():
    keys = ["base/greedy", "sft/greedy", "sft/vote@4", "sft/oracle@4", "sft+constrained/greedy",
            "sft+pruned/greedy", "sft+pruned+constrained/greedy", "grpo/greedy", "grpo/rm@4", "dpo/greedy",
            "coder/greedy"]
    assert comparison_plan(keys) == [
        ("base/greedy", "sft/greedy"), ("sft/greedy", "grpo/greedy"), ("sft/greedy", "dpo/greedy"),
        ("sft/greedy", "sft/vote@4"), ("sft/greedy", "sft/oracle@4"),
        ("sft/greedy", "sft+constrained/greedy"), ("sft/greedy", "sft+pruned/greedy"),
        ("sft+pruned/greedy", "sft+pruned+constrained/greedy"), ("grpo/greedy", "grpo/rm@4"),
    ]
    assert comparison_plan(["sft/greedy", "grpo/greedy"]) == [("sft/greedy", "grpo/greedy")]
    assert comparison_plan(["base/greedy"]) == []


def test_rm_skipped_with_a_note_when_reward_model_did_not_run(run_cfg):
    metrics, stage = _run(_bon_cfg(run_cfg))
    assert "sft/rm@4" not in metrics["dev"] and "sft/vote@4" in metrics["dev"]
    report = (stage.dir / "report.md").read_text()
    assert "rm@4 skipped" in report and "05_reward_model" in report


def test_predictions_are_cached_and_regenerated_when_the_model_changes(run_cfg):
    calls: list = []
    first, _ = _run(run_cfg, calls)
    assert {c[0] for c in calls} == {"base", "sft", "grpo"}

    calls.clear()
    again, _ = _run(run_cfg, calls)
    assert calls == [] and again == first                     # every system reused

    _finish_fake_stage(run_cfg, "sft", marker="retrained")   # a new sft model: its cache is stale
    calls.clear()
    _run(run_cfg, calls)
    assert {c[0] for c in calls} == {"sft"}


def test_interrupted_predictions_resume_where_they_stopped(run_cfg):
    _run(run_cfg)
    path = run_cfg.run_dir / "eval" / "predictions_grpo.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n")              # as if killed after 4 questions
    calls: list = []
    metrics, _ = _run(run_cfg, calls)
    assert [(c[0], c[1]) for c in calls] == [("grpo", 2)]     # only the 2 missing questions
    assert metrics["dev"]["grpo/greedy"]["ex"] == pytest.approx(4 / 6)


def test_missing_stage_stops_with_the_notebook_to_run(run_cfg):
    (run_cfg.run_dir / "grpo" / "manifest.json").unlink()
    cfg = _bon_cfg(run_cfg, systems=["base", "sft", "grpo"])
    with pytest.raises(MissingStageOutput, match=r"stage 'grpo'.*03_grpo\.ipynb"):
        _run(cfg)


def test_optional_missing_stage_is_skipped_with_a_note(run_cfg):
    (run_cfg.run_dir / "grpo" / "manifest.json").unlink()
    cfg = _bon_cfg(run_cfg, optional_systems=["grpo"])
    metrics, stage = _run(cfg)
    assert not any(key.startswith("grpo/") for key in metrics["dev"])
    assert "System 'grpo' skipped" in (stage.dir / "report.md").read_text()


def test_dpo_error_points_at_the_reward_model_notebook(run_cfg):
    cfg = _bon_cfg(run_cfg, systems=["base", "dpo"], best_of_n_systems=[])
    with pytest.raises(MissingStageOutput, match=r"05_reward_model\.ipynb with dpo: true"):
        sysmod.resolve_systems(cfg)


def test_system_specs(run_cfg):
    cfg = _bon_cfg(run_cfg, systems=["base", "sft", "mine=tiny:smollm2"], best_of_n_systems=["sft"])
    systems, notes = sysmod.resolve_systems(cfg)
    assert [(s.name, s.spec, s.stage) for s in systems] == [
        ("base", "tiny:smollm2", None), ("sft", "stage:sft", "sft"), ("mine", "tiny:smollm2", None),
    ]
    assert notes == []
    named = _bon_cfg(run_cfg, systems=["base", "mine=tiny:smollm2"], best_of_n_systems=["mine"])
    assert [s.name for s in sysmod.resolve_systems(named)[0]] == ["base", "mine"]
    with pytest.raises(ValueError, match="unknown system 'sftt'"):
        sysmod.parse_system("sftt", cfg)
    with pytest.raises(EvalStageError, match="best_of_n_systems"):
        _run(_bon_cfg(run_cfg, best_of_n_systems=["nope"]))


def test_constrained_systems_pass_each_questions_database_to_the_generator(run_cfg):
    cfg = _bon_cfg(run_cfg, systems=["sft", "sft+constrained"], best_of_n_systems=["sft+constrained"],
                   strategies=["greedy", "vote", "oracle"])
    systems, _ = sysmod.resolve_systems(cfg)
    assert [(s.name, s.spec, s.stage, s.constrained) for s in systems] == [
        ("sft", "stage:sft", "sft", False), ("sft+constrained", "stage:sft", "sft", True),
    ]
    # the constraint is part of what a cached prediction depends on
    assert sysmod.fingerprint(systems[0], cfg, 1) != sysmod.fingerprint(systems[1], cfg, 1)

    seen = []

    class SchemaRecordingGenerator(ScriptedGenerator):
        def generate(self, messages_batch, *, schemas=None, **kwargs):
            seen.append((self.system, schemas))
            return super().generate(messages_batch, **kwargs)

    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, generator_factory=lambda system, c: SchemaRecordingGenerator(
        ("sft" if system.constrained else system.name), []), progress=False)
    db = str(cfg.run_dir.parent.parent / "dbs" / "shop" / "shop.sqlite")
    plain = [schemas for name, schemas in seen if schemas is None]
    constrained = [schemas for name, schemas in seen if schemas is not None]
    assert plain and constrained  # the plain system generated without, the constrained with
    assert all(schemas == [db] * len(schemas) for schemas in constrained)
    assert {"sft/greedy", "sft+constrained/greedy", "sft+constrained/vote@4"} <= set(metrics["dev"])
    assert (stage.dir / "predictions_sft+constrained.jsonl").is_file()


def test_a_revise_system_revises_failing_answers_once_from_the_plain_systems_answers(run_cfg):
    """sft+revise: sft's greedy answers (reused, not generated again); the one that fails to run
    (q6, a syntax error) goes back with its error, and the scripted model repairs it."""
    cfg = _bon_cfg(run_cfg, systems=["sft", "sft+revise"], best_of_n_systems=[])
    revise = sysmod.parse_system("sft+revise", cfg)
    assert (revise.spec, revise.revise, revise.constrained) == ("stage:sft", True, False)
    assert sysmod.fingerprint(revise, cfg, 1) != sysmod.fingerprint(sysmod.parse_system("sft", cfg), cfg, 1)
    revision_prompts, calls = [], []

    class Reviser(ScriptedGenerator):
        def generate(self, messages_batch, **kwargs):
            if any("Previous SQL:" in m[-1]["content"] for m in messages_batch):
                revision_prompts.extend(m[-1]["content"] for m in messages_batch)
                return [[GOLD[self._qid(m)][1]] for m in messages_batch]
            return super().generate(messages_batch, **kwargs)

    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, generator_factory=lambda system, c: Reviser("sft", calls), progress=False)
    assert len(calls) == 1  # sft's greedy pass only: sft+revise reused its answers
    assert len(revision_prompts) == 1 and "Previous SQL:\n" + BROKEN in revision_prompts[0]
    assert "Result: error (" in revision_prompts[0]
    dev = metrics["dev"]
    assert dev["sft/greedy"]["ex"] == pytest.approx(3 / 6) and dev["sft+revise/greedy"]["ex"] == pytest.approx(4 / 6)
    records = {r["question_id"]: r for r in read_jsonl(stage.dir / "predictions_sft+revise.jsonl")}
    assert records["q6"]["revised"] is True and records["q6"]["first_sql"] == BROKEN
    assert records["q6"]["pred_sql"] == GOLD["q6"][1]
    assert records["q3"]["revised"] is False and records["q3"]["pred_sql"] == WRONG  # ran: not revised
    assert ("sft/greedy", "sft+revise/greedy") in comparison_plan(list(dev))


def test_pruned_systems_need_a_linking_model_or_use_the_one_sft_trained_with(run_cfg):
    cfg = _bon_cfg(run_cfg)
    with pytest.raises(ValueError, match=r"'sft\+pruned' needs a schema-linking model: set linking_model"):
        sysmod.parse_system("sft+pruned", cfg)
    linked = _bon_cfg(run_cfg, linking_model="tiny:smollm2")
    both = sysmod.parse_system("sft+pruned+constrained", linked)
    assert (both.name, both.spec, both.linking_model, both.constrained) == (
        "sft+pruned+constrained", "stage:sft", "tiny:smollm2", True)
    assert sysmod.parse_system("sft", linked).linking_model is None  # no suffix, not trained pruned
    # an SFT stage that trained on pruned prompts is evaluated on pruned prompts, suffix or not
    write_json(cfg.run_dir / "sft" / "metrics.json", {"format": "plain", "pruned_with": "outputs/link/sft/adapter"})
    assert sysmod.parse_system("sft", cfg).linking_model == "outputs/link/sft/adapter"
    assert sysmod.parse_system("sft", linked).linking_model == "tiny:smollm2"  # eval's parameter wins


def test_pruned_prompts_show_what_the_linking_model_predicts(run_cfg):
    cfg = _bon_cfg(run_cfg, systems=["sft", "sft+pruned"], best_of_n_systems=["sft+pruned"],
                   linking_model="my-linker")
    _finish_fake_reward_model(cfg)
    schemas: dict[str, list[str]] = {}  # the schema part of every prompt, by who saw it

    def schema_part(messages) -> str:
        return messages[-1]["content"].split("Question:")[0]

    class Linker:
        def generate(self, messages_batch, **kwargs):
            schemas.setdefault("linker", []).extend(schema_part(m) for m in messages_batch)
            return [['{"tables": ["items"], "columns": ["items.name"]}'] for _ in messages_batch]

    class Recording(ScriptedGenerator):
        def __init__(self, name):
            super().__init__("sft", [])  # both systems answer as the scripted sft does
            self.name = name

        def generate(self, messages_batch, **kwargs):
            schemas.setdefault(self.name, []).extend(schema_part(m) for m in messages_batch)
            return super().generate(messages_batch, **kwargs)

    def factory(system, c):
        if system.task == "schema_linking":
            assert system.spec == "my-linker" and system.name == "sft+pruned:linker"
            return Linker()
        return Recording(system.name)

    scorer = ScriptedScorer()
    seen_by_scorer = []
    original = scorer.score

    def score(prompt_messages, sql_list, db_path=None):
        seen_by_scorer.append(schema_part(prompt_messages))
        return original(prompt_messages, sql_list, db_path=db_path)

    scorer.score = score
    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, generator_factory=factory, scorer_factory=lambda c: scorer, progress=False)

    assert len(schemas["linker"]) == len(GOLD)  # one linking answer per question
    assert all("price" in text for text in schemas["linker"] + schemas["sft"])  # the whole schema
    assert schemas["sft+pruned"] and all("price" not in text and "name" in text for text in schemas["sft+pruned"])
    assert seen_by_scorer and all("price" not in text for text in seen_by_scorer)  # scored as generated
    records = read_jsonl(stage.dir / "predictions_sft+pruned.jsonl")
    assert all(rec["schema_keep"] == {"tables": ["items"], "columns": ["items.name"]} for rec in records)
    assert {"sft/greedy", "sft+pruned/greedy", "sft+pruned/rm@4"} <= set(metrics["dev"])
    report = (stage.dir / "report.md").read_text()
    assert "schema pruned by the linking model `my-linker` (6 of 6 newly generated questions pruned" in report


def test_constrained_decoding_is_refused_with_vllm(run_cfg):
    cfg = _bon_cfg(run_cfg, use_vllm=True)
    with pytest.raises(ValueError, match=r"'sft\+constrained' .*use_vllm: false"):
        sysmod.parse_system("sft+constrained", cfg)


def test_subsample_is_deterministic_and_keeps_order():
    examples = [Example(str(i), "d", "x.sqlite", f"q{i}", "SELECT 1") for i in range(50)]
    a = sysmod.subsample(examples, 10, seed=3)
    assert a == sysmod.subsample(examples, 10, seed=3)
    ids = [int(e.question_id) for e in a]
    assert len(ids) == 10 and ids == sorted(ids)
    assert sysmod.subsample(examples, 10, seed=4) != a
    assert sysmod.subsample(examples, None, seed=0) == examples


# ---------------------------------------------------------------------------------------------
# Best-of-N pickers on hand-built candidates
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def shop(tmp_path):
    db = _make_db(tmp_path / "shop.sqlite")
    ex = Example("q4", "shop", str(db), GOLD["q4"][0], GOLD["q4"][1], difficulty="moderate")
    from nl2sql_lib.sql.judge import Judge

    return ex, Judge(semantics="bird", timeout=2.0)


def test_vote_picks_the_majority_result_and_ignores_failed_sql(shop):
    ex, judge = shop
    right_a = "SELECT name FROM items WHERE price > 2"
    right_b = "SELECT name FROM items WHERE price >= 4"      # same rows, other text
    pools = [
        [WRONG, right_a, right_b, WRONG.replace("< 0", "< -1")],   # 2 x {desk,lamp,paper} vs 2 x {}
        [BROKEN, BROKEN, NO_TABLE, right_b],                        # failed SQL does not vote
        [WRONG, right_a, WRONG, BROKEN],                            # {} wins 2 to 1
    ]
    picks = sysmod.pick_vote([{"candidates": p} for p in pools], [ex] * 3, judge)
    assert picks[1] == right_b
    assert picks[2] == WRONG
    assert picks[0] == WRONG          # a 2-2 tie goes to the group that appeared first


def test_oracle_and_score_pickers(shop):
    ex, judge = shop
    right = "SELECT name FROM items WHERE price > 2"
    pools = [[WRONG, BROKEN, right], [WRONG, BROKEN, NO_TABLE]]
    records = [{"candidates": p} for p in pools]
    assert sysmod.pick_oracle(records, [ex, ex], judge) == [right, WRONG]   # else the first
    # the reward model's favourite fails to run: the best-scored candidate that runs is picked
    assert sysmod.pick_by_scores(records, [[0.1, 0.9, 0.3], [0.5, 0.5, 0.2]], [ex, ex], judge) == [right, WRONG]
    # nothing runs: the best score (first on ties), as before
    assert sysmod.pick_by_scores([{"candidates": [BROKEN, NO_TABLE]}], [[0.2, 0.7]], [ex], judge) == [NO_TABLE]
    assert sysmod.strategy_key("sft", "greedy", 4) == "sft/greedy"
    assert sysmod.strategy_key("sft", "rm", 4) == "sft/rm@4"


# ---------------------------------------------------------------------------------------------
# Spider dev and the real tiny model
# ---------------------------------------------------------------------------------------------


@pytest.mark.spider
def test_spider_dev_gold_scores_full_and_missing_databases_are_reported(run_cfg, spider_dev, tmp_path):
    cfg = _bon_cfg(run_cfg, systems=["base"], best_of_n_systems=[], spider_path=str(spider_dev),
                   spider_limit=5, max_dev_examples=2)

    class GoldForSpider:
        """Answers Spider questions with their gold SQL, the shop questions with WRONG."""

        def __init__(self, by_question):
            self.by_question = by_question

        def generate(self, messages_batch, *, n=1, temperature=0.0, max_new_tokens=128):
            out = []
            for messages in messages_batch:
                user = messages[-1]["content"]
                sql = next((s for q, s in self.by_question.items() if q in user), WRONG)
                out.append([sql] * n)
            return out

    spider = json.loads((spider_dev / "dev.json").read_text())
    gold = {item["question"]: item["query"] for item in spider}
    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, generator_factory=lambda s, c: GoldForSpider(gold), progress=False)
    assert metrics["spider_dev"]["base/greedy"]["n"] == 5
    assert metrics["spider_dev"]["base/greedy"]["ex"] == 1.0
    assert metrics["dev"]["base/greedy"]["n"] == 2
    report = (stage.dir / "report.md").read_text()
    if not (spider_dev / "database" / "wta_1" / "wta_1.sqlite").is_file():
        assert "wta_1" in report and "database file is missing" in report


def test_a_missing_spider_folder_with_skip_is_noted_not_evaluated(run_cfg, tmp_path):
    missing = tmp_path / "no-spider"
    cfg = _bon_cfg(run_cfg, systems=["base"], best_of_n_systems=[], max_dev_examples=2,
                   spider_if_missing="skip", spider_path=str(missing))
    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, generator_factory=lambda s, c: GoldForSpiderless(), progress=False)
    assert set(metrics) == {"dev"}
    report = (stage.dir / "report.md").read_text()
    assert "Spider dev not evaluated" in report and str(missing) in report
    assert not missing.exists()


class GoldForSpiderless:
    """Answers every question with WRONG: only the datasets evaluated matter here."""

    def generate(self, messages_batch, *, n=1, temperature=0.0, max_new_tokens=128):
        return [[WRONG] * n for _ in messages_batch]


@pytest.mark.slow
def test_real_tiny_model_end_to_end(run_cfg):
    """The real generator path (tiny random model): predictions, metrics and report exist."""
    cfg = _bon_cfg(run_cfg, systems=["base", "base+revise", "other=tiny:smollm2"], best_of_n_systems=["base"],
                   num_candidates=2, max_dev_examples=3, max_new_tokens=8)
    stage = StageRun(cfg, "eval").start()
    metrics = run_eval(cfg, stage, progress=False)
    assert set(metrics["dev"]) == {"base/greedy", "base+revise/greedy", "other/greedy", "base/vote@2", "base/oracle@2"}
    rows = read_jsonl(stage.dir / "predictions_base.jsonl")
    assert len(rows) == 3 and all(len(r["candidates"]) == 2 for r in rows)
    # base+revise starts from base's greedy answers; the random model's failing ones are revised
    revised = read_jsonl(stage.dir / "predictions_base+revise.jsonl")
    firsts = {r["key"]: r["pred_sql"] for r in rows}
    for row in revised:
        assert row.get("first_sql", row["pred_sql"]) == firsts[row["key"]]
        assert row["revised"] == ("feedback" in row)
    assert any(row["revised"] for row in revised)  # 8 tokens of a random model never make runnable SQL
    assert metrics["dev"]["base/oracle@2"]["ex"] >= metrics["dev"]["base/greedy"]["ex"]
    assert (stage.dir / "report.md").is_file()


@pytest.mark.slow
def test_notebook_runs_headless_with_papermill(run_cfg):
    """notebooks/06_eval.ipynb through papermill: metrics, report, the ask section, a manifest."""
    import papermill

    from nl2sql_lib.notebook_tools import build_notebook
    from nl2sql_lib.pipeline import _kernel_name

    notebook = PROJECT_ROOT / "notebooks" / "06_eval.ipynb"
    rebuilt = build_notebook(PROJECT_ROOT / "notebooks" / "src" / "06_eval.py", run_cfg.run_dir / "rebuilt")
    assert rebuilt.read_text() == notebook.read_text(), "notebooks/06_eval.ipynb is stale: rebuild it"
    out = run_cfg.run_dir / "06_eval_out.ipynb"
    papermill.execute_notebook(
        str(notebook), str(out), cwd=str(PROJECT_ROOT), kernel_name=_kernel_name(), progress_bar=False,
        parameters={"params_file": str(SMOKE), "run": run_cfg.run, "output_root": run_cfg.output_root,
                    "systems": ["base", "other=tiny:smollm2"], "best_of_n_systems": ["base"],
                    "max_dev_examples": 2, "max_new_tokens": 8, "plots": True},
    )
    eval_dir = run_cfg.run_dir / "eval"
    manifest = read_json(eval_dir / "manifest.json")
    assert manifest["status"] == "complete"
    assert set(manifest["metrics"]["dev"]) == {"base/greedy", "other/greedy", "base/vote@2", "base/oracle@2"}
    assert read_json(eval_dir / "metrics.json") == manifest["metrics"]
    text = out.read_text()
    assert "-- strategy: vote" in text                       # the ask section printed its answer


def test_each_system_is_prompted_as_its_stage_trained_it(run_cfg):
    """sft/metrics.json records format and schema_render; base follows the data stage's."""
    write_json(run_cfg.run_dir / "sft" / "metrics.json",
               {"format": "reasoning", "schema_render": {"style": "compact", "sample_values": 0}})
    write_json(run_cfg.run_dir / "data" / "manifest.json",
               {"parameters": {"schema_render": {"style": "create_table", "sample_values": 1}}})
    systems = {s.name: s for s in sysmod.resolve_systems(run_cfg)[0]}
    assert systems["sft"].reasoning and systems["sft"].schema().style == "compact"
    assert not systems["base"].reasoning and systems["base"].schema().sample_values == 1
    examples = [Example("q1", "shop", str(run_cfg.run_dir / "x.sqlite"), "How many?", "SELECT 1")]
    assert sysmod.drop_missing_databases(examples) == ([], {"shop": 1})
    # eval's own schema_render wins over what the stage recorded
    forced = _bon_cfg(run_cfg, schema_render={"style": "create_table", "sample_values": 2})
    sft = next(s for s in sysmod.resolve_systems(forced)[0] if s.name == "sft")
    assert sft.schema().style == "create_table" and sft.schema().sample_values == 2 and sft.reasoning


def test_ves_for_greedy_predictions_when_asked(run_cfg):
    cfg = _bon_cfg(run_cfg, ves_repeats=2, best_of_n_systems=[])
    metrics, stage = _run(cfg)
    dev = metrics["dev"]
    assert set(dev) == {"base/greedy", "sft/greedy", "grpo/greedy"}
    # a wrong prediction counts 0; right ones count sqrt(time ratio) > 0
    assert dev["grpo/greedy"]["ves"] > 0 and dev["grpo/greedy"]["rves"] > 0
    assert dev["grpo/greedy"]["rves"] <= 100 * (4 / 6) * 1.25 ** 0.5 + 1e-6
    assert "Efficiency: VES" in (stage.dir / "report.md").read_text()
    assert "ves" not in _run(_bon_cfg(run_cfg, best_of_n_systems=[]))[0]["dev"]["base/greedy"]


def test_reward_scores_skip_candidates_without_sql(tmp_path):
    seen = []

    class Scorer:
        def score(self, prompt_messages, sql_list, db_path=None):
            assert db_path == ex.db_path  # so an execution-feedback reward model can run them
            seen.append(list(sql_list))
            return [float(len(sql)) for sql in sql_list]

    system = sysmod.System("sft", "stage:sft", "sft")
    ex = Example("q1", "shop", str(_make_db(tmp_path / "shop.sqlite")), GOLD["q1"][0], GOLD["q1"][1])
    records = [{"candidates": ["", "SELECT 1", "", "SELECT 22"]}, {"candidates": ["", ""]}]
    scores = sysmod.rm_scores(Scorer(), records, [ex, ex], system)
    assert seen == [["SELECT 1", "SELECT 22"]]
    assert scores == [[float("-inf"), 8.0, float("-inf"), 9.0], [float("-inf"), float("-inf")]]
    assert sysmod.pick_by_scores(records, scores, [ex, ex], Judge()) == ["SELECT 22", ""]


def test_best_of_n_on_a_seeded_sample_is_its_own_paired_dataset(run_cfg):
    """best_of_n_limit: greedy for every system on every dev question; best of N only for the
    best-of-N systems on a seeded sample, scored there with their greedy answer (paired)."""
    from nl2sql_lib.sampling import seeded_subsample

    cfg = _bon_cfg(run_cfg, best_of_n_limit=3, strategies=["greedy", "vote", "oracle"])
    calls: list = []
    metrics, stage = _run(cfg, calls)
    assert set(metrics) == {"dev", "dev_best_of_n"}
    assert sorted(metrics["dev"]) == ["base/greedy", "grpo/greedy", "sft/greedy"]
    assert all(entry["n"] == 6 for entry in metrics["dev"].values())
    sample = {e.question_id for e in seeded_subsample(read_examples(cfg.run_dir / "data" / "dev.jsonl"), 3, cfg.seed)}
    bon = metrics["dev_best_of_n"]
    assert sorted(bon) == ["sft/greedy", "sft/oracle@4", "sft/vote@4"]
    assert all(entry["n"] == 3 for entry in bon.values())
    # the sample's greedy figure is the dev greedy answers restricted to the sample
    rows = read_jsonl(stage.dir / "predictions_sft.jsonl")
    on_dev = {row["question_id"]: row["correct"] for row in rows if row["dataset"] == "dev"}
    on_sample = {row["question_id"]: row["correct"] for row in rows if row["dataset"] == "dev_best_of_n"}
    assert set(on_sample) == sample and all(on_sample[q] == on_dev[q] for q in sample)
    assert bon["sft/greedy"]["ex"] == pytest.approx(sum(on_dev[q] for q in sample) / 3)
    # sampled candidates (temperature > 0) were asked for the sample's questions only, and their
    # greedy answers were not generated again: each system answered each dev question once
    sampled_rows = sum(size for system, size, n, temperature in calls if temperature > 0)
    assert sampled_rows == 3
    for system in ("base", "sft", "grpo"):
        assert sum(size for name, size, n, temperature in calls if name == system and temperature == 0) == 6
    sample_rows = {row["question_id"]: row["raw"] for row in rows if row["dataset"] == "dev_best_of_n"}
    dev_rows = {row["question_id"]: row["raw"] for row in rows if row["dataset"] == "dev"}
    assert all(sample_rows[q] == dev_rows[q] for q in sample)
    # and the report pairs greedy with each selector on the same 3 questions
    assert bon["sft/vote@4"]["comparisons"]["sft/greedy"]["n"] == 3


def test_reward_scores_of_unchanged_pools_are_reused(run_cfg, monkeypatch):
    """With this run's reward model (the default scorer) each pool's scores are kept beside its
    predictions: a re-run of 06_eval does not score them again, until the reward model's
    manifest (it was trained again) or the candidates change."""
    from nl2sql_lib.evaluate import stage as stage_module

    cfg = _bon_cfg(run_cfg)
    _finish_fake_reward_model(cfg)
    made = []

    def default_factory(c):  # stands in for loading outputs/<run>/reward_model
        made.append(ScriptedScorer())
        return made[-1]

    monkeypatch.setattr(stage_module, "default_scorer_factory", default_factory)
    first, stage = _run(cfg)
    assert len(made) == 1 and made[0].calls > 0
    kept = sorted(p.name for p in stage.dir.glob("rm_scores_*.json"))
    assert kept == ["rm_scores_sft_dev.json"]
    again, _ = _run(cfg)
    assert len(made) == 1  # not loaded, nothing scored
    assert again["dev"]["sft/rm@4"] == first["dev"]["sft/rm@4"]
    manifest = cfg.run_dir / "reward_model" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("}", ', "again": true}', 1))  # 05 ran again
    _run(cfg)
    assert len(made) == 2 and made[1].calls > 0
