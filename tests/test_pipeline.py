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


# --------------------------------------------------------------------------------------------
# Overrides: one key of one stage's file changed for a run (run_pipeline(overrides=...), --set)
# --------------------------------------------------------------------------------------------


def test_apply_overrides_sets_dotted_keys_in_a_copy():
    from nl2sql_lib.pipeline import apply_overrides

    values = {"model": {"spec": "Qwen/Qwen2.5-Coder-1.5B-Instruct", "dtype": "auto"}, "use_vllm": True}
    result = apply_overrides(values, {"model.spec": "tiny:smollm2", "use_vllm": False,
                                      "training.max_steps": 2})
    assert result == {"model": {"spec": "tiny:smollm2", "dtype": "auto"}, "use_vllm": False,
                      "training": {"max_steps": 2}}
    assert values["model"]["spec"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct"  # the file's dict is untouched
    with pytest.raises(ParamsError, match=r"sft\.yaml: override 'use_vllm\.x': 'use_vllm' is a value"):
        apply_overrides(values, {"use_vllm.x": 1}, origin="params/sft.yaml")
    with pytest.raises(ParamsError, match="not a dotted key"):
        apply_overrides(values, {"model.": 1})


def test_set_options_name_a_stage_and_read_the_value_as_yaml():
    from nl2sql_lib.pipeline import parse_set_options

    assert parse_set_options(["02_sft.training.max_steps=4", "sft.model.spec=tiny:smollm2",
                              "eval.use_vllm=false", "eval.spider_path=null"]) == {
        "sft": {"training.max_steps": 4, "model.spec": "tiny:smollm2"},
        "eval": {"use_vllm": False, "spider_path": None},
    }
    for bad in ("max_steps=4", "sft.training.max_steps", "sft.=1"):
        with pytest.raises(ParamsError, match="STAGE.KEY=VALUE"):
            parse_set_options([bad])
    with pytest.raises(ParamsError, match="unknown stage 'sftt'"):
        parse_set_options(["sftt.seed=1"])


def test_overrides_are_validated_with_the_file_and_reach_papermill(tmp_path):
    root = make_project(tmp_path, "stage.finish({})")
    (root / "params" / "smoke" / "sft.yaml").write_text("seed: 2\ntraining:\n  max_steps: 50\n  learning_rate: 0.001\n")
    (item_data, item_sft) = plan("smoke", "r", "01_data", "02_sft", root=root,
                                 overrides={"02_sft": {"training.max_steps": 3}})
    assert item_sft.parameters["training"] == {"max_steps": 3, "learning_rate": 0.001}
    assert item_sft.overrides == {"training.max_steps": 3} and item_data.overrides == {}
    with pytest.raises(ParamsError, match=r"sft\.yaml with overrides training\.max_step(.|\n)*training\.max_step"):
        plan("smoke", "r", "01_data", "02_sft", root=root, overrides={"sft": {"training.max_step": 3}})


def test_command_line_set_reaches_the_plan(tmp_path, monkeypatch, capsys):
    """--set goes through the same validation: a bad key stops before any notebook runs."""
    import nl2sql_lib.pipeline as pipeline

    seen = {}

    def fake_run_pipeline(profile, run, first, last, output_root, overrides=None):
        seen.update(profile=profile, overrides=overrides)
        return {"stages": {}}

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    assert pipeline.main(["--profile", "t4", "--set", "sft.training.max_steps=4", "--set", "eval.use_vllm=false"]) == 0
    assert seen == {"profile": "t4", "overrides": {"sft": {"training.max_steps": 4}, "eval": {"use_vllm": False}}}
    assert pipeline.main(["--profile", "t4", "--set", "max_steps=4"]) == 1
    assert "STAGE.KEY=VALUE" in capsys.readouterr().err


def test_every_profile_folder_has_a_valid_file_per_stage():
    """make pipeline PROFILE=<any> validates (the eval files may skip a missing Spider folder)."""
    from nl2sql_lib.config import STAGES
    from nl2sql_lib.pipeline import PROFILE_DIRS

    assert PROFILE_DIRS["t4"] == "params/t4"
    for profile in PROFILE_DIRS:
        assert [item.stage for item in plan(profile, "check", "01_data", "06_eval")] == list(STAGES), profile


# --------------------------------------------------------------------------------------------
# The memory plan at validation (nl2sql_lib.memory_plan through pipeline.plan)
# --------------------------------------------------------------------------------------------

PROJECT = Path(__file__).resolve().parent.parent


def _fake_card(monkeypatch, name: str, capability: tuple[int, int], gib: float) -> None:
    from nl2sql_lib import hardware

    card = hardware.Hardware(cuda=True, device_count=1, name=name, capability=capability, total_memory_gib=gib)
    monkeypatch.setattr(hardware, "detect_hardware", lambda: card)


def test_plan_checks_memory_on_a_gpu_and_names_the_file_and_parameter(monkeypatch, capsys):
    _fake_card(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), 79.15)
    # the reference GRPO file as it stood before gradient checkpointing: ~136 GiB by the estimate
    with pytest.raises(ParamsError) as caught:
        plan("gpu", "mem", "03_grpo", "03_grpo", root=PROJECT,
             overrides={"grpo": {"training.gradient_checkpointing": False}})
    message = str(caught.value)
    assert message.startswith(f"{PROJECT / 'params/grpo.yaml'} with overrides") and "gradient_checkpointing" in message
    # as shipped it fits, and the plan is printed beside the card's memory
    planned = plan("gpu", "mem", "02_sft", "06_eval", root=PROJECT)
    assert [p.stage for p in planned] == ["sft", "grpo", "tree", "reward_model", "eval"]
    out = capsys.readouterr().out
    assert "memory plans for 1 x NVIDIA A100-SXM4-80GB" in out and "GiB" in out


def test_t4_profile_fits_a_t4_and_the_reference_grpo_does_not(monkeypatch):
    _fake_card(monkeypatch, "Tesla T4", (7, 5), 14.75)
    assert len(plan("t4", "mem", "01_data", "06_eval", root=PROJECT)) == 6
    with pytest.raises(ParamsError, match="params/grpo.yaml.*per_device_train_batch_size"):
        plan("gpu", "mem", "03_grpo", "03_grpo", root=PROJECT)


def test_without_a_gpu_the_memory_plan_is_skipped_with_a_note(monkeypatch, capsys):
    from nl2sql_lib import hardware

    monkeypatch.setattr(hardware, "detect_hardware", lambda: hardware.Hardware(cuda=False))
    plan("gpu", "mem", "02_sft", "02_sft", root=PROJECT)
    assert "no CUDA GPU: memory plans not checked" in capsys.readouterr().out
