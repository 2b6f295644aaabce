"""All six notebooks through papermill on the smoke profile (tiny model), end to end.

This is what `make pipeline PROFILE=smoke` does; it checks that every stage leaves its artifacts
and a manifest, that 06_eval's metrics.json has the documented shape, and that no executed
notebook shows a warning a reader would have to read past (tests/notebook_warnings.py).
"""

import json
from pathlib import Path

import pytest

from nl2sql_lib.evaluate.stage import DEV
from nl2sql_lib.pipeline import NOTEBOOKS, run_pipeline
from tests.notebook_warnings import notebook_warnings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "data": ["train.jsonl", "dev.jsonl", "stats.json"],
    "sft": ["adapter", "metrics.json"],
    "grpo": ["adapter", "metrics.json"],
    "tree": ["trees.jsonl", "pairs_train.jsonl", "pairs_test.jsonl", "verification.json"],
    "reward_model": ["adapter", "metrics.json"],
    "eval": ["metrics.json", "report.md"],
}


@pytest.mark.slow
def test_smoke_pipeline_runs_every_notebook(tmp_path):
    missing = [nb for nb in NOTEBOOKS if not (PROJECT_ROOT / "notebooks" / f"{nb}.ipynb").is_file()]
    assert not missing, f"notebooks missing: {missing}"
    output_root = tmp_path / "outputs"
    summary = run_pipeline("smoke", "smoke-test", output_root=str(output_root))
    assert list(summary["stages"]) == NOTEBOOKS
    run_dir = output_root / "smoke-test"
    for stage, artifacts in EXPECTED.items():
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["stage"] == stage
        for name in artifacts:
            assert (run_dir / stage / name).exists(), f"{stage}/{name} missing"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    dev = metrics.get(DEV)
    assert dev, f"no '{DEV}' entry in metrics.json: {list(metrics)}"
    expected_keys = {"base/greedy", "sft/greedy", "sft+revise/greedy", "grpo/greedy", "sft/vote@2", "sft/rm@2", "sft/oracle@2"}
    assert expected_keys <= set(dev), f"missing {expected_keys - set(dev)}"
    assert dev["sft/oracle@2"]["ex"] >= dev["sft/greedy"]["ex"]  # the pool holds the greedy answer
    for dataset, systems in metrics.items():
        for key, row in systems.items():
            assert "/" in key, f"{dataset}: key {key!r} is not system/strategy"
            assert 0.0 <= row["ex"] <= 1.0 and row["n"] > 0
            assert "by_difficulty" in row and "errors" in row
    shown = [line for nb in NOTEBOOKS for line in notebook_warnings(run_dir / "notebooks" / f"{nb}.ipynb")]
    assert not shown, "executed notebooks show warnings:\n" + "\n".join(shown)
