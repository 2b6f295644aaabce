"""Parameter files and notebook parameters: typed, with errors that name file, key and choices."""

from pathlib import Path

import pytest

from nl2sql_lib.config import (
    PARAMS_MODEL, STAGES, ParamsError, SFTParams, load_params, params_from_notebook, parse_params,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_every_stage_has_a_model_with_defaults():
    for stage in STAGES:
        params = PARAMS_MODEL[stage]()
        assert params.run == "default"


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = write(tmp_path, "run: x\nlerning_rate: 0.1\n")
    with pytest.raises(ParamsError) as err:
        load_params("sft", path)
    message = str(err.value)
    assert str(path) in message
    assert "lerning_rate" in message
    assert "training" in message and "lora" in message  # the valid keys are listed


def test_a_renamed_key_names_its_new_name(tmp_path):
    path = write(tmp_path, "max_dev_examples: 4\n")
    with pytest.raises(ParamsError) as err:
        load_params("sft", path)
    message = str(err.value)
    assert str(path) in message
    assert "'max_dev_examples' was renamed" in message and "'sample_dev_questions'" in message
    assert load_params("sft", write(tmp_path, "sample_dev_questions: 4\n")).sample_dev_questions == 4
    # eval keeps max_dev_examples (a seeded sample of the dev questions): not a renamed key there
    assert load_params("eval", write(tmp_path, "max_dev_examples: 4\n")).max_dev_examples == 4


def test_unknown_nested_key_lists_the_nested_choices(tmp_path):
    path = write(tmp_path, "training:\n  learning_rat: 0.1\n")
    with pytest.raises(ParamsError) as err:
        load_params("sft", path)
    assert "training.learning_rat" in str(err.value)
    assert "learning_rate" in str(err.value)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "training:\n  max_steps: lots\n")
    with pytest.raises(ParamsError) as err:
        load_params("sft", path)
    message = str(err.value)
    assert str(path) in message
    assert "training.max_steps" in message and "'lots'" in message


def test_wrong_choice_lists_the_choices(tmp_path):
    path = write(tmp_path, "task: translate\n")
    with pytest.raises(ParamsError) as err:
        load_params("sft", path)
    assert "'sql'" in str(err.value) and "'schema_linking'" in str(err.value)


def test_missing_source_path_is_reported(tmp_path):
    path = write(tmp_path, "sources:\n  - type: spider\n    path: /no/such/spider\n")
    with pytest.raises(ParamsError) as err:
        load_params("data", path)
    message = str(err.value)
    assert str(path) in message  # the file
    assert "key 'sources.0.path'" in message  # the key
    assert "path does not exist: '/no/such/spider'" in message  # the path
    assert "give an existing file or folder" in message  # what to do


def test_missing_spider_path_names_file_key_path_and_the_way_out(tmp_path):
    path = write(tmp_path, "spider_path: /no/such/spider-dev\n")
    with pytest.raises(ParamsError) as err:
        load_params("eval", path)
    message = str(err.value)
    assert str(path) in message and "spider_path" in message and "/no/such/spider-dev" in message
    assert "set spider_path: null" in message
    assert message.count("/no/such/spider-dev") == 1  # not repeated as "(got ...)"
    spider = tmp_path / "spider-dev"
    spider.mkdir()
    assert load_params("eval", path, spider_path=str(spider)).spider_path == str(spider)
    assert load_params("eval", path, spider_path=None).spider_path is None


def test_relative_input_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "shared" / "spider-dev").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    path = write(tmp_path, "spider_path: ../shared/spider-dev\n")
    monkeypatch.chdir(tmp_path / "project")
    assert load_params("eval", path).spider_path == "../shared/spider-dev"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as err:
        load_params("eval", path)
    assert f"relative to {tmp_path}" in str(err.value)  # says where it looked


@pytest.mark.parametrize("key", ["pairs_train", "pairs_test"])
def test_missing_reward_model_pairs_file_is_reported(tmp_path, key):
    path = write(tmp_path, f"{key}: /no/such/pairs.jsonl\n")
    with pytest.raises(ParamsError) as err:
        load_params("reward_model", path)
    message = str(err.value)
    assert str(path) in message and f"key '{key}'" in message and "/no/such/pairs.jsonl" in message
    assert f"{key}: null" in message  # the way back to this run's tree pairs
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("")
    assert getattr(load_params("reward_model", path, **{key: str(pairs)}), key) == str(pairs)


