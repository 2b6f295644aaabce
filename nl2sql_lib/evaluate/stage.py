"""06_eval: every system of the run on the dev split (and Spider dev), best of N, one report.

    metrics = run_eval(cfg, stage)        # writes eval/metrics.json, eval/report.md, plots
    stage.finish(headline(metrics))

    python -m nl2sql_lib.evaluate.stage --params params/smoke/eval.yaml --run smoke [--set key=value]

Steps, in the order they run:

1. resolve the systems (``base``, ``sft``, ``grpo``, ``dpo``, ``name=spec``); a listed stage
   that did not run stops with the notebook to run, unless it is in ``optional_systems``;
2. load the datasets: ``data/dev.jsonl`` of this run (a deterministic subsample of
   ``max_dev_examples``) and, with ``spider_path``, Spider dev (questions whose database is
   missing are skipped and counted, then ``spider_limit`` are sampled);
3. generate, one model at a time: greedy predictions for every system and, for
   ``best_of_n_systems``, pools of ``num_candidates`` (greedy first, then samples), cached in
   ``eval/predictions_<system>.jsonl``;
4. score with the SQL engine's Judge: ``<system>/greedy`` for all, ``vote@N``, ``rm@N`` (the
   reward model of 05, when it ran) and ``oracle@N`` for the pools;
5. add to every EX its 95% interval (``ex_ci``, Wilson over questions, also per difficulty and
   database) and, to each system/strategy, its paired comparisons (``comparisons``: against the
   system it should improve on, on the same questions; see :func:`comparison_plan`);
6. write ``eval/metrics.json`` (``{dataset: {"system/strategy": {"n", "ex", "ex_ci",
   "by_difficulty", "errors", "comparisons", ...}}}``), ``eval/report.md`` and the plots.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ..config import EvalParams, SourceParams
from ..data.example import Example, read_examples
from ..io import atomic_write_text, read_json, write_json, write_jsonl
from ..runs import StageRun, require_output, stage_manifest_sha256
from .selection import RM_STRATEGIES
from .stats import compare_items, wilson_interval
from .systems import (
    STAGE_SYSTEMS,
    VARIANT_SUFFIXES,
    EvalSet,
    GeneratorFactory,
    default_generator_factory,
    drop_missing_databases,
    free_memory,
    generate_predictions,
    pick_by_scores,
    pick_oracle,
    pick_rm_vote,
    pick_vote,
    predictions_path,
    resolve_systems,
    STRATEGIES,
    rm_scores,
    strategy_key,
    subsample,
)

DEV = "dev"
SPIDER = "spider_dev"
DEV_BEST_OF_N = "dev_best_of_n"  # the seeded dev sample best of N runs on (best_of_n_limit)
SELECTORS = tuple(s for s in STRATEGIES if s not in ("greedy", "oracle"))  # the pickers to compare

ScorerFactory = Callable[[EvalParams], Any]


class EvalStageError(ValueError):
    """A parameter of 06_eval cannot work as given; the message says what to change."""


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def load_datasets(cfg: EvalParams, stage: StageRun) -> list[EvalSet]:
    """The run's dev split and, when ``spider_path`` is set, Spider dev."""
    dev_path = require_output(cfg, "data", "dev.jsonl")
    stage.record_input(dev_path)
    dev_all = read_examples(dev_path)
    if not dev_all:
        raise EvalStageError(f"{dev_path} holds no questions: re-run notebooks/01_data.ipynb")
    dev_kept, dev_skipped = drop_missing_databases(dev_all)
    dev = subsample(dev_kept, cfg.max_dev_examples, cfg.seed)
    sampled = cfg.best_of_n_limit is not None and cfg.best_of_n_limit < len(dev)
    datasets = [
        EvalSet(DEV, dev, cfg.semantics, best_of_n=not sampled, skipped=dev_skipped, total=len(dev_all))
    ]
    if sampled:
        # Best of N costs N generations a question: on a seeded sample of the dev questions,
        # a dataset of its own where greedy and every selector are scored on the same questions
        # (so their comparison is paired), for the best-of-N systems only.
        datasets.append(EvalSet(
            DEV_BEST_OF_N, subsample(dev, cfg.best_of_n_limit, cfg.seed), cfg.semantics,
            best_of_n=True, total=len(dev), systems=frozenset(best_of_n_names(cfg)),
        ))
    if cfg.spider_path and not spider_skipped(cfg):
        datasets.append(load_spider(cfg, stage))
    return datasets


