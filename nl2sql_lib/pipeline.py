"""Run the numbered notebooks in order with one profile's parameter files.

    python -m nl2sql_lib.pipeline --profile cpu --run cpu --from 01_data --to 06_eval
    make pipeline PROFILE=smoke RUN=try1 FROM=03_grpo        # the same, through make
    python -m nl2sql_lib.pipeline --profile gpu --set sft.training.max_steps=20 --set eval.use_vllm=false

Profiles are folders of parameter files: ``smoke`` -> params/smoke/, ``cpu`` -> params/cpu/,
``t4`` -> params/t4/ (free Colab/Kaggle T4, 16 GB), ``gpu`` -> params/ (the GPU reference runs,
A100/H100). ``--set STAGE.KEY=VALUE`` (``overrides`` in :func:`run_pipeline`) changes one key of
one stage's file for this run only; the value is read as YAML, dotted keys reach nested groups.
Every parameter file of the chosen stages is validated, overrides applied, before the first
notebook starts, so a typo stops the run in seconds, not after an hour of training; on a GPU
machine each stage's memory plan is checked then too (nl2sql_lib/memory_plan.py). Each executed
notebook is saved under outputs/<run>/notebooks/. A failing stage stops the run with the
notebook, the cell and the error; the stages before it keep their outputs, and ``--from
<stage>`` resumes there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import NOTEBOOK_OF_STAGE, PROFILE_DIRS, STAGES, ParamsError, apply_overrides, parse_params, read_yaml
from .io import write_json
from .runs import PROJECT_ROOT

NOTEBOOKS = [NOTEBOOK_OF_STAGE[stage] for stage in STAGES]

# glibc's allocator makes CPU training steps slow and erratic (docs/cpu-notes.md, gotcha 5);
# the notebook kernels inherit these from this process.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "34359738368",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
    "TOKENIZERS_PARALLELISM": "false",
}
# The embedded and tiny models never need the hub: those profiles run offline, so a stray hub
# id fails at once instead of waiting on the network. The GPU profiles download their model.
OFFLINE_PROFILES = {"smoke", "cpu"}


class _KnownParametersOnly(logging.Filter):
    """Hide papermill's "Passed unknown parameter" warnings.

    Our notebooks declare only ``params_file``/``run``/``install_from`` in their parameters cell
    and validate everything papermill injects with the stage's typed model (config.py), which is
    stricter than papermill's check: the warning would fire for every legitimate key.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


class StageFailed(RuntimeError):
    """A notebook failed; the message names it, the cell and the error."""


@dataclass
class PlannedStage:
    stage: str
    notebook: Path
    params_file: Path
    parameters: dict
    overrides: dict = field(default_factory=dict)  # dotted key -> value, already in parameters


def resolve_stage(name: str) -> str:
    """Accept '03_grpo', 'grpo' or '3' and return the stage key ('grpo')."""
    for stage, notebook in NOTEBOOK_OF_STAGE.items():
        if name in (stage, notebook) or name.lstrip("0") == notebook.split("_")[0].lstrip("0"):
            return stage
    raise ParamsError(f"unknown stage {name!r}; known: {', '.join(NOTEBOOKS)}")


