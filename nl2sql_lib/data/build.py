"""The 01_data stage: load the sources, label schema links, add reasoning, write the splits.

    stage = StageRun(cfg, "data").start()
    metrics = run_data(cfg, stage)       # data/train.jsonl, data/dev.jsonl, data/stats.json
    stage.finish(headline(metrics))

    python -m nl2sql_lib.data.build --params params/smoke/data.yaml --run smoke [--set key=value]

The splits are written in full: a profile that trains on fewer examples subsamples in its own
training stage. Databases the loaders create (bundled benchmark, sql-create-context) live under
``data/databases/``; the examples point at them, and at external datasets where they are.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..io import DataFileError, read_json, write_json
from .example import Example, write_examples
from .linking import schema_links
from .loaders import SPLITS, load_source
from .reasoning import generate_reasoning, make_teacher
from .schema import MissingDatabase, read_schema
from .stats import (
    dataset_stats,
    headline as stats_headline,
    plot_difficulty_by_db,
    plot_prompt_lengths,
    plot_schema_sizes,
    token_counters,
)


def load_sources(cfg, work_dir: Path, stage=None) -> tuple[dict[str, list[Example]], dict[str, dict]]:
    """All of ``cfg.sources`` merged by split, and each source's loader report by name."""
    splits: dict[str, list[Example]] = {split: [] for split in SPLITS}
    reports: dict[str, dict] = {}
    for source in cfg.sources:
        loaded = load_source(source, work_dir, seed=cfg.bundled_seed)
        name = source.name or source.type
        if name in reports:
            raise DataFileError(
                f"two data sources are named {name!r}: give each a distinct 'name' in the parameters"
            )
        reports[name] = loaded.report
        for split in SPLITS:
            splits[split].extend(loaded[split])
        if stage is not None:
            for path in loaded.report.get("files", []):
                stage.record_input(path)
            if "db_root" in loaded.report:  # generated databases: their hashes show determinism
                stage.record_input(loaded.report["db_root"])
    _check_unique_ids(splits)
    return splits, reports


def _check_unique_ids(splits: dict[str, list[Example]]) -> None:
    counts = Counter(e.question_id for examples in splits.values() for e in examples)
    duplicates = [qid for qid, n in counts.items() if n > 1]
    if duplicates:
        raise DataFileError(
            f"{len(duplicates)} question ids appear more than once across the sources "
            f"(e.g. {', '.join(duplicates[:5])}): the same file loaded twice, or two sources "
            f"with clashing ids"
        )


def attach_schema_links(examples: list[Example]) -> int:
    """Set ``schema_links`` from each gold SQL; returns how many got at least one table."""
    linked = 0
    for example in examples:
        if example.extra.get("missing_db"):
            continue
        try:
            schema = read_schema(example.db_path, sample_values=0)
        except MissingDatabase:
            continue
        example.schema_links = schema_links(example.sql, schema)
        linked += bool(example.schema_links["tables"])
    return linked


def add_reasoning(cfg, train: list[Example], run_dir=None) -> dict:
    """Teacher reasoning for the training split (``cfg.reasoning_teacher``); returns the report."""
    teacher = make_teacher(cfg.reasoning_teacher, cfg.reasoning_teacher_model, run_dir=run_dir)
    if teacher is None:
        return {"teacher": "none"}
    kept, report = generate_reasoning(
        train, teacher, schema_params=cfg.schema_render, limit=cfg.reasoning_limit, progress=True
    )
    by_id = {e.question_id: e for e in kept}
    for index, example in enumerate(train):
        if example.question_id in by_id:
            train[index] = by_id[example.question_id]
    return {"teacher": f"{cfg.reasoning_teacher}:{cfg.reasoning_teacher_model}", **report}


def trainable(examples: list[Example]) -> list[Example]:
    """The examples whose database file exists (the others are marked ``missing_db``)."""
    return [example for example in examples if not example.extra.get("missing_db")]


def run_data(cfg, stage) -> dict:
    """Run 01_data for ``cfg`` (:class:`~nl2sql_lib.config.DataParams`); returns headline metrics."""
    work_dir = stage.dir
    with stage.timer("load"):
        splits, reports = load_sources(cfg, work_dir, stage)
    with stage.timer("schema_links"):
        for examples in splits.values():
            attach_schema_links(examples)
    with stage.timer("reasoning"):
        reasoning = add_reasoning(cfg, splits["train"], run_dir=cfg.run_dir)
    with stage.timer("write"):
        # A training question whose database file is missing cannot be trained on (no schema
        # for its prompt, nothing to execute its SQL against), so train.jsonl leaves it out;
        # dev.jsonl keeps it marked so 06_eval reports it as skipped. stats.json lists both.
        write_examples(stage.path("train.jsonl"), trainable(splits["train"]))
        write_examples(stage.path("dev.jsonl"), splits["dev"])
    with stage.timer("stats"):
        counters = token_counters(cfg.tokenizer)
        stats = dataset_stats(splits, cfg.schema_render, counters, reports=reports)
        stats["reasoning"] = reasoning
        write_json(stage.path("stats.json"), stats)
    if cfg.plots:
        with stage.timer("plots"):
            save_plots(stats, stage.dir / "plots", budget=cfg.token_budget)
    return stats_headline(stats)


def read_stats(stage_or_dir) -> dict:
    """``data/stats.json`` of a stage (a StageRun or its folder)."""
    folder = getattr(stage_or_dir, "dir", stage_or_dir)
    return read_json(Path(folder) / "stats.json")


def save_plots(stats: dict, folder: Path, budget: int | None = 384) -> list[Path]:
    """Write the notebook's three figures as PNGs under ``folder``."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in (
        ("difficulty_by_db", plot_difficulty_by_db(stats)),
        ("schema_sizes", plot_schema_sizes(stats)),
        ("prompt_lengths", plot_prompt_lengths(stats, budget=budget)),
    ):
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def stats_tables(stats: dict):
    """pandas tables for the notebook: counts by split x difficulty, and per-database sizes."""
    import pandas as pd

    difficulty = pd.DataFrame(stats["by_difficulty"]).fillna(0).astype(int)
    difficulty.loc["total"] = difficulty.sum()
    schema = pd.DataFrame(stats["schema"]).T.sort_values(["split", "columns"])
    prompts = pd.DataFrame({f"prompt ({k})": v for k, v in stats["prompt_tokens"].items()}).T
    prompts = prompts.drop(columns=["over"], errors="ignore")
    return difficulty, schema, prompts


# --------------------------------------------------------------------------------------------
# The manifest's figures and the command line (the notebook: notebooks/src/01_data.py)
# --------------------------------------------------------------------------------------------


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures 01_data's manifest records, from the notebook and the command line alike.

    ``run_data`` returns them already (:func:`nl2sql_lib.data.stats.headline` of stats.json:
    counts, databases, prompt lengths), so this copies them; every stage module has the same
    three steps (``run_<stage>``, ``headline``, ``main``).
    """
    return dict(metrics)


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.data.build --params params/smoke/data.yaml --run smoke [--set k=v]``"""
    import json

    from ..runs import start_stage_from_command_line

    cfg, stage = start_stage_from_command_line(
        "data", argv, description="01_data without the notebook: the splits, stats.json and plots",
        example="params/smoke/data.yaml", prog="python -m nl2sql_lib.data.build")
    metrics = run_data(cfg, stage)
    stage.finish(headline(metrics))
    print(json.dumps(headline(metrics), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
