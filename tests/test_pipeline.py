"""The pipeline runner on a throw-away project: order, failure reporting, resume.

The real notebooks run end to end on the smoke profile in tests/test_smoke_pipeline.py.
"""

from pathlib import Path

import pytest

from nl2sql_lib.config import ParamsError
from nl2sql_lib.notebook_tools import write_notebook
from nl2sql_lib.pipeline import StageFailed, plan, resolve_stage, run_pipeline, run_summary


def make_project(root: Path, sft_code: str) -> Path:
    (root / "params" / "smoke").mkdir(parents=True)
    (root / "params" / "smoke" / "data.yaml").write_text("seed: 1\n")
    (root / "params" / "smoke" / "sft.yaml").write_text("seed: 2\n")
    write_notebook(root / "notebooks" / "01_data.ipynb", "data", "toy", [
        ("code", "(stage.dir / 'train.jsonl').write_text('{}\\n')\nstage.finish({'n': 1})"),
    ])
    write_notebook(root / "notebooks" / "02_sft.ipynb", "sft", "toy", [("code", sft_code)])
    return root


def test_resolve_stage_accepts_all_spellings():
    assert resolve_stage("03_grpo") == resolve_stage("grpo") == resolve_stage("3") == "grpo"
    with pytest.raises(ParamsError, match="known"):
        resolve_stage("07_deploy")


def test_bad_parameter_file_stops_before_anything_runs(tmp_path):
    root = make_project(tmp_path, "stage.finish({})")
    (root / "params" / "smoke" / "sft.yaml").write_text("sed: 2\n")
    with pytest.raises(ParamsError, match="sft.yaml"):
        plan("smoke", "r", "01_data", "06_eval", root=root)
    assert not (root / "outputs").exists()


@pytest.mark.slow
def test_failing_stage_names_notebook_and_cell_and_keeps_earlier_outputs(tmp_path):
    root = make_project(tmp_path, "raise ValueError('planted failure')")
    with pytest.raises(StageFailed) as err:
        run_pipeline("smoke", "r", root=root)
    message = str(err.value)
    assert "02_sft" in message and "cell" in message and "planted failure" in message
    assert "FROM=02_sft" in message
    data_dir = root / "outputs" / "r" / "data"
    assert (data_dir / "manifest.json").is_file() and (data_dir / "train.jsonl").is_file()

    # Fix the notebook and resume from the failed stage: 01_data is not run again.
    make_project(tmp_path / "fixed", "stage.finish({'ok': True})")
    fixed_nb = (tmp_path / "fixed" / "notebooks" / "02_sft.ipynb").read_text()
    (root / "notebooks" / "02_sft.ipynb").write_text(fixed_nb)
    before = (data_dir / "manifest.json").stat().st_mtime_ns
    summary = run_pipeline("smoke", "r", first="02_sft", root=root)
    assert list(summary["stages"]) == ["02_sft"]
    assert (root / "outputs" / "r" / "sft" / "manifest.json").is_file()
    assert (data_dir / "manifest.json").stat().st_mtime_ns == before
    table = run_summary(root / "outputs" / "r")
    assert "| 01_data |" in table and "n 1" in table
    assert "| 02_sft | not finished" not in table
    assert "| 03_grpo | not finished |" in table


def test_relative_input_paths_are_checked_from_the_project_root(tmp_path, monkeypatch):
    """papermill runs the notebooks in the project root, so validation looks there too."""
    root = make_project(tmp_path / "project", "stage.finish({})")
    (root / "data").mkdir()
    (root / "data" / "questions.jsonl").write_text("")
    (root / "params" / "smoke" / "data.yaml").write_text(
        "sources:\n  - type: jsonl\n    path: data/questions.jsonl\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert [item.stage for item in plan("smoke", "r", "01_data", "02_sft", root=root)] == ["data", "sft"]
    (root / "data" / "questions.jsonl").unlink()
    with pytest.raises(ParamsError, match=r"data\.yaml(.|\n)*sources\.0\.path(.|\n)*data/questions\.jsonl"):
        plan("smoke", "r", "01_data", "02_sft", root=root)