def parse_set_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["sft.training.max_steps=4", "eval.use_vllm=false"]`` -> ``{"sft": {"training.max_steps": 4}, ...}``.

    The first part names the stage (``sft``, ``02_sft`` or ``2``); the value is read as YAML
    (``false``, ``null``, ``[a, b]``, ``1.0e-5``).
    """
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, rest = key.strip().partition(".")
        if not sep or not dot or not rest:
            raise ParamsError(f"--set wants STAGE.KEY=VALUE (e.g. sft.training.max_steps=4), got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
        overrides.setdefault(resolve_stage(stage), {})[rest] = value
    return overrides


def plan(profile: str, run: str, first: str, last: str, output_root: str = "outputs",
         root: Path = PROJECT_ROOT, overrides: dict[str, dict[str, Any]] | None = None) -> list[PlannedStage]:
    """The stages to run, each with its validated parameters; raises before anything runs.

    ``overrides`` maps a stage (any spelling resolve_stage takes) to ``{"dotted.key": value}``
    set on top of that stage's file (see :func:`apply_overrides`); they are validated with the
    file, and papermill receives the result.
    """
    if profile not in PROFILE_DIRS:
        raise ParamsError(f"unknown profile {profile!r}; known: {', '.join(PROFILE_DIRS)}")
    start, stop = STAGES.index(resolve_stage(first)), STAGES.index(resolve_stage(last))
    if start > stop:
        raise ParamsError(f"--from {first} comes after --to {last}")
    per_stage: dict[str, dict[str, Any]] = {}
    for name, stage_overrides in (overrides or {}).items():
        per_stage.setdefault(resolve_stage(name), {}).update(stage_overrides)
    planned = []
    validated = []
    for stage in STAGES[start : stop + 1]:
        notebook = root / "notebooks" / f"{NOTEBOOK_OF_STAGE[stage]}.ipynb"
        if not notebook.is_file():
            print(f"[pipeline] {notebook.name} does not exist yet: skipped", flush=True)
            continue
        params_file = root / PROFILE_DIRS[profile] / f"{stage}.yaml"
        stage_overrides = per_stage.get(stage, {})
        origin = str(params_file)
        if stage_overrides:
            origin += f" with overrides {', '.join(stage_overrides)}"
        parameters = apply_overrides(read_yaml(params_file), stage_overrides, origin)
        parameters.update(run=run, output_root=output_root, profile=profile)
        # validate now (raises with file and key), from the root: papermill runs the notebooks
        # there, so a relative input path means the same to the check and to the stage
        with contextlib.chdir(root):
            validated.append((stage, parse_params(stage, parameters, origin=origin), origin))
        planned.append(PlannedStage(stage, notebook, params_file, parameters, dict(stage_overrides)))
    check_memory_plans(validated, root)
    return planned


def check_memory_plans(validated: list[tuple[str, Any, str]], root: Path = PROJECT_ROOT) -> None:
    """On a CUDA machine, print each stage's GPU memory plan beside the card's memory, and stop
    when one cannot fit (:mod:`nl2sql_lib.memory_plan`) - before any download or training.

    ``validated``: (stage, parameters, origin) for each planned stage; the error names the origin.
    """
    from .hardware import detect_hardware
    from .memory_plan import check_stage

    hardware = detect_hardware()
    if not hardware.cuda:
        print("[pipeline] no CUDA GPU: memory plans not checked", flush=True)
        return
    print(f"[pipeline] memory plans for {hardware.describe()}", flush=True)
    for stage, cfg, origin in validated:
        with contextlib.chdir(root):
            check_stage(stage, cfg, hardware, print_fn=lambda line: print(f"[pipeline] {line}", flush=True),
                        origin=origin)


def _kernel_name() -> str:
    """The project's kernel when `make setup` installed it, else the current Python's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "nl2sql-lab" if "nl2sql-lab" in KernelSpecManager().find_kernel_specs() else "python3"


