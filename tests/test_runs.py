"""Stage folders and manifests."""

import json
import re
from pathlib import Path

import pytest

from nl2sql_lib.config import SFTParams
from nl2sql_lib.runs import MissingStageOutput, StageRun, require_output

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_manifest_records_parameters_versions_inputs_timings(tmp_path):
    params = SFTParams(run="r1", output_root=str(tmp_path))
    source = tmp_path / "input.txt"
    source.write_text("hello")
    stage = StageRun(params, "sft").start()
    stage.record_input(source)
    with stage.timer("train"):
        pass
    manifest = stage.finish({"loss": 0.5})
    on_disk = json.loads((tmp_path / "r1" / "sft" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest, default=str))
    assert on_disk["parameters"]["run"] == "r1"
    assert on_disk["versions"]["transformers"]
    assert on_disk["inputs"][str(source)] == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
    )
    assert "train" in on_disk["timings_s"] and on_disk["metrics"] == {"loss": 0.5}
    assert on_disk["peak_memory_mb"]["rss"] > 0
    # the commit of the project's checkout (+ "-dirty" with uncommitted changes to tracked
    # files); None only where the project is not a git checkout
    assert "git_commit" in on_disk
    if (PROJECT_ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", on_disk["git_commit"]), on_disk["git_commit"]
    else:
        assert on_disk["git_commit"] is None


def test_manifest_git_commit_is_none_outside_a_git_checkout(tmp_path, monkeypatch):
    from nl2sql_lib import runs

    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.setattr(runs, "PROJECT_ROOT", outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a parent repo
    manifest = StageRun(SFTParams(run="r", output_root=str(tmp_path)), "sft").start().finish()
    assert "git_commit" in manifest and manifest["git_commit"] is None


def test_restart_removes_the_manifest_but_keeps_other_files(tmp_path):
    params = SFTParams(run="r1", output_root=str(tmp_path))
    stage = StageRun(params, "sft").start()
    checkpoint = stage.path("checkpoints/checkpoint-5/state.json")
    checkpoint.write_text("{}")
    stage.finish({})
    StageRun(params, "sft").start()
    assert not (stage.dir / "manifest.json").exists()
    assert checkpoint.exists()  # a training stage resumes from it


def test_missing_earlier_output_says_which_notebook_to_run(tmp_path):
    params = SFTParams(run="r2", output_root=str(tmp_path))
    with pytest.raises(MissingStageOutput, match="01_data"):
        require_output(params, "data", "train.jsonl")


def test_schema_render_follows_parameter_then_policy_stage_then_data_stage(tmp_path):
    from nl2sql_lib.config import SchemaParams, TreeParams
    from nl2sql_lib.io import write_json
    from nl2sql_lib.runs import schema_render_for

    params = TreeParams(run="r", output_root=str(tmp_path))
    assert schema_render_for(params) == SchemaParams()  # nothing recorded yet: defaults
    write_json(tmp_path / "r" / "data" / "manifest.json",
               {"parameters": {"schema_render": {"style": "compact", "sample_values": 1}}})
    assert schema_render_for(params).style == "compact"
    write_json(tmp_path / "r" / "sft" / "metrics.json", {"schema_render": {"sample_values": 0}})
    assert schema_render_for(params, policy_spec="stage:sft").sample_values == 0
    assert schema_render_for(params, policy_spec="embedded:smollm2-135m-instruct").style == "compact"
    own = SchemaParams(max_tokens=128)
    assert schema_render_for(params, own, "stage:sft") is own


def test_one_schema_params_helper_picks_each_stages_policy(tmp_path):
    """runs.schema_params_for: GRPO follows its model's recorded rendering, the trees their
    policy's, SFT, the reward model and 06_eval the data stage's; a stage's own parameter wins."""
    from nl2sql_lib.config import (EvalParams, GRPOParams, RewardModelParams, SchemaParams, TreeParams)
    from nl2sql_lib.io import write_json
    from nl2sql_lib.runs import schema_params_for

    common = {"run": "r", "output_root": str(tmp_path)}
    write_json(tmp_path / "r" / "data" / "manifest.json", {"parameters": {"schema_render": {"style": "compact"}}})
    write_json(tmp_path / "r" / "sft" / "metrics.json", {"schema_render": {"max_tokens": 256}})
    follows_sft = [GRPOParams(**common), TreeParams(**common)]
    follows_data = [SFTParams(**common), RewardModelParams(**common), EvalParams(**common)]
    assert all(schema_params_for(p) == SchemaParams(max_tokens=256) for p in follows_sft)
    assert all(schema_params_for(p) == SchemaParams(style="compact") for p in follows_data)
    own = SchemaParams(sample_values=0)
    for params in (GRPOParams(**common, schema_render=own), TreeParams(**common, schema_render=own),
                   SFTParams(**common, schema_render=own), EvalParams(**common, schema_render=own)):
        assert schema_params_for(params) == own


def test_stage_command_line_parses_overrides_and_starts_the_stage(tmp_path):
    from nl2sql_lib.config import ParamsError
    from nl2sql_lib.runs import start_stage_from_command_line

    params_file = tmp_path / "sft.yaml"
    params_file.write_text("run: from_file\ntraining:\n  max_steps: 10\n")
    old_manifest = tmp_path / "cli" / "sft" / "manifest.json"
    old_manifest.parent.mkdir(parents=True)
    old_manifest.write_text("{}")  # left by an earlier run of the stage
    argv = ["--params", str(params_file), "--run", "cli", "--output-root", str(tmp_path),
            "--set", "training.max_steps=3"]

    params, stage = start_stage_from_command_line(
        "sft", argv, description="test", example="params/cpu/sft.yaml", log_level=None)

    assert isinstance(params, SFTParams)
    assert (params.run, params.training.max_steps) == ("cli", 3)
    assert stage.params is params and stage.stage == "sft"
    assert stage.dir == tmp_path / "cli" / "sft" and stage.dir.is_dir()
    assert not old_manifest.exists()  # started: the stage is not finished until it writes a new one
    stage.finish({})
    assert json.loads(old_manifest.read_text())["run"] == "cli"

    with pytest.raises(ParamsError, match="training.max_stpes"):
        start_stage_from_command_line("sft", ["--params", str(params_file), "--set", "training.max_stpes=3"],
                                      description="test", example="params/cpu/sft.yaml", log_level=None)


def test_stage_command_line_help_and_usage_errors_exit_like_argparse(capsys):
    from nl2sql_lib.runs import start_stage_from_command_line

    def run(argv):
        return start_stage_from_command_line(
            "tree", argv, description="04_revision_tree without the notebook", example="params/cpu/tree.yaml",
            prog="python -m nl2sql_lib.tree", log_level=None)

    with pytest.raises(SystemExit) as exit_help:
        run(["--help"])
    assert exit_help.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: python -m nl2sql_lib.tree")
    assert "04_revision_tree without the notebook" in help_text and "params/cpu/tree.yaml" in help_text
    with pytest.raises(SystemExit) as exit_usage:
        run([])  # --params is required
    assert exit_usage.value.code == 2
    assert "--params" in capsys.readouterr().err


def test_manifest_records_the_commit_the_stage_started_at(tmp_path, monkeypatch):
    from nl2sql_lib import runs

    commits = iter(["a" * 40, "b" * 40])  # HEAD moves while the stage runs
    monkeypatch.setattr(runs, "git_commit", lambda: next(commits))
    manifest = StageRun(SFTParams(run="r", output_root=str(tmp_path)), "sft").start().finish()
    assert manifest["git_commit"] == "a" * 40


def test_manifest_records_the_machine_and_the_hardware_decisions(tmp_path):
    from nl2sql_lib import hardware
    from nl2sql_lib.config import DataParams
    from nl2sql_lib.runs import StageRun

    hardware.log_decisions(hardware.choose_dtype("auto", hardware.Hardware(cuda=False)))  # an earlier stage's
    stage = StageRun(DataParams(run="r", output_root=str(tmp_path)), "data").start()
    t4 = hardware.Hardware(cuda=True, device_count=1, name="Tesla T4", capability=(7, 5))
    hardware.log_decisions(hardware.choose_dtype("bfloat16", t4))
    record = stage.finish({})["hardware"]
    assert record["decisions"] == [hardware.choose_dtype("bfloat16", t4).as_dict()]  # only this stage's
    assert "reason" in record["decisions"][0] and record["decisions"][0]["choice"] == "float16"
    assert record["machine"] and "cuda" in record


def test_stage_command_line_stops_on_a_memory_plan_that_cannot_fit(tmp_path, monkeypatch):
    """accelerate launch -m nl2sql_lib.train.grpo ...: the plan is checked before the stage starts."""
    from nl2sql_lib import hardware, memory_plan
    from nl2sql_lib.config import ParamsError
    from nl2sql_lib.runs import PROJECT_ROOT, start_stage_from_command_line

    t4 = hardware.Hardware(cuda=True, device_count=1, name="Tesla T4", capability=(7, 5), total_memory_gib=14.75)
    monkeypatch.setattr(memory_plan, "detect_hardware", lambda: t4)
    monkeypatch.chdir(PROJECT_ROOT)  # params/grpo.yaml's stage:sft resolves through the profile's sft.yaml
    argv = ["--params", "params/grpo.yaml", "--run", "cli", "--output-root", str(tmp_path)]
    with pytest.raises(ParamsError, match="does not fit|exceeds") as err:
        start_stage_from_command_line("grpo", argv, description="test", example="params/grpo.yaml", log_level=None)
    assert str(err.value).startswith("params/grpo.yaml: stage grpo")  # the error names the file
    assert not (tmp_path / "cli" / "grpo").exists()  # stopped before the stage started
    with pytest.raises(ParamsError) as err:  # --set overrides are named with the file
        start_stage_from_command_line("grpo", [*argv, "--set", "training.max_steps=3"], description="test",
                                      example="params/grpo.yaml", log_level=None)
    assert str(err.value).startswith("params/grpo.yaml with --set training.max_steps=3: stage grpo")
    params, stage = start_stage_from_command_line(
        "grpo", [*argv, "--set", "training.per_device_train_batch_size=8"],
        description="test", example="params/grpo.yaml", log_level=None)
    assert stage.dir.is_dir() and params.training.per_device_train_batch_size == 8


def test_quiet_library_chatter_drops_only_transformers_mtime_notice():
    """The notice fires when two checkpoints are saved within a second (tiny models) and asks
    nothing of the user; other warnings of that logger still reach its handlers."""
    import logging

    from transformers.utils import logging as transformers_logging

    from nl2sql_lib.runs import quiet_library_chatter

    quiet_library_chatter()
    quiet_library_chatter()  # idempotent: one filter
    logger = transformers_logging.get_logger("transformers.trainer_utils")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        logger.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
        logger.warning("something a user should read")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something a user should read"]
    assert sum(type(f).__name__ == "_DropMtimeNotice" for f in logger.filters) == 1