def test_missing_grpo_reward_model_folder_is_reported(tmp_path):
    path = write(tmp_path, "rewards:\n  reward_model: 0.5\nreward_model: /no/such/rm\n")
    with pytest.raises(ParamsError) as err:
        load_params("grpo", path)
    message = str(err.value)
    assert str(path) in message and "key 'reward_model'" in message and "/no/such/rm" in message
    assert "stage:reward_model" in message
    # stage:... names this run's stage, which need not exist before the pipeline runs it
    assert load_params("grpo", path, reward_model="stage:reward_model").reward_model == "stage:reward_model"


def test_unknown_stage_and_missing_file():
    with pytest.raises(ParamsError, match="known stages"):
        parse_params("dpo", {})
    with pytest.raises(ParamsError, match="not found"):
        load_params("sft", "/no/such/file.yaml")


def test_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, "run: from-file\n")
    assert load_params("sft", path, run="override").run == "override"


def test_notebook_parameters_are_checked_like_files():
    namespace = {"run": "nb", "training": {"max_steps": 3}, "In": [], "_": None, "Path": Path}
    params = params_from_notebook("sft", namespace)
    assert isinstance(params, SFTParams) and params.training.max_steps == 3
    with pytest.raises(ParamsError, match="max_stpes"):
        params_from_notebook("sft", {"run": "nb", "max_stpes": 3})


def test_notebook_params_file_is_read_and_overridden(tmp_path):
    path = write(tmp_path, "run: file\nseed: 7\n")
    params = params_from_notebook("sft", {"params_file": str(path), "run": "nb"})
    assert (params.run, params.seed) == ("nb", 7)


def _notebook_namespace(**parameters):
    """What a kernel holds after the parameters cell and the install cell."""
    import os
    import subprocess
    import sys

    namespace = {"In": [], "Out": {}, "_": None, "_i1": "", "os": os, "subprocess": subprocess, "sys": sys,
                 "params_file": None, "run": "lab",
                 "install_from": "git+https://github.com/nl2sql-lab/nl2sql-lab.git"}
    namespace.update(parameters)
    return namespace


def _run_later_cells(namespace, cfg, tmp_path):
    """What the validation cell and the cells after it leave in the kernel (02_sft's names)."""
    from nl2sql_lib.runs import StageRun

    namespace.update(
        params_from_notebook=params_from_notebook, StageRun=StageRun, cfg=cfg,
        stage=StageRun(cfg.model_copy(update={"output_root": str(tmp_path)}), "sft"),
        metrics={"train_loss": 0.4}, fig=object(), ax=object(), curve=[1.0, 0.5], headline="ok",
    )


def test_rerunning_the_validation_cell_ignores_what_the_notebook_defined(tmp_path, capsys):
    namespace = _notebook_namespace(training={"max_steps": 3})
    cfg = params_from_notebook("sft", namespace)
    _run_later_cells(namespace, cfg, tmp_path)
    # JupyterLab: edit the parameters cell, then run it and the cells below again
    namespace.update(run="lab2", seed=5)
    again = params_from_notebook("sft", namespace)
    assert (again.run, again.seed, again.training.max_steps) == ("lab2", 5, 3)
    out = capsys.readouterr().out
    for name in ("metrics", "fig", "ax", "curve", "headline"):
        assert name in out  # said, not silently dropped
    assert "Restart Kernel and Run All Cells" in out


def test_stage_objects_are_never_parameters(tmp_path):
    from nl2sql_lib.runs import StageRun

    cfg = SFTParams(run="nb")
    namespace = _notebook_namespace(cfg=cfg, stage=StageRun(cfg, "sft"), other_cfg=SFTParams())
    assert params_from_notebook("sft", namespace).run == "lab"


def test_unknown_notebook_name_suggests_restart_and_run_all():
    namespace = _notebook_namespace(metrics={"train_loss": 0.4})  # a later cell ran first
    with pytest.raises(ParamsError) as err:
        params_from_notebook("sft", namespace)
    message = str(err.value)
    assert "unknown key 'metrics'" in message and "Restart Kernel and Run All Cells" in message
    with pytest.raises(ParamsError) as err:
        params_from_notebook("sft", _notebook_namespace(training={"max_stpes": 3}))
    assert "Restart" not in str(err.value)  # a nested typo is a typo, not the kernel's state