def spider_skipped(cfg: EvalParams) -> str | None:
    """Why Spider is not evaluated although spider_path names it (spider_if_missing: skip)."""
    if cfg.spider_path and cfg.spider_if_missing == "skip" and not Path(cfg.spider_path).exists():
        return (
            f"Spider dev not evaluated: spider_path {cfg.spider_path!r} does not exist (relative to "
            f"{Path.cwd()}) and spider_if_missing is skip; put Spider's dev folder there to add it"
        )
    return None


def load_spider(cfg: EvalParams, stage: StageRun) -> EvalSet:
    """Spider dev from ``spider_path`` (skipping questions whose database file is missing)."""
    from ..data.loaders import load_source

    folder = Path(cfg.spider_path)
    if not (folder / "dev.json").is_file():
        raise EvalStageError(
            f"eval parameter 'spider_path': {folder} has no dev.json; give a Spider folder "
            "(dev.json, tables.json, database/) or set spider_path: null"
        )
    # split "auto": dev.json is the dev split even when the folder also holds the training files
    splits = load_source(SourceParams(type="spider", path=str(folder)), stage.path("work"), seed=cfg.seed)
    examples = splits.get("dev") or []
    kept, skipped = drop_missing_databases(examples)
    return EvalSet(
        SPIDER, subsample(kept, cfg.spider_limit, cfg.seed), cfg.spider_semantics,
        best_of_n=cfg.best_of_n_on_spider, skipped=skipped, total=len(examples),
    )


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def make_judge(semantics: str, cfg: EvalParams):
    from ..sql.judge import Judge

    return Judge(semantics=semantics, timeout=cfg.sql_timeout)


def score(examples: list[Example], predictions: list[str], judge) -> tuple[dict, list[dict]]:
    """Summary (n, ex, by_difficulty, errors, ...) and per-question items of one prediction list."""
    from .metrics import score_items, summarize

    items = score_items(examples, predictions, judge)
    return summarize(items), items


def reward_scorer_available(cfg: EvalParams) -> bool:
    """The reward model of 05 finished (manifest) and saved its model."""
    folder = cfg.run_dir / "reward_model"
    weights = (folder / "adapter").is_dir() or (folder / "model").is_dir()
    return (folder / "manifest.json").is_file() and weights


def default_scorer_factory(cfg: EvalParams):
    from ..scoring import RewardScorer

    return RewardScorer.from_spec(str(cfg.run_dir / "reward_model"), run_dir=cfg.run_dir)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def run_eval(
    cfg: EvalParams,
    stage: StageRun,
    *,
    generator_factory: GeneratorFactory | None = None,
    scorer_factory: ScorerFactory | None = None,
    progress: bool = True,
) -> dict[str, dict[str, dict]]:
    """Generate, select, score and report; returns the metrics written to eval/metrics.json.

    ``generator_factory(system, cfg)`` and ``scorer_factory(cfg)`` default to the real model
    loaders; tests pass scripted ones.
    """
    _check_params(cfg)
    make_gen = generator_factory or default_generator_factory
    make_scorer = scorer_factory or default_scorer_factory
    systems, notes = resolve_systems(cfg)
    with stage.timer("load_data"):
        datasets = load_datasets(cfg, stage)
    notes += _dataset_notes(datasets)
    skipped_spider = spider_skipped(cfg)
    if skipped_spider:
        logging.getLogger(__name__).warning(skipped_spider)
        notes.append(skipped_spider)

    # 1. Generation, one model at a time (each generator is freed before the next loads).
    pool_names = best_of_n_names(cfg)
    pool_systems = {s.name for s in systems if s.name in pool_names}
    preds: dict[str, dict[str, list[dict]]] = {}
    gen_info: dict[str, dict] = {}
    for system in systems:
        with stage.timer(f"generate_{system.name}"):
            preds[system.name], gen_info[system.name] = generate_predictions(
                system, [ds for ds in datasets if ds.evaluates(system.name)], cfg, stage.dir, make_gen,
                best_of_n=system.name in pool_systems, progress=progress,
            )

    # 2. Reward-model scores for every pool (one model again, after the policies are gone).
    scores, rm_note = _reward_scores(cfg, systems, pool_systems, datasets, preds, make_scorer, stage)
    if rm_note:
        notes.append(rm_note)

    # 3. Scoring and selection.
    metrics: dict[str, dict[str, dict]] = {}
    items_by_system: dict[str, dict[str, list[dict]]] = {}
    with stage.timer("score"):
        for ds in datasets:
            judge = make_judge(ds.semantics, cfg)
            metrics[ds.name], items_by_system[ds.name] = _score_dataset(
                ds, systems, pool_systems, preds, scores, judge, cfg
            )
    with stage.timer("statistics"):
        for dataset, entries in metrics.items():
            add_statistics(entries, items_by_system[dataset], seed=cfg.seed)
    _write_back(stage.dir, systems, datasets, preds, items_by_system)

    # 4. Artifacts.
    write_json(stage.path("metrics.json"), metrics)
    selection = selection_summary(metrics, cfg.num_candidates)
    write_json(stage.path("selection.json"), selection)
    write_json(stage.path("generation.json"), {"systems": gen_info, "notes": notes})
    with stage.timer("report"):
        write_eval_report(cfg, stage.dir, metrics, items_by_system, selection, gen_info, notes)
    return metrics


