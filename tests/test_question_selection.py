"""GRPO's question selection by pass rate (issue #14): which questions can teach a group anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nl2sql_lib.config import GRPOParams, PassRateFilterParams
from nl2sql_lib.rewards import ExecutionScorer
from nl2sql_lib.train.grpo import probed_question_count, summarize_training
from nl2sql_lib.train.question_selection import keep_informative, nonzero_advantage_share, probe_pass_rates
from tests.test_rewards import FAILING, GOLD, RIGHT, WRONG, make_db


def _records(db: Path) -> list[dict]:
    gold_count = "SELECT count(*) FROM singer"
    return [
        {"question_id": "always", "db_path": str(db), "sql": GOLD, "prompt": "p0"},
        {"question_id": "never", "db_path": str(db), "sql": GOLD, "prompt": "p1"},
        {"question_id": "sometimes", "db_path": str(db), "sql": GOLD, "prompt": "p2"},
        {"question_id": "once", "db_path": str(db), "sql": gold_count, "prompt": "p3"},
    ]


# What the scripted policy answers to each question, 4 samples each.
SCRIPT = {
    "p0": [RIGHT, RIGHT, RIGHT, RIGHT],
    "p1": [WRONG, FAILING, "no sql here", WRONG],
    "p2": [RIGHT, WRONG, RIGHT, FAILING],
    "p3": ["SELECT count(*) FROM singer", WRONG, WRONG, WRONG],
}


def scripted(records, n):
    assert n == 4
    return [SCRIPT[rec["prompt"]] for rec in records]


def test_pass_rates_are_the_share_of_correct_samples(tmp_path):
    records = _records(make_db(tmp_path / "music.sqlite"))
    rates = probe_pass_rates(records, scripted, ExecutionScorer(), samples=4)
    assert rates == [1.0, 0.0, 0.5, 0.25]


def test_only_questions_sometimes_right_are_kept(tmp_path):
    records = _records(make_db(tmp_path / "music.sqlite"))
    rates = probe_pass_rates(records, scripted, ExecutionScorer(), samples=4)
    kept, summary = keep_informative(records, rates)
    assert [r["question_id"] for r in kept] == ["sometimes", "once"]
    assert summary == {"probed": 4, "unscorable": 0, "all_wrong": 1, "all_right": 1, "mixed": 2,
                       "mean_pass_rate": 0.4375, "fallback": False, "kept": 2}


def test_a_question_whose_gold_fails_is_unscorable_and_dropped(tmp_path):
    db = make_db(tmp_path / "music.sqlite")
    records = [{"question_id": "broken", "db_path": str(db), "sql": "SELECT nope FROM nowhere", "prompt": "p2"}]
    rates = probe_pass_rates(records, scripted, ExecutionScorer(), samples=4)
    assert rates == [None]
    kept, summary = keep_informative(records, rates)
    assert kept == [] and summary["unscorable"] == 1 and summary["fallback"] is True


def test_no_mixed_question_falls_back_to_all_scorable_ones():
    records = [{"question_id": str(i)} for i in range(3)]
    kept, summary = keep_informative(records, [0.0, 1.0, None])
    assert [r["question_id"] for r in kept] == ["0", "1"]
    assert summary["fallback"] is True and summary["kept"] == 2 and summary["mixed"] == 0


def test_the_sampler_must_answer_every_question(tmp_path):
    records = _records(make_db(tmp_path / "music.sqlite"))
    with pytest.raises(ValueError, match="3 answer lists for 4 questions"):
        probe_pass_rates(records, lambda recs, n: [["x"]] * 3, ExecutionScorer(), samples=4)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        probe_pass_rates(records, scripted, ExecutionScorer(), samples=0)


def test_probed_count_is_candidates_when_the_filter_is_on():
    cfg = GRPOParams(max_train_examples=50)
    assert probed_question_count(cfg) == 50
    on = cfg.model_copy(update={"pass_rate_filter": PassRateFilterParams(enabled=True, candidates=200)})
    assert probed_question_count(on) == 200
    no_candidates = cfg.model_copy(update={"pass_rate_filter": PassRateFilterParams(enabled=True)})
    assert probed_question_count(no_candidates) == 50


def test_nonzero_advantage_share_from_trl_logs():
    assert nonzero_advantage_share([]) is None
    # one question per step: frac_reward_zero_std is 1 (no signal) or 0 (signal)
    assert nonzero_advantage_share([[1, 1.0], [2, 0.0], [3, 1.0], [4, 1.0]]) == 0.25
    history = [{"step": 1, "frac_reward_zero_std": 0.5}, {"step": 2, "frac_reward_zero_std": 0.0},
               {"step": 2, "train_runtime": 3.0}]
    assert summarize_training(history, [])["nonzero_advantage_share"] == 0.75


def test_cached_pass_rates_probe_only_what_the_cache_lacks(tmp_path):
    """A second probe with the same policy and settings reuses every stored rate; a new question
    is the only one probed; another fingerprint (a re-trained policy) probes everything again."""
    from nl2sql_lib.train.question_selection import cached_pass_rates

    records = _records(make_db(tmp_path / "shop.sqlite"))
    scorer = ExecutionScorer(timeout=2.0)
    probed: list[list[str]] = []

    def probe(todo):
        probed.append([rec["question_id"] for rec in todo])
        return probe_pass_rates(todo, scripted, scorer, samples=4)

    cache = tmp_path / "grpo" / "pass_rates.json"
    first, reused = cached_pass_rates(records[:3], probe, cache, {"policy": "stage:sft@abc"})
    assert first == [1.0, 0.0, 0.5] and reused == 0 and probed == [["always", "never", "sometimes"]]
    again, reused = cached_pass_rates(records, probe, cache, {"policy": "stage:sft@abc"})
    assert again == [1.0, 0.0, 0.5, 0.25] and reused == 3 and probed[-1] == ["once"]
    _, reused = cached_pass_rates(records, probe, cache, {"policy": "stage:sft@abc"})
    assert reused == 4 and len(probed) == 2  # nothing left to probe: the probe was not called
    _, reused = cached_pass_rates(records, probe, cache, {"policy": "stage:sft@def"})
    assert reused == 0 and probed[-1] == ["always", "never", "sometimes", "once"]
    for damaged in ("{not json", "[]", "null"):  # a damaged cache is probed again
        cache.write_text(damaged)
        _, reused = cached_pass_rates(records[:1], probe, cache, {"policy": "stage:sft@def"})
        assert reused == 0 and probed[-1] == ["always"]


def test_probe_fingerprint_follows_the_policy_stage_and_the_sampling(tmp_path):
    from nl2sql_lib.io import write_json
    from nl2sql_lib.train.grpo import probe_fingerprint

    cfg = GRPOParams(output_root=str(tmp_path), run="r")
    before = probe_fingerprint(cfg)
    write_json(cfg.run_dir / "sft" / "manifest.json", {"stage": "sft", "finished_at": "1"})
    trained = probe_fingerprint(cfg)
    assert trained != before and before["policy_manifest"] is None and trained["policy_manifest"]
    write_json(cfg.run_dir / "sft" / "manifest.json", {"stage": "sft", "finished_at": "2"})
    assert probe_fingerprint(cfg) != trained  # SFT trained again: its rates are stale
    hotter = cfg.model_copy(update={"temperature": 1.2})
    assert probe_fingerprint(hotter) != probe_fingerprint(cfg)
    quantized = cfg.model_copy(update={"model": cfg.model.model_copy(update={"quantization": "4bit"})})
    assert probe_fingerprint(quantized) != probe_fingerprint(cfg)  # another model, other pass rates
    # training parameters do not change what the probe measures
    longer = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 99})})
    assert probe_fingerprint(longer) == probe_fingerprint(cfg)