def test_a_later_cell_reusing_a_parameter_name_is_caught_on_a_rerun(tmp_path):
    namespace = _notebook_namespace()
    cfg = params_from_notebook("sft", namespace)
    _run_later_cells(namespace, cfg, tmp_path)
    namespace["model"] = object()  # a later cell named its loaded model like the parameter
    with pytest.raises(ParamsError) as err:
        params_from_notebook("sft", namespace)
    assert "key 'model'" in str(err.value) and "Restart Kernel and Run All Cells" in str(err.value)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_committed_parameter_files_are_valid(profile, monkeypatch):
    import os

    from nl2sql_lib.config import read_yaml

    monkeypatch.chdir(PROJECT_ROOT)  # relative paths in the files mean the project root
    folder = PROJECT_ROOT / {"smoke": "params/smoke", "cpu": "params/cpu", "gpu": "params"}[profile]
    files = sorted(folder.glob("*.yaml"))
    assert files, f"no parameter files in {folder}"
    for path in files:
        assert path.stem in STAGES, f"{path}: file name must be a stage name ({STAGES})"
        spider = read_yaml(path).get("spider_path")
        skips = read_yaml(path).get("spider_if_missing") == "skip"
        if spider and not (PROJECT_ROOT / spider).exists() and not os.environ.get("CI") and not skips:
            # A clone without ../shared/spider-dev: the eval file stops, saying what to do.
            with pytest.raises(ParamsError, match="spider_path: null"):
                load_params(path.stem, path)
            load_params(path.stem, path, spider_path=None)
            continue
        load_params(path.stem, path)


def test_command_line_overrides_reach_nested_keys(tmp_path):
    import argparse

    from nl2sql_lib.config import add_params_arguments, params_from_args

    path = write(tmp_path, "run: file\ntraining:\n  max_steps: 10\n")
    parser = argparse.ArgumentParser()
    add_params_arguments(parser, "params/cpu/sft.yaml")
    args = parser.parse_args(["--params", str(path), "--run", "cli", "--set", "training.max_steps=3",
                              "--set", "lora.r=4"])
    params = params_from_args("sft", args)
    assert (params.run, params.training.max_steps, params.lora.r) == ("cli", 3, 4)
    bad = parser.parse_args(["--params", str(path), "--set", "training.max_stpes=3"])
    with pytest.raises(ParamsError, match="training.max_stpes"):
        params_from_args("sft", bad)
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        params_from_args("sft", parser.parse_args(["--params", str(path), "--set", "nokey"]))


def test_spider_if_missing_skip_keeps_the_path_and_06_eval_notes_the_skip(tmp_path):
    from nl2sql_lib.evaluate.stage import spider_skipped

    path = write(tmp_path, "spider_path: /no/such/spider-dev\nspider_if_missing: skip\n")
    cfg = load_params("eval", path)
    assert cfg.spider_path == "/no/such/spider-dev"  # kept, so the manifest shows what was asked
    assert "/no/such/spider-dev" in spider_skipped(cfg) and "not evaluated" in spider_skipped(cfg)
    cfg.spider_path = "/elsewhere"  # assignment is checked by the same rule
    spider = tmp_path / "spider"
    spider.mkdir()
    assert spider_skipped(load_params("eval", path, spider_path=str(spider))) is None
    with pytest.raises(ParamsError, match="spider_if_missing: skip"):
        load_params("eval", path, spider_if_missing="error")


def test_command_line_set_uses_the_shared_dotted_overrides(tmp_path):
    """params_from_args and make pipeline's --set share config.apply_overrides: same groups, same errors."""
    import argparse

    from nl2sql_lib.config import params_from_args

    path = tmp_path / "sft.yaml"
    path.write_text("seed: 3\ntraining:\n  max_steps: 10\n")
    args = argparse.Namespace(params=str(path), set=["training.max_steps=4", "lora.r=8"], run="r", output_root=None)
    cfg = params_from_args("sft", args)
    assert (cfg.training.max_steps, cfg.lora.r, cfg.seed, cfg.run) == (4, 8, 3, "r")
    args.set = ["seed.value=1"]
    with pytest.raises(ParamsError, match=r"sft.yaml --set: override 'seed.value': 'seed' is a value"):
        params_from_args("sft", args)


def _parameter_models() -> list[type]:
    """Every pydantic model defined in nl2sql_lib.config: the stage models and their groups."""
    import inspect

    from pydantic import BaseModel

    import nl2sql_lib.config as config

    return [
        obj for _, obj in inspect.getmembers(config, inspect.isclass)
        if issubclass(obj, BaseModel) and obj.__module__ == config.__name__ and obj.model_fields
    ]


def test_every_parameter_field_is_described():
    models = _parameter_models()
    reached = {m for stage in STAGES for m in _models_reached_from(PARAMS_MODEL[stage])}
    assert reached <= set(models)  # the nested groups are all defined in config.py
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == []


def _models_reached_from(model: type) -> set[type]:
    """``model`` and every model its fields nest (through lists, unions and optionals)."""
    import typing

    from pydantic import BaseModel

    found, todo = set(), [model]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        for field in current.model_fields.values():
            stack = [field.annotation]
            while stack:
                annotation = stack.pop()
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    todo.append(annotation)
                stack.extend(typing.get_args(annotation))
    return found
