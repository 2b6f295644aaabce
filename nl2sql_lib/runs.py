"""Where a run's artifacts live, and the manifest each stage writes.

    outputs/<run>/<stage>/...           artifacts of one stage
    outputs/<run>/<stage>/manifest.json parameters, versions, git commit, input hashes,
                                        timings, peak memory and headline metrics

A stage reads only what earlier stages wrote. Re-running a stage replaces only its own folder's
files (a training stage keeps ``checkpoints/`` so that it can resume). The manifest is written
last, atomically: a stage folder without one did not finish.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .config import NOTEBOOK_OF_STAGE, PROJECT_ROOT, StageParams, add_params_arguments, params_as_dict, params_from_args
from .io import read_json, write_json

TRACKED_LIBRARIES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "sqlglot", "papermill",
)


class MissingStageOutput(FileNotFoundError):
    """An earlier stage's artifact is missing: the message says which notebook to run."""


def stage_dir(params: StageParams, stage: str) -> Path:
    return params.run_dir / stage


def require_output(params: StageParams, stage: str, relative: str) -> Path:
    """The path of an artifact of an earlier ``stage`` of this run, or a clear error."""
    path = stage_dir(params, stage) / relative
    if not path.exists():
        notebook = NOTEBOOK_OF_STAGE.get(stage, stage)
        raise MissingStageOutput(
            f"{path} does not exist: run notebooks/{notebook}.ipynb for run '{params.run}' first "
            f"(make pipeline RUN={params.run} FROM={notebook})"
        )
    return path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)  # Linux reports KiB


def cuda_peak_mb() -> float | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def quiet_library_chatter() -> None:
    """Turn off library output a user cannot act on, once, where every stage starts: datasets'
    progress bar for each ``map``/``filter`` TRL runs (nine in 02_sft) and transformers' bars for
    loading weights and writing model shards. Warnings, the trainer's progress bar and the
    stage's own progress bars stay."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    # When two checkpoints are saved within a second of each other (small models, fast steps),
    # transformers says it cannot trust their mtimes and orders them by step number instead -
    # which is right for our checkpoint folders, so the warning asks nothing of the user.
    trainer_utils_logger = transformers_logging.get_logger("transformers.trainer_utils")
    if not any(isinstance(f, _DropMtimeNotice) for f in trainer_utils_logger.filters):
        trainer_utils_logger.addFilter(_DropMtimeNotice())


class _DropMtimeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("mtime may not be reliable")


class StageRun:
    """One execution of one stage: its folder, timings, input hashes and final manifest.

        stage = StageRun(params, "sft").start()
        with stage.timer("train"):
            ...
        stage.finish({"train_loss": 0.41})
    """

    def __init__(self, params: StageParams, stage: str):
        self.params = params
        self.stage = stage
        self.dir = stage_dir(params, stage)
        self.inputs: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._started: float | None = None
        self._commit: str | None = None

    def start(self) -> "StageRun":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "manifest.json").unlink(missing_ok=True)  # no manifest = not finished
        self._started = time.time()
        self._commit = git_commit()  # the code the stage starts with, even if HEAD moves meanwhile
        from .hardware import reset_decisions

        reset_decisions()  # the manifest lists the hardware decisions this stage took
        quiet_library_chatter()
        return self

    def path(self, relative: str) -> Path:
        path = self.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def record_input(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_file():
            self.inputs[str(path)] = file_sha256(path)
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and p.stat().st_size < 2**30):
                self.inputs[str(child)] = file_sha256(child)
        return path

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 2)

    def finish(self, metrics: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        total = time.time() - (self._started or time.time())
        manifest = {
            "stage": self.stage,
            "run": self.params.run,
            "status": "complete",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "parameters": params_as_dict(self.params),
            "versions": library_versions(),
            "git_commit": self._commit if self._started is not None else git_commit(),
            "machine": {"platform": platform.platform(), "cpus": _cpu_count()},
            "inputs": self.inputs,
            "timings_s": {**self.timings, "total": round(total, 2)},
            "peak_memory_mb": {"rss": peak_rss_mb(), "cuda": cuda_peak_mb()},
            "hardware": hardware_record(),
            "metrics": metrics or {},
            **extra,
        }
        write_json(self.dir / "manifest.json", manifest)
        return manifest


def hardware_record() -> dict[str, Any]:
    """The machine as the stage saw it and each hardware decision it took, with its reason
    (dtype, attention, device placement, gradient checkpointing, vLLM context...)."""
    from .hardware import detect_hardware, recorded_decisions

    try:
        machine = detect_hardware()
    except ImportError:  # no torch: nothing was decided either
        return {"machine": "unknown (torch is not installed)", "decisions": recorded_decisions()}
    return {"machine": machine.describe(), **machine.as_dict(), "decisions": recorded_decisions()}


def start_stage_from_command_line(
    stage: str,
    argv: Sequence[str] | None,
    *,
    description: str,
    example: str,
    prog: str | None = None,
    log_level: int | None = logging.INFO,
) -> tuple[StageParams, StageRun]:
    """The first half of every stage's command line: parse, read the parameters, start the stage.

        cfg, stage = start_stage_from_command_line(
            "grpo", argv, description="03_grpo without the notebook", example="params/cpu/grpo.yaml")
        metrics = run_grpo(cfg, stage)
        stage.finish(metrics)

    Parses ``--params``/``--run``/``--output-root``/``--set KEY=VALUE`` from ``argv``
    (``sys.argv[1:]`` when None; ``--help`` and usage errors exit here, as argparse does),
    applies the overrides, validates the parameters (a wrong one raises
    :class:`~nl2sql_lib.config.ParamsError` naming the key), checks the GPU memory plan
    (:func:`nl2sql_lib.memory_plan.check_stage`; nothing on a CPU) and starts the :class:`StageRun`,
    which removes the stage's old manifest. Finishing the stage and printing stay with the caller:
    each stage reports different metrics. ``example`` is the parameter file ``--help`` shows;
    ``prog`` names the program in the usage line (argparse's default is the script's file name);
    ``log_level=None`` leaves logging as it is.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_params_arguments(parser, example)
    args = parser.parse_args(argv)
    if log_level is not None:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    params = params_from_args(stage, args)
    from .memory_plan import check_stage

    origin = str(args.params) + (" with --set " + " --set ".join(args.set) if args.set else "")
    # on a GPU: the memory plan, stopping before training if it cannot fit (the error names the file)
    check_stage(stage, params, origin=origin)
    return params, StageRun(params, stage).start()


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def policy_stage_metrics(params: StageParams, spec: str) -> dict[str, Any]:
    """metrics.json of the stage a ``stage:<name>`` model spec points at, or {} for other specs."""
    if not spec.startswith("stage:"):
        return {}
    path = params.run_dir / spec.split(":", 1)[1] / "metrics.json"
    data = read_json(path) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def stage_manifest_sha256(params: StageParams, stage: str) -> str | None:
    """A short hash of a stage's manifest, which is rewritten whenever the stage runs again: what
    later stages key their caches on for "that stage's model" (None: it has not finished)."""
    import hashlib

    manifest = params.run_dir / stage / "manifest.json"
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else None


