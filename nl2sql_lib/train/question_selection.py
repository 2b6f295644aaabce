"""GRPO's training questions picked by the policy's own pass rate (issue #14).

GRPO learns only from a group whose completions earn different rewards: when all of a
question's completions are right, or all wrong, every advantage is zero and the step teaches
nothing. With one question and 4 completions a step that is most steps. So before training the
policy answers each of ``candidates`` training questions ``samples`` times (sampled at GRPO's
temperature), each answer is executed against the gold, and only the questions it sometimes
gets right - pass rate strictly between 0 and 1 - are kept: an offline form of DAPO's dynamic
sampling, which drops zero-variance groups online.

    rates = probe_pass_rates(records, sample_fn, scorer, samples=4)
    kept, summary = keep_informative(records, rates)

``sample_fn(records, n)`` returns ``n`` completion texts per record (03_grpo passes the policy's
sampler; tests pass a scripted one), so the selection rule is testable without a model.

The probe is the costly part (12.8 minutes for 158 Spider questions x 4 samples here), so
03_grpo keeps its pass rates in ``grpo/pass_rates.json`` (:func:`cached_pass_rates`) and a
re-run with other training parameters probes only questions it has not seen, as long as the
policy and the probe's settings are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

SampleFn = Callable[[Sequence[dict], int], list[list[str]]]


def probe_pass_rates(records: Sequence[dict], sample_fn: SampleFn, scorer: Any, *, samples: int) -> list[float | None]:
    """Per record, the share of ``samples`` sampled answers judged correct (None: unscorable).

    ``records`` are GRPO rows (``db_path`` and ``sql`` columns); ``scorer`` an
    :class:`~nl2sql_lib.rewards.ExecutionScorer`. A question whose gold query fails gets None.
    """
    if samples < 1:
        raise ValueError(f"probe_pass_rates: samples must be at least 1, got {samples}")
    texts = sample_fn(records, samples)
    if len(texts) != len(records):
        raise ValueError(f"probe_pass_rates: {len(texts)} answer lists for {len(records)} questions")
    rates: list[float | None] = []
    for record, answers in zip(records, texts):
        scores = scorer.score(answers, [record["db_path"]] * len(answers), [record["sql"]] * len(answers))
        if any(s.correct is None for s in scores):
            rates.append(None)
        else:
            rates.append(sum(bool(s.correct) for s in scores) / len(scores))
    return rates


def _question_key(record: dict) -> str:
    """A probed question's identity: its prompt and gold SQL (what its pass rate depends on)."""
    return hashlib.sha256(json.dumps([record["prompt"], record["sql"]], sort_keys=True).encode()).hexdigest()[:24]


def cached_pass_rates(records: Sequence[dict], probe: Callable[[Sequence[dict]], list[float | None]],
                      cache: Path, fingerprint: dict[str, Any]) -> tuple[list[float | None], int]:
    """Pass rates of ``records``, reusing those stored in ``cache`` when it was written under the
    same ``fingerprint`` (the policy and the probe's settings); ``probe`` runs on the rest only.
    Returns the rates and how many were reused. The cache is rewritten with every rate it holds."""
    from ..io import atomic_write_text

    wanted = json.loads(json.dumps(fingerprint))
    stored: dict[str, float | None] = {}
    if cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if isinstance(data, dict) and data.get("fingerprint") == wanted:
                stored = dict(data["rates"])
        except (ValueError, KeyError, TypeError):
            stored = {}  # a damaged cache is probed again, never trusted
    keys = [_question_key(record) for record in records]
    missing = [i for i, key in enumerate(keys) if key not in stored]
    if missing:
        for i, rate in zip(missing, probe([records[i] for i in missing])):
            stored[keys[i]] = rate
        atomic_write_text(cache, json.dumps({"fingerprint": wanted, "rates": stored}))
    return [stored[key] for key in keys], len(records) - len(missing)


def keep_informative(records: Sequence[dict], rates: Sequence[float | None]) -> tuple[list[dict], dict[str, Any]]:
    """The records whose pass rate is strictly between 0 and 1, and a summary of the probe.

    When no question qualifies, every scorable record is kept (the run still trains, on the
    zero-signal groups it would have had anyway) and the summary says ``fallback: true``.
    """
    if len(rates) != len(records):
        raise ValueError(f"keep_informative: {len(rates)} pass rates for {len(records)} questions")
    kept = [rec for rec, rate in zip(records, rates) if rate is not None and 0.0 < rate < 1.0]
    scorable = [rate for rate in rates if rate is not None]
    summary = {
        "probed": len(records),
        "unscorable": len(records) - len(scorable),
        "all_wrong": sum(rate == 0.0 for rate in scorable),
        "all_right": sum(rate == 1.0 for rate in scorable),
        "mixed": len(kept),
        "mean_pass_rate": round(sum(scorable) / len(scorable), 4) if scorable else None,
        "fallback": False,
    }
    if not kept:
        logger.warning("pass-rate selection: none of %d probed questions is sometimes right and sometimes "
                       "wrong; training on all of them (probe more questions or raise the temperature)",
                       len(records))
        kept = [rec for rec, rate in zip(records, rates) if rate is not None]
        summary["fallback"] = True
    summary["kept"] = len(kept)
    return kept, summary


def policy_sampler(model: Any, tokenizer: Any, *, temperature: float, max_new_tokens: int,
                   batch_size: int = 8, seed: int = 0) -> SampleFn:
    """A :data:`SampleFn` over the policy being trained (a transformers model, put in eval mode
    for the probe and back in train mode after it)."""
    from ..generate import Generator

    def sample(records: Sequence[dict], n: int) -> list[list[str]]:
        was_training, padding_side = model.training, tokenizer.padding_side
        model.eval()
        try:  # the Generator pads on the left; the trainer gets its tokenizer back as it was
            generator = Generator(model, tokenizer, batch_size=batch_size, progress=False, seed=seed)
            return generator.generate([rec["prompt"] for rec in records], n=n, temperature=temperature,
                                      max_new_tokens=max_new_tokens, desc="pass-rate probe")
        finally:
            model.train(was_training)
            tokenizer.padding_side = padding_side

    return sample


def nonzero_advantage_share(frac_zero_std_points: Sequence[Sequence[float]]) -> float | None:
    """The mean share of groups with a non-zero advantage over the logged steps (TRL logs
    ``frac_reward_zero_std``, the share of groups whose rewards were all equal)."""
    values = [float(v) for _, v in frac_zero_std_points]
    if not values:
        return None
    return round(1.0 - sum(values) / len(values), 4)