def _check_params(cfg: EvalParams) -> None:
    names = {entry.split("=", 1)[0].strip() for entry in cfg.systems} | {"base", *STAGE_SYSTEMS}
    unknown = [s for s in cfg.best_of_n_systems if "=" not in s and s not in names]
    if unknown:
        raise EvalStageError(
            f"eval parameter 'best_of_n_systems': {unknown} are not systems; use names from "
            f"'systems' ({cfg.systems}) or base/{'/'.join(STAGE_SYSTEMS)}"
        )
    if any(s != "greedy" for s in cfg.strategies) and cfg.best_of_n_systems and cfg.num_candidates < 2:
        raise EvalStageError(
            "eval parameter 'num_candidates' must be at least 2 for vote/rm/oracle selection "
            "(or set best_of_n_systems: [])"
        )


def best_of_n_names(cfg: EvalParams) -> set[str]:
    """The names of the systems best of N runs for (``name`` of a ``name=spec`` entry)."""
    return {entry.split("=", 1)[0].strip() for entry in cfg.best_of_n_systems}


def _dataset_notes(datasets: list[EvalSet]) -> list[str]:
    notes = []
    for ds in datasets:
        if ds.skipped:
            missing = ", ".join(f"{db} ({n})" for db, n in sorted(ds.skipped.items()))
            notes.append(
                f"{ds.name}: {sum(ds.skipped.values())} of {ds.total} questions skipped because "
                f"their database file is missing: {missing}."
            )
        if ds.systems is not None:
            notes.append(
                f"{ds.name}: best of N on a seeded sample of {len(ds.examples)} of the {ds.total} "
                f"dev questions, for {', '.join(sorted(ds.systems))}; greedy and each selector "
                "are scored on the same sample."
            )
            continue
        notes.append(
            f"{ds.name}: {len(ds.examples)} questions evaluated (of {ds.total}), "
            f"'{ds.semantics}' comparison semantics."
        )
    return notes


def _reward_scores(cfg, systems, pool_systems, datasets, preds, make_scorer, stage):
    """{(dataset, system): [[score per candidate] per question]} or {} with a note why not.

    With the default scorer (this run's reward model) the scores of each pool are kept in
    ``rm_scores_<system>_<dataset>.json`` and reused while the reward model (its manifest) and
    the pool's candidates are unchanged: a re-run of 06_eval does not score every pool again
    (16.6 minutes for the spider profile's 400 x 8)."""
    if not set(RM_STRATEGIES) & set(cfg.strategies) or not pool_systems:
        return {}, None
    if not reward_scorer_available(cfg):
        return {}, (
            f"rm@{cfg.num_candidates} skipped: the reward model stage did not run for run "
            f"'{cfg.run}' ({cfg.run_dir / 'reward_model'} has no finished model); run "
            "notebooks/05_reward_model.ipynb to add it."
        )
    cacheable = make_scorer is default_scorer_factory
    scores: dict[tuple[str, str], list[list[float]]] = {}
    todo = []
    for system in systems:
        if system.name not in pool_systems:
            continue
        for ds in datasets:
            if ds.best_of_n and ds.evaluates(system.name):
                records = preds[system.name][ds.name]
                cached = _cached_rm_scores(cfg, stage.dir, system.name, ds.name, records) if cacheable else None
                if cached is not None:
                    scores[(ds.name, system.name)] = cached
                else:
                    todo.append((system, ds, records))
    if not todo:
        return scores, None
    with stage.timer("reward_model"):
        scorer = make_scorer(cfg)
        try:
            for system, ds, records in todo:
                scores[(ds.name, system.name)] = rm_scores(scorer, records, ds.examples, system)
                if cacheable:
                    _keep_rm_scores(cfg, stage.dir, system.name, ds.name, records, scores[(ds.name, system.name)])
        finally:
            del scorer
            free_memory()
    return scores, None


