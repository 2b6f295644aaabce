"""The 01_data stage: run_data on small sources, and the notebook through papermill (smoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nl2sql_lib.config import DataParams, SchemaParams, SourceParams, load_params
from nl2sql_lib.data.build import run_data, save_plots
from nl2sql_lib.data.example import read_examples
from nl2sql_lib.io import DataFileError
from nl2sql_lib.runs import StageRun
from tests.fixtures.bird.build_fixture import build_bird_fixture

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def _params(tmp_path, sources, **extra) -> DataParams:
    return DataParams(
        run="t", output_root=str(tmp_path / "outputs"), sources=sources, tokenizer=None,
        schema_render=SchemaParams(max_tokens=200), plots=False, **extra,
    )


def test_run_data_writes_splits_stats_and_links(tmp_path):
    bird = build_bird_fixture(tmp_path / "bird")
    cfg = _params(tmp_path, [
        SourceParams(type="bird", path=str(bird)),
        SourceParams(type="create_context", path=str(FIXTURES / "create_context.jsonl")),
    ])
    stage = StageRun(cfg, "data").start()
    metrics = run_data(cfg, stage)
    train = read_examples(stage.dir / "train.jsonl")
    dev = read_examples(stage.dir / "dev.jsonl")
    assert (len(train), len(dev)) == (2 + 4, 5)
    assert metrics["n_train"] == 6 and metrics["n_dev"] == 5 and metrics["db_overlap"] == 0
    # schema links attached from the gold SQL
    by_id = {e.question_id: e for e in dev}
    assert by_id["bird-dev-1"].schema_links["tables"] == ["gasstations", "transactions_1k"]
    # create-context databases live in the stage folder
    ctx = [e for e in train if e.source == "create_context"]
    assert all(Path(e.db_path).is_relative_to(stage.dir / "databases") for e in ctx)
    stats = json.loads((stage.dir / "stats.json").read_text())
    assert stats["counts"] == {"train": 6, "dev": 5}
    assert stats["by_source"]["train"] == {"bird": 2, "create_context": 4}
    assert stats["by_difficulty"]["dev"] == {"simple": 2, "moderate": 2, "challenging": 1}
    assert stats["db_difficulty"]["dev"]["debit_card"] == {"simple": 1, "moderate": 1, "challenging": 1}
    assert stats["schema"]["toxicology"]["tables"] == 4 and stats["schema"]["toxicology"]["foreign_keys"] == 5
    assert stats["schema"]["debit_card"]["schema_tokens"] <= 200
    assert stats["prompt_tokens"]["dev"]["n"] == 5 and stats["token_counter"] == "chars/3 estimate"
    assert stats["sources"]["create_context"]["skipped"] and stats["sources"]["bird"]["missing_db"] == 0
    assert str(bird / "dev" / "dev.json") in stage.inputs  # inputs recorded for the manifest
    assert not any("databases" in path for path in stage.inputs)  # create-context dbs are outputs
    # the plots render from the stats alone
    paths = save_plots(stats, tmp_path / "plots")
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.spider
def test_run_data_reports_spiders_missing_databases(spider_dev, tmp_path):
    cfg = _params(tmp_path, [SourceParams(type="spider", path=str(spider_dev / "dev.json"), limit=200)])
    stage = StageRun(cfg, "data").start()
    metrics = run_data(cfg, stage)
    stats = json.loads((stage.dir / "stats.json").read_text())
    missing = stats["missing_db"]["dev"]
    dev = read_examples(stage.dir / "dev.jsonl")
    assert metrics["missing_db"] == len(missing) > 0
    assert sorted(missing) == sorted(e.question_id for e in dev if e.db_id == "wta_1")
    assert stats["prompt_tokens"]["dev"]["n"] == 200 - len(missing)


def test_the_same_source_twice_is_an_error(tmp_path):
    bird = build_bird_fixture(tmp_path / "bird")
    source = SourceParams(type="bird", path=str(bird))
    cfg = _params(tmp_path, [source, source.model_copy(update={"name": "again"})])
    with pytest.raises(DataFileError, match="more than once"):
        run_data(cfg, StageRun(cfg, "data").start())


def test_profiles_validate():
    for path in ("params/data.yaml", "params/cpu/data.yaml", "params/smoke/data.yaml"):
        cfg = load_params("data", PROJECT_ROOT / path)
        assert [s.type for s in cfg.sources] == ["bundled"]


@pytest.mark.slow
def test_notebook_runs_on_the_smoke_profile(tmp_path):
    import papermill

    from nl2sql_lib.config import read_yaml

    parameters = {**read_yaml(PROJECT_ROOT / "params/smoke/data.yaml"), "run": "nb",
                  "output_root": str(tmp_path / "outputs")}
    papermill.execute_notebook(
        str(PROJECT_ROOT / "notebooks" / "01_data.ipynb"), str(tmp_path / "01_data.out.ipynb"),
        parameters=parameters, cwd=str(PROJECT_ROOT), progress_bar=False, kernel_name="python3",
    )
    data = tmp_path / "outputs" / "nb" / "data"
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["n_dev"] > 0
    assert sum(path.endswith(".sqlite") for path in manifest["inputs"]) == 10  # bundled db hashes
    train, dev = read_examples(data / "train.jsonl"), read_examples(data / "dev.jsonl")
    assert len(train) >= 1500 and not {e.db_id for e in train} & {e.db_id for e in dev}
    assert all(e.schema_links and e.schema_links["tables"] for e in train)
    stats = json.loads((data / "stats.json").read_text())
    assert stats["token_counter"] == "tiny:smollm2 tokenizer"
    assert stats["prompt_tokens"]["train"]["max"] <= 384
    assert {p.name for p in (data / "plots").iterdir()} == {
        "difficulty_by_db.png", "schema_sizes.png", "prompt_lengths.png"
    }


@pytest.mark.spider
def test_training_questions_without_a_database_stay_out_of_train_jsonl(spider_dev, tmp_path):
    """Spider's training folder lacks 2 databases: their questions cannot be trained on (no
    schema, nothing to execute), so train.jsonl leaves them out and stats.json lists them."""
    source = SourceParams(type="spider", path=str(spider_dev / "dev.json"), split="train", limit=200)
    cfg = _params(tmp_path, [source])
    stage = StageRun(cfg, "data").start()
    run_data(cfg, stage)
    stats = json.loads((stage.dir / "stats.json").read_text())
    train = read_examples(stage.dir / "train.jsonl")
    missing = stats["missing_db"]["train"]
    assert missing and len(train) == 200 - len(missing)
    assert not {e.question_id for e in train} & set(missing)
    assert all(Path(e.db_path).is_file() for e in train)
