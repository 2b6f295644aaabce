"""accelerate: the launch configs are valid, and the smoke SFT runs as 2 CPU processes (DDP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_sft import make_run

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((PROJECT_ROOT / "params" / "accelerate").glob("*.yaml"))


def test_every_launch_config_loads_in_accelerate():
    from accelerate.commands.config.config_args import ClusterConfig

    names = {p.stem for p in CONFIGS}
    assert names == {"multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}
    kinds = {}
    for path in CONFIGS:
        config = ClusterConfig.from_yaml_file(str(path))  # unknown keys raise here
        kinds[path.stem] = config.distributed_type.value
        # The trainer's bf16/fp16 (per GPU: fp16 on a T4) decide, not a fixed bf16 here
        assert config.mixed_precision == "no" and config.num_machines == 1
    assert kinds == {"multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED",
                     "deepspeed_zero3": "DEEPSPEED"}
    zero3 = yaml.safe_load((PROJECT_ROOT / "params" / "accelerate" / "deepspeed_zero3.yaml").read_text())
    assert zero3["deepspeed_config"]["zero_stage"] == 3
    assert zero3["deepspeed_config"]["zero3_save_16bit_model"] is True


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_launch_configs_take_the_process_count_from_the_command_line(path):
    """accelerate cannot infer the process count from a config file: absent there, it stops and
    asks for --num_processes (accelerate/commands/launch.py), so no file hard-codes one (8 on a
    2-GPU machine would fail) and each header shows the command that gives one per GPU."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    raw = yaml.safe_load(path.read_text())
    assert "num_processes" not in raw
    assert ClusterConfig.from_yaml_file(str(path)).num_processes == -1  # accelerate's "not given"
    assert "--num_processes $(nvidia-smi -L | wc -l)" in path.read_text()
    parser = launch_command_parser()
    without = parser.parse_args(["--config_file", str(path), "-m", "nl2sql_lib.train.sft"])
    with pytest.raises(ValueError, match="--num_processes"):
        _validate_launch_command(without)
    given = parser.parse_args(["--config_file", str(path), "--num_processes", "4", "-m", "nl2sql_lib.train.sft"])
    _validate_launch_command(given)
    assert given.num_processes == 4 and given.mixed_precision == "no"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.policy_training
def test_smoke_sft_on_two_cpu_processes(tmp_path):
    output_root = tmp_path / "outputs"
    run_dir = make_run(output_root / "ddp", n_train=16, n_dev=2)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",  # two processes share two cores
        # An empty model cache, so both workers race to build the tiny model: a regression test
        # for transformers' save_pretrained writing nothing on rank 1 of a process group.
        "NL2SQL_CACHE": str(tmp_path / "model-cache"),
        "MALLOC_MMAP_THRESHOLD_": "34359738368",
        "MALLOC_TRIM_THRESHOLD_": "68719476736",
        "MALLOC_TOP_PAD_": "1073741824",
    }
    # On a machine without GPUs, --multi_gpu starts the processes through torchrun and each one
    # joins a gloo (CPU) process group. `--cpu --num_processes 2` alone would start ONE process
    # in accelerate 1.15 unless MPI is installed (its simple launcher ignores num_processes).
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "nl2sql_lib.train.sft",
        "--params", str(PROJECT_ROOT / "params" / "smoke" / "sft.yaml"),
        "--run", "ddp", "--output-root", str(output_root),
        "--set", "training.max_steps=4", "--set", "training.save_steps=2", "--set", "training.logging_steps=1",
    ]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((run_dir / "sft" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 4
    # 4 steps x batch 4 x 2 processes = 32 records = 2 epochs of 16: the processes split the data.
    assert metrics["epoch"] == pytest.approx(2.0)
    assert [row["step"] for row in metrics["loss_curve"]] == [1, 2, 3, 4]
    manifest = json.loads((run_dir / "sft" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (run_dir / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "sft" / "adapter" / "nl2sql_base.json").is_file()