def _rm_scores_fingerprint(cfg, records: list[dict]) -> dict[str, str | None]:
    """What a pool's reward-model scores depend on: the reward model and the candidates."""
    import hashlib

    pools = [[rec["key"], rec.get("candidates") or []] for rec in records]
    return {"reward_model_manifest_sha256": stage_manifest_sha256(cfg, "reward_model"),
            "candidates_sha256": hashlib.sha256(json.dumps(pools).encode()).hexdigest()[:16]}


def _rm_scores_path(eval_dir: Path, system: str, dataset: str) -> Path:
    return Path(eval_dir) / f"rm_scores_{system}_{dataset}.json"


def _cached_rm_scores(cfg, eval_dir: Path, system: str, dataset: str, records: list[dict]):
    path = _rm_scores_path(eval_dir, system, dataset)
    if not path.is_file():
        return None
    kept = read_json(path)
    return kept["scores"] if kept.get("fingerprint") == _rm_scores_fingerprint(cfg, records) else None


def _keep_rm_scores(cfg, eval_dir: Path, system: str, dataset: str, records: list[dict], scores) -> None:
    # json writes -inf (a candidate without SQL) as -Infinity and reads it back
    write_json(_rm_scores_path(eval_dir, system, dataset),
               {"fingerprint": _rm_scores_fingerprint(cfg, records), "scores": scores})


def _score_dataset(ds, systems, pool_systems, preds, scores, judge, cfg):
    """Metrics and items of every system/strategy on one dataset."""
    n = cfg.num_candidates
    metrics: dict[str, dict] = {}
    items: dict[str, list[dict]] = {}

    def add(key: str, picks: list[str]) -> None:
        metrics[key], items[key] = score(ds.examples, picks, judge)

    for system in systems:
        if not ds.evaluates(system.name):
            continue
        records = preds[system.name][ds.name]
        greedy_key = strategy_key(system.name, "greedy", n)
        add(greedy_key, [r["pred_sql"] for r in records])
        if system.revise:
            metrics[greedy_key]["revision"] = revision_summary(records, items[greedy_key])
        if cfg.ves_repeats:
            metrics[greedy_key].update(efficiency(ds.examples, items[greedy_key], judge, cfg.ves_repeats))
        if system.name not in pool_systems or not ds.best_of_n:
            continue
        if "vote" in cfg.strategies:
            add(strategy_key(system.name, "vote", n), pick_vote(records, ds.examples, judge))
        rm = scores.get((ds.name, system.name))
        if "rm" in cfg.strategies and rm is not None:
            add(strategy_key(system.name, "rm", n), pick_by_scores(records, rm, ds.examples, judge))
        if "rm_vote" in cfg.strategies and rm is not None:
            add(strategy_key(system.name, "rm_vote", n), pick_rm_vote(records, rm, ds.examples, judge))
        if "oracle" in cfg.strategies:
            add(strategy_key(system.name, "oracle", n), pick_oracle(records, ds.examples, judge))
    return metrics, items


def revision_summary(records: list[dict], items: list[dict]) -> dict[str, Any]:
    """What a ``+revise`` system's revision round did: answers revised (the first failed to run
    or held no SQL), and of those the ones now right (``repaired``; a revised answer was wrong
    before, so revision cannot lose a question)."""
    revised = [bool(r.get("revised")) for r in records]
    repaired = sum(was and bool(it["correct"]) for was, it in zip(revised, items))
    n = sum(revised)
    return {"revised": n, "repaired": repaired, "repair_rate": round(repaired / n, 4) if n else None}


# --------------------------------------------------------------------------------------------
# Intervals and paired comparisons
# --------------------------------------------------------------------------------------------

# Training steps compared greedy to greedy: each stage against the model it started from.
TRAINING_STEPS = (("base", "sft"), ("sft", "grpo"), ("sft", "dpo"), ("sft", "revision_sft"),
                  # the policy trained on revision against SFT, both answering then revising on error
                  ("sft+revise", "revision_sft+revise"))
# Variant suffixes (systems.VARIANT_SUFFIXES) are compared against the same model without them
# (free -> constrained decoding, whole schema -> pruned schema, one answer -> answer + revision).


