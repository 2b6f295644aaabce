"""Every stage has a command line, and its notebook and its command line record the same figures.

Each stage module has the same three steps: ``run_<stage>(cfg, stage)`` does the work,
``headline(metrics)`` picks the figures the manifest records, and ``main(argv)`` is
``python -m <module> --params FILE --run RUN [--set key=value]``. The notebook's last cell calls
the same ``headline``. The first tests run both paths on the same metrics (the stage's work
stubbed, so they take seconds); the last ones run the two new command lines (01_data, 06_eval)
for real on the smoke profile.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nl2sql_lib.config import NOTEBOOK_OF_STAGE, STAGES, load_params
from nl2sql_lib.io import read_json
from nl2sql_lib.runs import StageRun

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMOKE = PROJECT_ROOT / "params" / "smoke"

# stage: (the module whose headline the notebook calls, its run function, the module of main)
STAGE_MODULES = {
    "data": ("nl2sql_lib.data.build", "run_data", "nl2sql_lib.data.build"),
    "sft": ("nl2sql_lib.train.sft", "run_sft", "nl2sql_lib.train.sft"),
    "grpo": ("nl2sql_lib.train.grpo", "run_grpo", "nl2sql_lib.train.grpo"),
    "tree": ("nl2sql_lib.tree.stage", "run_tree", "nl2sql_lib.tree.__main__"),
    "reward_model": ("nl2sql_lib.train.reward_model", "run_reward_model", "nl2sql_lib.train.reward_model"),
    "eval": ("nl2sql_lib.evaluate.stage", "run_eval", "nl2sql_lib.evaluate.stage"),
}

# What each run_<stage> returns, in the shape of a real run: the figures the manifest should
# keep and the bulky parts it should not (curves, samples, tables by difficulty...).
RUN_METRICS = {
    "data": {"n_train": 1820, "n_dev": 480, "train_databases": 7, "dev_databases": 3, "db_overlap": 0,
             "missing_db": 0, "prompt_tokens_median": 251.0, "prompt_tokens_p90": 284,
             "prompt_tokens_max": 384, "with_reasoning": 0},
    "sft": {"task": "sql", "format": "plain", "method": "lora", "train_loss": 0.355, "loss_first": 1.32,
            "loss_last": 0.216, "train_examples": 292, "global_step": 73, "step_seconds_median": 4.04,
            "peak_rss_mb": 5100.0, "dev_samples_before": {"n": 4, "correct": 0, "executes": 1},
            "dev_samples_after": {"n": 4, "correct": 2, "executes": 3},
            "loss_curve": [{"step": 1, "loss": 1.32}, {"step": 73, "loss": 0.216}],
            "samples": [{"question": "q", "before": "SELECT", "after": "SELECT 1"}]},
    "grpo": {"steps": 24, "seconds_per_step": 11.4, "train_examples": 200, "dropped_long_prompts": 0,
             "kl_end": None, "entropy_start": 0.124, "entropy_end": 0.126,
             "execution_trend": {"first_tenth": 0.25, "last_tenth": 0.3, "rose": True},
             "curves": {"reward": [[1, 0.2], [24, 0.3]]}, "samples": {"start": [], "end": []}},
    "tree": {"questions": 56, "nodes": 721, "correct_nodes": 143, "nodes_by_depth": {"0": 112},
             "node_errors": {"none": 500}, "questions_solved_at_root": 31, "questions_solved": 31,
             "questions_solved_only_by_revision": 0, "questions_never_solved": 25,
             "repair_by_depth": {"1": {"wrong": 10, "repaired": 0}}, "pairs_train": 139, "pairs_test": 60,
             "pair_stats": {"by_reason": {"correct_vs_wrong": 199}},
             "verification": {"ok": True, "discrepancies": 0, "warnings": 0}, "merge": {"shards": 1},
             "build_seconds": 420.5},
    "reward_model": {"n": 80, "pairwise_accuracy": 0.9, "mean_gap": 4.96, "median_gap": 4.52, "ties": 0,
                     "n_questions": 47, "by_difficulty": {"simple": {"n": 30, "pairwise_accuracy": 0.9}},
                     "by_reason": {"tree": 0.9}, "input_format": "prompt+sql+execution",
                     "pairs": {"pairs_source": "tree"}, "train": {"steps": 40, "step_seconds_median": 3.1},
                     "adapter": "outputs/cpu/reward_model/adapter"},
    "eval": {"dev": {"base/greedy": {"n": 40, "ex": 0.0, "ex_ci": [0.0, 0.09]},
                     "sft/greedy": {"n": 40, "ex": 0.175, "ex_ci": [0.09, 0.32]}}},
}
# Parts of a run's metrics that belong in its metrics.json, not in the manifest.
NOT_IN_MANIFEST = {
    "sft": {"loss_curve", "samples", "task", "format", "method"},
    "grpo": {"curves", "samples", "execution_trend"},
    "tree": {"repair_by_depth", "pair_stats", "nodes_by_depth", "node_errors", "merge"},
    "reward_model": {"by_difficulty", "by_reason", "pairs", "train"},
}


def test_every_stage_is_covered_here():
    assert set(STAGE_MODULES) == set(STAGES) == set(RUN_METRICS)


def _notebook_last_cell(stage: str) -> str:
    notebook = json.loads((PROJECT_ROOT / "notebooks" / f"{NOTEBOOK_OF_STAGE[stage]}.ipynb").read_text())
    return "".join([c for c in notebook["cells"] if c["cell_type"] == "code"][-1]["source"])


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_and_command_line_record_the_same_headline(stage, tmp_path, monkeypatch, capsys):
    module_name, run_name, main_module_name = STAGE_MODULES[stage]
    module, main_module = importlib.import_module(module_name), importlib.import_module(main_module_name)
    metrics = RUN_METRICS[stage]
    ran = []

    def fake_run(cfg, stage_run, *args, **kwargs):
        ran.append(stage_run.stage)
        return json.loads(json.dumps(metrics))  # a copy: neither path may change the other's

    monkeypatch.setattr(main_module, run_name, fake_run)
    outputs = tmp_path / "outputs"

    # the command line
    rc = main_module.main(["--params", str(SMOKE / f"{stage}.yaml"), "--run", "cli", "--output-root", str(outputs)])
    assert rc == 0 and ran == [stage]
    by_command_line = read_json(outputs / "cli" / stage / "manifest.json")["metrics"]

    # the notebook's last cell, run as papermill runs it after the stage's cells
    cfg = load_params(stage, SMOKE / f"{stage}.yaml", output_root=str(outputs), run="nb")
    namespace = {"cfg": cfg, "stage": StageRun(cfg, stage).start(), "metrics": json.loads(json.dumps(metrics))}
    exec(_notebook_last_cell(stage), namespace)
    by_notebook = read_json(outputs / "nb" / stage / "manifest.json")["metrics"]

    assert by_notebook == by_command_line == module.headline(metrics)
    assert by_notebook, f"{stage}: the manifest records no figures"
    left_out = NOT_IN_MANIFEST.get(stage, set())
    assert not left_out & set(by_notebook), f"{stage}: {left_out & set(by_notebook)} belong in metrics.json"
    assert set(metrics) - left_out <= set(by_notebook)  # every other figure is kept (GRPO adds trend ones)
    capsys.readouterr()


def test_sft_manifest_keeps_step_time_and_dev_samples_from_the_command_line_too():
    """The command line used to record six of the notebook's nine figures."""
    from nl2sql_lib.train.sft import headline

    figures = headline(RUN_METRICS["sft"])
    assert {"step_seconds_median", "dev_samples_before", "dev_samples_after"} <= set(figures)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_command_line_has_help(stage, capsys):
    main_module = importlib.import_module(STAGE_MODULES[stage][2])
    with pytest.raises(SystemExit) as stopped:
        main_module.main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert "--params" in text and "--set KEY=VALUE" in text and "without the notebook" in text


