"""The one trainer harness (train/common.py) of SFT, GRPO, the reward model and DPO.

Without training: what TRL's configs receive, the checkpoint fingerprint, resume decisions, the
TensorBoard folder, and the import graph of the train modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from nl2sql_lib.config import RewardModelParams, TrainingParams, load_params
from nl2sql_lib.train.common import (
    PARAMS_FINGERPRINT,
    TrainingSetupError,
    checkpoint_fingerprint,
    train,
    trl_config,
)

from tests.test_hardware import A100, CPU

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _training(**changes) -> TrainingParams:
    return TrainingParams(**changes)


# ---------------------------------------------------------------------------- the TRL config


@pytest.mark.parametrize("config_name", ["SFTConfig", "GRPOConfig", "RewardConfig", "DPOConfig"])
def test_every_trainer_gets_the_same_loop_keys(config_name, tmp_path):
    import trl

    config_cls = getattr(trl, config_name)
    params = RewardModelParams()
    extra = {"num_generations": 2, "per_device_train_batch_size": 2} if config_name == "GRPOConfig" else {}
    training = params.training.model_copy(update={"warmup_ratio": 1.0, "report_to": ["none"], **(
        {"per_device_train_batch_size": 2} if extra else {})})
    args = trl_config(config_cls, training, params.model, tmp_path, 3, hardware=CPU,
                      **{k: v for k, v in extra.items() if k != "per_device_train_batch_size"})
    assert args.warmup_steps == 1 and isinstance(args.warmup_steps, int)  # the integer guard, for all four
    assert args.report_to in ([], "none", ["none"]) and args.logging_first_step is True
    assert args.seed == 3 and args.dataloader_num_workers == 0 and args.use_cpu is True


def test_reward_and_dpo_configs_check_report_to_and_extra(tmp_path, monkeypatch):
    import importlib.util

    from trl import DPOConfig, RewardConfig

    params = RewardModelParams()
    with pytest.raises(TrainingSetupError, match="not_a_field.*RewardConfig"):
        trl_config(RewardConfig, _training(extra={"not_a_field": 1}), params.model, tmp_path, 0, hardware=A100)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(TrainingSetupError, match="wandb.*not installed"):
        trl_config(DPOConfig, _training(report_to=["wandb"]), params.dpo_policy, tmp_path, 0, hardware=A100)


# ---------------------------------------------------------------------------- fingerprints


def test_fingerprint_ignores_where_and_how_long_not_what_is_learned():
    cfg = load_params("sft", PROJECT_ROOT / "params" / "smoke" / "sft.yaml")
    base = checkpoint_fingerprint(cfg)
    moved = cfg.model_copy(update={"run": "elsewhere", "sample_dev_questions": 1, "training": cfg.training.model_copy(
        update={"max_steps": 99, "save_steps": 7, "logging_steps": 3, "report_to": [], "resume": False})})
    assert checkpoint_fingerprint(moved) == base
    learned = cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 1e-3})})
    assert checkpoint_fingerprint(learned) != base
    assert checkpoint_fingerprint(cfg.model_copy(update={"seed": 9})) != base


def test_reward_model_dpo_and_revision_fingerprints_ignore_each_others_keys():
    from nl2sql_lib.train.dpo import REWARD_MODEL_KEYS
    from nl2sql_lib.train.reward_model import POLICY_KEYS
    from nl2sql_lib.train.revision_sft import revision_fingerprint

    cfg = RewardModelParams()
    other_dpo = cfg.model_copy(update={"dpo_beta": 0.5})
    other_rm = cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 1e-3})})
    other_revision = cfg.model_copy(update={"revision_sft": True, "revision_questions": 7})

    def rm(c): return checkpoint_fingerprint(c, drop=POLICY_KEYS)
    def dpo(c): return checkpoint_fingerprint(c, drop=REWARD_MODEL_KEYS)

    assert rm(other_dpo) == rm(cfg) and rm(other_revision) == rm(cfg) and rm(other_rm) != rm(cfg)
    assert dpo(other_rm) == dpo(cfg) and dpo(other_revision) == dpo(cfg) and dpo(other_dpo) != dpo(cfg)
    assert revision_fingerprint(other_rm) == revision_fingerprint(cfg) == revision_fingerprint(other_dpo)
    assert revision_fingerprint(other_revision) != revision_fingerprint(cfg)
    assert revision_fingerprint(cfg.model_copy(update={"seed": 3})) != revision_fingerprint(cfg)
    longer = cfg.model_copy(update={"revision_training": cfg.revision_training.model_copy(update={"max_steps": 99})})
    assert revision_fingerprint(longer) == revision_fingerprint(cfg)  # more steps resume, not restart


def test_revision_fingerprint_follows_the_policy_stage(tmp_path):
    from nl2sql_lib.io import write_json
    from nl2sql_lib.train.revision_sft import revision_fingerprint

    cfg = RewardModelParams(output_root=str(tmp_path), run="r")  # revision_policy: stage:sft
    before = revision_fingerprint(cfg)
    write_json(cfg.run_dir / "sft" / "manifest.json", {"stage": "sft", "finished_at": "1"})
    assert revision_fingerprint(cfg) != before  # SFT trained again: old revision checkpoints are stale


# ---------------------------------------------------------------------------- train(): resume and logs


class FakeTrainer:
    """What train() uses of a TRL trainer; records where it resumed and the TensorBoard folder."""

    def __init__(self, callbacks):
        self.callbacks = callbacks
        self.logging_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
        self.state = SimpleNamespace(global_step=0)

    def train(self, resume_from_checkpoint=None):
        self.resumed = resume_from_checkpoint
        self.state.global_step = 4
        return SimpleNamespace(training_loss=0.123456, metrics={"train_runtime": 1.5})


def fake_stage(folder: Path):
    timed = []

    @contextmanager
    def timer(name):
        timed.append(name)
        yield

    return SimpleNamespace(dir=folder, timer=timer, timed=timed)


def test_train_resumes_only_with_an_unchanged_fingerprint(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    stage = fake_stage(tmp_path / "rm")
    first = train(stage, FakeTrainer, fingerprint={"lr": 1}, resume=True)
    assert first.resumed_from is None and stage.timed == ["train"]
    assert first.trainer.logging_dir == str(tmp_path / "rm" / "logs")  # logs/, for every stage
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # put back after training
    assert (tmp_path / "rm" / "checkpoints" / PARAMS_FINGERPRINT).is_file()
    metrics = first.metrics()
    assert metrics["train_loss"] == 0.1235 and metrics["global_step"] == 4 and "steps_timed" in metrics

    (tmp_path / "rm" / "checkpoints" / "checkpoint-4").mkdir()
    again = train(stage, FakeTrainer, fingerprint={"lr": 1}, resume=True)
    assert again.resumed_from.endswith("checkpoint-4") and again.trainer.resumed == again.resumed_from
    changed = train(stage, FakeTrainer, fingerprint={"lr": 2}, resume=True)
    assert changed.resumed_from is None and not (tmp_path / "rm" / "checkpoints" / "checkpoint-4").exists()
    (tmp_path / "rm" / "checkpoints" / "checkpoint-4").mkdir()
    assert train(stage, FakeTrainer, fingerprint={"lr": 2}, resume=False).resumed_from is None
    assert not (tmp_path / "rm" / "checkpoints" / "checkpoint-4").exists()


def test_step_time_key_is_the_same_for_every_trainer():
    """The manifests of all four stages report step_seconds_median (the harness's StepTimer)."""
    from nl2sql_lib.train.common import StepTimer

    timer = StepTimer()
    timer.durations.extend([1.0, 3.0, 2.0])
    assert timer.summary() == {"steps_timed": 3, "step_seconds_median": 2.0, "step_seconds_max": 3.0}
    for module in ("sft", "grpo", "reward_model", "dpo"):
        source = (PROJECT_ROOT / "nl2sql_lib" / "train" / f"{module}.py").read_text()
        assert "median_step_s" not in source and "statistics.median" not in source, module


# ---------------------------------------------------------------------------- no import loops


TRAIN_MODULES = ["nl2sql_lib.config", "nl2sql_lib.runs", "nl2sql_lib.rewards", "nl2sql_lib.sampling",
                 "nl2sql_lib.train.common", "nl2sql_lib.train.sft", "nl2sql_lib.train.grpo",
                 "nl2sql_lib.train.reward_model", "nl2sql_lib.train.dpo", "nl2sql_lib.data.linking",
                 "nl2sql_lib.evaluate.systems", "nl2sql_lib.tree.stage"]


@pytest.mark.parametrize("module", TRAIN_MODULES)
def test_each_module_imports_fresh(module):
    """Imported first, in a new interpreter, each module loads (a loop at import time would fail)."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_no_import_loops_between_these_modules():
    """Every import, top-level or inside a function, counted: dpo no longer reaches into
    reward_model, config no longer imports runs, rewards no longer imports scoring."""
    from tests.import_graph import import_graph, loops

    graph = import_graph(PROJECT_ROOT / "nl2sql_lib")
    mine = set(TRAIN_MODULES)
    assert [loop for loop in loops(graph) if len(mine & set(loop)) > 1] == []
    assert "nl2sql_lib.train.reward_model" not in graph["nl2sql_lib.train.dpo"]
    assert "nl2sql_lib.runs" not in graph["nl2sql_lib.config"]


def test_the_package_has_no_import_loops_at_all():
    """The whole package, not only the training modules: a loop anywhere is a failure."""
    from tests.import_graph import import_graph, loops

    assert loops(import_graph(PROJECT_ROOT / "nl2sql_lib")) == []