def comparison_plan(keys: list[str]) -> list[tuple[str, str]]:
    """The ``(before, after)`` pairs of system/strategy keys that the report compares.

    Of the keys present: base -> sft, sft -> grpo, sft -> dpo, sft -> revision_sft and
    sft+revise -> revision_sft+revise (greedy); each variant's plain
    model -> the variant (``sft/greedy`` -> ``sft+constrained/greedy``, the last suffix dropped);
    and, per best-of-N system, its greedy answer -> each selector and the oracle.
    """
    present = set(keys)
    plan: list[tuple[str, str]] = []

    def want(before: str, after: str) -> None:
        if before in present and after in present and (before, after) not in plan:
            plan.append((before, after))

    for before, after in TRAINING_STEPS:
        want(f"{before}/greedy", f"{after}/greedy")
    for key in keys:
        system, strategy = key.split("/", 1)
        if strategy != "greedy":
            want(f"{system}/greedy", key)
            continue
        for suffix in VARIANT_SUFFIXES:
            if system.endswith(suffix):
                want(f"{system[: -len(suffix)]}/greedy", key)
    return plan


def _interval(k: int, n: int) -> list[float] | None:
    ci = wilson_interval(k, n)
    return None if ci is None else [ci[0], ci[1]]


def add_intervals(summary: dict[str, Any], items: list[dict]) -> None:
    """Set ``ex_ci`` (95% Wilson interval) on a summary and on each of its by_difficulty and
    by_db groups, counting the right answers in ``items`` (the questions the summary scored)."""
    summary["ex_ci"] = _interval(sum(bool(it["correct"]) for it in items), len(items))
    for group_field, item_field in (("by_difficulty", "difficulty"), ("by_db", "db_id")):
        right = Counter(str(it.get(item_field, "unknown")) for it in items if it["correct"])
        for name, group in summary.get(group_field, {}).items():
            group["ex_ci"] = _interval(right[name], group["n"])


def _question_ids(items: list[dict]) -> set:
    return {it["question_id"] for it in items}


def add_comparisons(entries: dict[str, dict], items: dict[str, list[dict]], *, seed: int) -> None:
    """Put each planned paired comparison in ``entries[after]["comparisons"][before]``.

    Only systems scored on the same question ids are paired (items matched by id, not position).
    """
    from .report import comparison_sentence

    for before, after in comparison_plan(list(entries)):
        if _question_ids(items[before]) != _question_ids(items[after]):
            continue
        result = compare_items(items[before], items[after], seed=seed)
        if result is None:  # no questions: nothing to compare
            continue
        record = result.as_dict()
        record["sentence"] = comparison_sentence(before, after, record)
        entries[after].setdefault("comparisons", {})[before] = record


def add_statistics(entries: dict[str, dict], items: dict[str, list[dict]], *, seed: int) -> None:
    """Intervals on every EX of one dataset's entries, then the paired comparisons."""
    for key, summary in entries.items():
        add_intervals(summary, items[key])
    add_comparisons(entries, items, seed=seed)


def efficiency(examples: list[Example], items: list[dict], judge, repeats: int) -> dict[str, float]:
    """BIRD's VES and mini-dev's R-VES of one system's predictions (timed ``repeats`` times)."""
    from .ves import rves, time_ratio, ves

    ratios = [
        time_ratio(ex.db_path, item["pred_sql"], ex.sql, judge, repeats=repeats) if item["correct"] else 0.0
        for ex, item in zip(examples, items)
    ]
    return {"ves": round(ves(ratios), 2), "rves": round(rves(ratios), 2)}


def _write_back(eval_dir, systems, datasets, preds, items_by_system) -> None:
    """Add each question's verdicts to the predictions files, for a reader browsing them."""
    for system in systems:
        rows = []
        for ds in datasets:
            for index, record in enumerate(preds[system.name].get(ds.name, [])):
                verdicts = {
                    key.split("/", 1)[1]: {
                        "sql": items[index].get("pred_sql"),
                        "correct": items[index].get("correct"),
                        "error": _plain_error(items[index].get("error")),
                    }
                    for key, items in items_by_system[ds.name].items()
                    if key.split("/", 1)[0] == system.name
                }
                greedy = verdicts.get("greedy", {})
                rows.append({**record, "correct": greedy.get("correct"),
                             "error": greedy.get("error"), "selected": verdicts})
        write_jsonl(predictions_path(eval_dir, system.name), rows)


def _plain_error(error: Any) -> Any:
    return getattr(error, "value", error)


# --------------------------------------------------------------------------------------------
# Oracle headroom and what selection recovers
# --------------------------------------------------------------------------------------------