# ---------------------------------------------------------------------------------------------
# The two new command lines, for real
# ---------------------------------------------------------------------------------------------


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """01_data from its command line on the smoke profile (the bundled benchmark, seconds)."""
    outputs = tmp_path_factory.mktemp("stage-commands") / "outputs"
    done = _run_module("nl2sql_lib.data.build", "--params", "params/smoke/data.yaml", "--run", "cli",
                       "--output-root", str(outputs), "--set", "plots=false")
    assert done.returncode == 0, done.stderr[-3000:]
    return outputs, done


def test_data_command_line_writes_the_splits_and_the_manifest(data_run):
    from nl2sql_lib.data.build import headline
    from nl2sql_lib.data.stats import headline as stats_headline

    outputs, done = data_run
    data = outputs / "cli" / "data"
    manifest = read_json(data / "manifest.json")
    assert manifest["status"] == "complete" and manifest["parameters"]["plots"] is False  # --set applied
    assert manifest["metrics"] == headline(stats_headline(read_json(data / "stats.json")))
    assert manifest["metrics"]["n_train"] > 0 and manifest["metrics"]["n_dev"] > 0
    assert (data / "train.jsonl").is_file() and (data / "dev.jsonl").is_file() and not (data / "plots").exists()
    assert json.loads(done.stdout[done.stdout.index("{"):]) == manifest["metrics"]


@pytest.mark.slow
def test_eval_command_line_scores_the_base_model_and_writes_the_report(data_run):
    """06_eval from its command line: the tiny random model on two dev questions of the data run."""
    outputs, _ = data_run
    done = _run_module("nl2sql_lib.evaluate.stage", "--params", "params/smoke/eval.yaml", "--run", "cli",
                       "--output-root", str(outputs), "--set", "systems=[base]", "--set", "best_of_n_systems=[]",
                       "--set", "max_dev_examples=2", "--set", "max_new_tokens=8", "--set", "plots=false")
    assert done.returncode == 0, done.stderr[-3000:]
    eval_dir = outputs / "cli" / "eval"
    manifest = read_json(eval_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["parameters"]["systems"] == ["base"]
    assert manifest["metrics"] == read_json(eval_dir / "metrics.json")
    assert manifest["metrics"]["dev"]["base/greedy"]["n"] == 2
    assert (eval_dir / "report.md").is_file()
    printed = json.loads(done.stdout[done.stdout.index("{"): done.stdout.rindex("}") + 1])
    assert set(printed) == {"dev:base/greedy"} and f"report: {eval_dir / 'report.md'}" in done.stdout


def test_the_evaluator_command_stays_the_evaluator():
    """``python -m nl2sql_lib.evaluate`` scores prediction files; the stage is evaluate.stage."""
    done = _run_module("nl2sql_lib.evaluate", "--help")
    assert done.returncode == 0 and "--gold" in done.stdout and "--params" not in done.stdout