def policy_manifest_sha256(params: StageParams, spec: str) -> str | None:
    """:func:`stage_manifest_sha256` of the stage a ``stage:<name>`` model spec points at; None for
    other specs (their weights do not change under a run)."""
    return stage_manifest_sha256(params, spec.split(":", 1)[1]) if spec.startswith("stage:") else None


def schema_render_for(params: StageParams, override: Any = None, policy_spec: str | None = None):
    """The schema rendering a stage's prompts use, so every stage shows a model the prompts it knows.

    In order: the stage's own ``schema_render`` parameter (``override``); the rendering the
    policy's stage recorded in its metrics.json (``policy_spec`` = ``stage:sft`` ...); the data
    stage's parameters; the defaults.
    """
    from .config import SchemaParams

    if override is not None:
        return override
    if policy_spec:
        trained = policy_stage_metrics(params, policy_spec).get("schema_render")
        if trained:
            return SchemaParams.model_validate(trained)
    manifest = params.run_dir / "data" / "manifest.json"
    if manifest.is_file():
        rendered = read_json(manifest).get("parameters", {}).get("schema_render")
        if rendered:
            return SchemaParams.model_validate(rendered)
    return SchemaParams()


def schema_params_for(params: StageParams):
    """The schema rendering of ``params``'s prompts: the one helper every stage calls.

    :func:`schema_render_for` with the stage's own ``schema_render`` parameter (when it has one)
    and the model it prompts after training (``params.prompt_policy_spec``: GRPO's ``model``,
    the trees' ``policy``; None for SFT, the reward model and 06_eval, whose prompts follow the
    data stage).
    """
    return schema_render_for(params, getattr(params, "schema_render", None), params.prompt_policy_spec)