def selection_summary(metrics: dict[str, dict[str, dict]], n: int) -> dict[str, dict[str, dict]]:
    """Per dataset and best-of-N system: each strategy's EX, the headroom and its recovery.

    ``headroom`` = oracle - greedy (what a perfect picker could add); ``<s>_recovered`` =
    (strategy - greedy) / headroom, the share of that headroom a strategy wins (None when
    there is no headroom).
    """
    out: dict[str, dict[str, dict]] = {}
    for dataset, entries in metrics.items():
        for key in entries:
            system, strategy = key.split("/", 1)
            if strategy != f"oracle@{n}":
                continue
            row: dict[str, Any] = {
                s: entries.get(strategy_key(system, s, n), {}).get("ex")
                for s in STRATEGIES
            }
            headroom = row["oracle"] - row["greedy"] if row["greedy"] is not None else None
            row["headroom"] = round(headroom, 4) if headroom is not None else None
            for s in SELECTORS:
                gain = None if row[s] is None or not headroom else (row[s] - row["greedy"]) / headroom
                row[f"{s}_recovered"] = round(gain, 4) if gain is not None else None
            out.setdefault(dataset, {})[system] = row
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def write_eval_report(cfg, eval_dir, metrics, items_by_system, selection, gen_info, notes) -> Path:
    """eval/report.md: the engine's report (tables and plots per dataset) plus this stage's parts.

    A "Run" section goes first (systems, models, data, notes such as skipped systems), the
    best-of-N headroom table and plot and the generation timings after the engine's sections.
    """
    from .report import write_report

    eval_dir = Path(eval_dir)
    path = Path(write_report(metrics, eval_dir, items_by_system=items_by_system, plots=cfg.plots))
    text = path.read_text(encoding="utf-8")
    intro_end = text.find("\n## ")
    head, body = (text, "") if intro_end < 0 else (text[: intro_end + 1], text[intro_end + 1 :])
    tail = (_best_of_n_section(cfg, selection, metrics, eval_dir) + _ves_section(metrics, cfg)
            + _generation_section(gen_info))
    atomic_write_text(path, head + _run_section(cfg, gen_info, notes) + body.rstrip() + "\n\n" + tail)
    return path


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _variant_note(info: dict) -> str:
    """How a system's prompts or decoding differ from its plain model's (empty when they don't)."""
    notes = []
    if info.get("constrained"):
        notes.append("decoding constrained to the schema's names")
    if info.get("linking_model"):
        pruned = (f" ({info['pruned_questions']} of {info['generated']} newly generated questions pruned; "
                  "the others show the whole schema)") if "pruned_questions" in info else ""
        notes.append(f"schema pruned by the linking model `{info['linking_model']}`{pruned}")
    return "; " + "; ".join(notes) if notes else ""