def execute_stage(item: PlannedStage, out_dir: Path, root: Path = PROJECT_ROOT) -> float:
    """Run one notebook with papermill; returns its wall time, raises StageFailed on error."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    papermill_log = logging.getLogger("papermill")
    if not any(isinstance(f, _KnownParametersOnly) for f in papermill_log.filters):
        papermill_log.addFilter(_KnownParametersOnly())

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / item.notebook.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(item.notebook), str(output), parameters=item.parameters, cwd=str(root),
            kernel_name=_kernel_name(), progress_bar=False, log_output=False,
        )
    except PapermillExecutionError as exc:
        raise StageFailed(
            f"stage {item.notebook.stem} failed in cell {exc.cell_index} "
            f"(execution count {exc.exec_count}): {exc.ename}: {exc.evalue}\n"
            f"  executed notebook with the traceback: {output}\n"
            f"  parameters: {item.params_file}\n"
            f"  earlier stages' outputs are intact; after fixing, resume with "
            f"make pipeline RUN={item.parameters['run']} PROFILE={item.parameters['profile']} "
            f"FROM={item.notebook.stem}"
        ) from None
    return time.perf_counter() - start


def run_pipeline(profile: str, run: str, first: str = "01_data", last: str = "06_eval",
                 output_root: str = "outputs", root: Path = PROJECT_ROOT,
                 overrides: dict[str, dict[str, Any]] | None = None) -> dict:
    """Validate, then run the stages ``first``..``last`` of ``profile``; see :func:`plan` for
    ``overrides``. Returns the summary also written to outputs/<run>/pipeline.json."""
    for key, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(key, value)
    if profile in OFFLINE_PROFILES:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = plan(profile, run, first, last, output_root, root, overrides)
    run_dir = root / output_root / run
    summary = {"profile": profile, "run": run, "stages": {}, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if any(item.overrides for item in stages):
        summary["overrides"] = {item.stage: item.overrides for item in stages if item.overrides}
    for item in stages:
        changed = f", overridden: {', '.join(item.overrides)}" if item.overrides else ""
        print(f"[pipeline] {item.notebook.stem} with {item.params_file.relative_to(root)}{changed} ...", flush=True)
        seconds = execute_stage(item, run_dir / "notebooks", root)
        summary["stages"][item.notebook.stem] = {"seconds": round(seconds, 1)}
        print(f"[pipeline] {item.notebook.stem} done in {seconds:.0f} s", flush=True)
        write_json(run_dir / "pipeline.json", summary)  # after each stage: survives a later failure
    summary["total_seconds"] = round(sum(s["seconds"] for s in summary["stages"].values()), 1)
    write_json(run_dir / "pipeline.json", summary)
    (run_dir / "summary.md").write_text(run_summary(run_dir))
    return summary


def run_summary(run_dir: str | Path) -> str:
    """A markdown table of a run: each finished stage's time, peak memory and scalar metrics."""
    from .io import read_json

    run_dir = Path(run_dir)
    lines = ["| stage | time | peak RSS | headline metrics |", "|---|---|---|---|"]
    for stage in STAGES:
        manifest_path = run_dir / stage / "manifest.json"
        if not manifest_path.is_file():
            lines.append(f"| {NOTEBOOK_OF_STAGE[stage]} | not finished | | |")
            continue
        manifest = read_json(manifest_path)
        seconds = manifest.get("timings_s", {}).get("total", 0.0)
        rss = (manifest.get("peak_memory_mb") or {}).get("rss") or 0.0
        scalars = [
            f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in manifest.get("metrics", {}).items()
            if isinstance(value, (int, float, str)) and not isinstance(value, bool)
        ]
        lines.append(
            f"| {NOTEBOOK_OF_STAGE[stage]} | {seconds / 60:.1f} min | {rss / 1024:.1f} GiB | "
            f"{'; '.join(scalars[:8])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILE_DIRS))
    parser.add_argument("--run", default=None, help="run folder under outputs/ (default: the profile)")
    parser.add_argument("--from", dest="first", default="01_data", help="first stage, e.g. 03_grpo")
    parser.add_argument("--to", dest="last", default="06_eval", help="last stage")
    parser.add_argument("--output-root", default="outputs")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="override one parameter of one stage for this run, e.g. "
                        "--set sft.training.max_steps=20 (value read as YAML; repeatable)")
    parser.add_argument("--summary", metavar="RUN_DIR", help="only print the summary of a run folder")
    args = parser.parse_args(argv)
    if args.summary:
        print(run_summary(args.summary), end="")
        return 0
    try:
        overrides = parse_set_options(args.set)
        summary = run_pipeline(args.profile, args.run or args.profile, args.first, args.last,
                               args.output_root, overrides=overrides)
    except (ParamsError, StageFailed) as exc:
        print(f"[pipeline] {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