def _run_section(cfg: EvalParams, gen_info: dict[str, dict], notes: list[str]) -> str:
    lines = ["## Run", "", f"Run `{cfg.run}` (profile {cfg.profile}). Systems:", ""]
    lines += [f"- **{name}**: `{info['spec']}`{_variant_note(info)}" for name, info in gen_info.items()]
    lines += ["", "Greedy decoding for every system; " + (
        f"best of {cfg.num_candidates} for {', '.join(cfg.best_of_n_systems)} (the greedy answer plus "
        f"{cfg.num_candidates - 1} samples at temperature {cfg.temperature}; strategies: "
        f"{', '.join(cfg.strategies)})." if cfg.best_of_n_systems else "no best-of-N system."
    ), ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n\n"


def _best_of_n_section(cfg: EvalParams, selection: dict, metrics: dict, eval_dir: Path) -> str:
    from .report import ex_with_interval

    n = cfg.num_candidates
    lines = [f"## Best of {n}: the oracle's headroom and what selection recovers", ""]
    if not selection:
        return "\n".join(lines + ["No best-of-N results in this run.", "", ""])
    lines += [
        "EX in % with its 95% interval (Wilson, over the n questions). *headroom* = oracle - greedy: "
        "what a perfect picker would add; *recovered* = (strategy - greedy) / headroom, the share of "
        "that headroom a strategy wins. Whether a strategy's gain over greedy is more than noise: "
        "see the paired comparisons above.",
        "",
        "*rm* = the reward model's top-scored candidate; *rm_vote* = the execution-result vote "
        "with each candidate weighted by sigmoid(its reward-model score).",
        "",
        "| dataset | system | n | " + " | ".join(STRATEGIES) + " | headroom | "
        + " | ".join(f"{s} recovered" for s in SELECTORS) + " |",
        "|---|---|---|" + "---|" * (len(STRATEGIES) + 1 + len(SELECTORS)),
    ]
    for dataset, rows in selection.items():
        for system, r in rows.items():
            entries = {s: metrics[dataset].get(strategy_key(system, s, n)) for s in STRATEGIES}
            cells = [str(entries["greedy"]["n"]) if entries["greedy"] else "-"]
            cells += [ex_with_interval(entries[s]) if entries[s] else "-" for s in STRATEGIES]
            cells += [_fmt(r["headroom"])] + [_fmt(r.get(f"{s}_recovered")) for s in SELECTORS]
            lines.append(f"| {dataset} | {system} | " + " | ".join(cells) + " |")
    lines.append("")
    if cfg.plots:
        lines += [f"![best of {n}]({plot_best_of_n(selection, eval_dir, n, metrics)})", ""]
    return "\n".join(lines) + "\n"


def _ves_section(metrics: dict, cfg: EvalParams) -> str:
    from .report import ex_with_interval

    rows = [(d, k, m) for d, entries in metrics.items() for k, m in entries.items() if "ves" in m]
    if not rows:
        return ""
    lines = ["## Efficiency: VES and R-VES of the greedy predictions", "",
             f"BIRD's definitions; each right prediction and its gold query timed {cfg.ves_repeats} times "
             "on this machine (compare systems within one run only).", "",
             "| dataset | system/strategy | n | EX % [95% CI] | VES | R-VES |", "|---|---|---|---|---|---|"]
    lines += [f"| {d} | {k} | {m['n']} | {ex_with_interval(m)} | {m['ves']:.1f} | {m['rves']:.1f} |"
              for d, k, m in rows]
    return "\n".join(lines) + "\n\n"


def _generation_section(gen_info: dict[str, dict]) -> str:
    lines = ["## Generation", "", "Questions generated now or reused from eval/predictions_<system>.jsonl.", "",
             "| system | generated | reused | seconds | s per question |", "|---|---|---|---|---|"]
    for name, info in gen_info.items():
        per_q = info["seconds_per_question"]
        lines.append(f"| {name} | {info['generated']} | {info['reused']} | {info['seconds']} "
                     f"| {per_q if per_q is not None else '-'} |")
    return "\n".join(lines) + "\n"


def plot_best_of_n(selection: dict, eval_dir: Path, n: int, metrics: dict | None = None) -> str:
    """Grouped bars of greedy / vote / rm / oracle EX per dataset and system, with 95% intervals
    as error bars when ``metrics`` is given; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import error_bars, ex_interval

    rows = [(d, s, r) for d, systems in selection.items() for s, r in systems.items()]
    strategies = list(STRATEGIES)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(rows) + 1.5), 3.4))
    width = 0.8 / len(strategies)
    for j, strategy in enumerate(strategies):
        values = [100 * (r.get(strategy) or 0.0) for _, _, r in rows]
        entries = [(metrics or {}).get(d, {}).get(strategy_key(s, strategy, n)) for d, s, _ in rows]
        yerr = error_bars(values, [ex_interval(e) if e else None for e in entries])
        ax.bar([i + j * width for i in range(len(rows))], values, width, yerr=yerr,
               error_kw={"elinewidth": 0.8, "capsize": 2},
               label=strategy if strategy == "greedy" else f"{strategy}@{n}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [f"{d}\n{s}" for d, s, _ in rows])
    ax.set_ylabel("EX (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"Best of {n}: selection strategies against the oracle", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    relative = "plots/best_of_n.png"
    (eval_dir / "plots").mkdir(parents=True, exist_ok=True)
    fig.savefig(eval_dir / relative, dpi=110)
    plt.close(fig)
    return relative


def comparison_frame(metrics: dict[str, dict[str, dict]]):
    """One pandas row per dataset and system/strategy: n, EX, its 95% interval and EX by difficulty (in %)."""
    import pandas as pd

    from ..data.example import DIFFICULTIES

    rows = []
    for dataset, entries in metrics.items():
        for key, m in entries.items():
            ci = m.get("ex_ci")
            row = {"dataset": dataset, "system/strategy": key, "n": m["n"], "EX %": round(100 * m["ex"], 1),
                   "EX 95% CI": "-" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"}
            for level, sub in m.get("by_difficulty", {}).items():
                row[f"{level} %"] = round(100 * sub["ex"], 1)
            rows.append(row)
    frame = pd.DataFrame(rows)
    # difficulty columns in the sources' own order (BIRD/bundled, then Spider), others last
    levels = [c for c in frame.columns if c.endswith(" %") and c != "EX %"]
    rank = {f"{d} %": i for i, d in enumerate(DIFFICULTIES)}
    ordered = sorted(levels, key=lambda c: (rank.get(c, len(rank)), c))
    return frame[[c for c in frame.columns if c not in levels] + ordered]


def selection_frame(eval_dir: str | Path):
    """The best-of-N table of eval/selection.json (EX, headroom and recovery in %)."""
    import pandas as pd

    from ..io import read_json

    selection = read_json(Path(eval_dir) / "selection.json")
    rows = [{"dataset": d, "system": s, **{k: None if v is None else round(100 * v, 1) for k, v in r.items()}}
            for d, systems in selection.items() for s, r in systems.items()]
    return pd.DataFrame(rows)


def examples_frame(eval_dir: str | Path, dataset: str = DEV, n: int = 6):
    """The first ``n`` questions of ``dataset`` with every system's greedy SQL (+ right, - wrong)."""
    import pandas as pd

    from ..io import read_jsonl

    table: dict[str, dict] = {}
    for path in sorted(Path(eval_dir).glob("predictions_*.jsonl")):
        system = path.stem.removeprefix("predictions_")
        for record in (r for r in read_jsonl(path) if r.get("dataset") == dataset):
            row = table.setdefault(record["question_id"], {"question": record["question"], "gold": record["gold_sql"]})
            mark = "+" if record.get("correct") else "-"
            row[system] = f"{mark} {record['pred_sql'] or '(no SQL)'}"
    return pd.DataFrame(list(table.values())[:n])


def show_plots(eval_dir: str | Path) -> list[Path]:
    """Display every PNG under eval/plots (in a notebook); returns their paths."""
    paths = sorted((Path(eval_dir) / "plots").glob("*.png"))
    try:
        from IPython.display import Image, display
    except ImportError:  # outside IPython: just list them
        return paths
    for path in paths:
        display(Image(filename=str(path)))
    return paths


def best_system(metrics: dict[str, dict[str, dict]], dataset: str = DEV) -> str:
    """The system whose greedy EX on ``dataset`` is highest (the first listed on ties)."""
    greedy = {k.split("/")[0]: m["ex"] for k, m in metrics.get(dataset, {}).items() if k.endswith("/greedy")}
    if not greedy:
        raise EvalStageError(f"no greedy results on {dataset!r} to choose a system from")
    return max(greedy, key=lambda name: (greedy[name], -list(greedy).index(name)))


def ask_setup(cfg: EvalParams, metrics: dict[str, dict[str, dict]]):
    """For the notebook's "ask the model" cell: the best system's generator and a dev question.

    Returns ``(system, generator, question, db_path)``; free the generator when done.
    """
    name = best_system(metrics)
    system = next(s for s in resolve_systems(cfg)[0] if s.name == name)
    example = load_datasets_quietly(cfg)[0]
    return system, default_generator_factory(system, cfg), example.question, example.db_path


def load_datasets_quietly(cfg: EvalParams) -> list[Example]:
    """The (subsampled) dev questions of this run, without recording inputs."""
    dev = read_examples(require_output(cfg, "data", "dev.jsonl"))
    kept, _ = drop_missing_databases(dev)
    return subsample(kept, cfg.max_dev_examples, cfg.seed)


# ---------------------------------------------------------------------------------------------
# The manifest's figures and the command line (the notebook: notebooks/src/06_eval.py)
# ---------------------------------------------------------------------------------------------


def headline(metrics: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """The figures 06_eval's manifest records, from the notebook and the command line alike:
    the whole of eval/metrics.json, since its figures are the table itself (each EX nested by
    dataset and system/strategy, with its interval and comparisons)."""
    return metrics


def ex_by_entry(metrics: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Flat ``{"dataset:system/strategy": ex}``: what the command line prints."""
    return {f"{d}:{k}": round(m["ex"], 4) for d, entries in metrics.items() for k, m in entries.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.evaluate.stage --params params/smoke/eval.yaml --run smoke [--set k=v]``

    (``python -m nl2sql_lib.evaluate`` is the evaluator of prediction files, not this stage.)
    """
    import json

    from ..runs import start_stage_from_command_line

    cfg, stage = start_stage_from_command_line(
        "eval", argv, description="06_eval without the notebook: every system, best of N, one report",
        example="params/smoke/eval.yaml", prog="python -m nl2sql_lib.evaluate.stage")
    metrics = run_eval(cfg, stage)
    stage.finish(headline(metrics))
    print(json.dumps(ex_by_entry(metrics), indent=1))
    print(f"report: {stage.dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
