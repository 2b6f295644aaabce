"""Build trees in shards: one worker process per shard (one per GPU when there are GPUs).

    shard_dir/
      run.json                       what the shards were built with (a resume must match it)
      shard-00-of-02.jsonl           one finished tree per line, appended and fsync'ed as built
      shard-01-of-02.jsonl

Questions are split round-robin over ``workers`` shards. Each worker appends every finished tree
to its shard file at once, so a killed run loses at most the chunk that was being generated. On
resume, a shard's valid lines are kept (a line cut by the kill is dropped) and their question
ids are skipped. :func:`merge_shards` then validates every tree, drops duplicates by question id
and writes one trees file in the questions' order.

Workers are started with multiprocessing's ``spawn`` method (safe with CUDA and threads); with a
single worker the shard is built in this process. There is no scheduler beyond the split.

The hardware decisions a worker takes when it loads its model (dtype, attention, placement on
its GPU, vLLM's context) are written to ``decisions-XX-of-YY.json`` beside its shard as it
exits, and the parent records them (:func:`nl2sql_lib.hardware.log_decisions`), so they reach
the stage's manifest as a single-process run's do.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..data.example import Example
from ..io import append_jsonl, write_json, write_jsonl
from .builder import BuildSettings, Policy, build_trees
from .nodes import Tree, structure_problems


class ShardError(RuntimeError):
    """A shard worker failed; the message names the shard and where its log went."""


# ---------------------------------------------------------------------------------------------
# What a worker needs, in picklable form
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelPolicySource:
    """Builds a model-backed policy inside a worker (so each worker loads its own model).

    With GPUs, worker ``i`` sees only GPU ``devices[i % len(devices)]`` (set before torch
    touches CUDA in the fresh spawned process).
    """

    model: dict[str, Any]  # ModelParams as a dict
    run_dir: str | None
    max_new_tokens: int
    batch_size: int = 8
    use_vllm: bool = False
    devices: list[str] = field(default_factory=list)
    seed: int = 0  # worker i samples with seed + i, so shards do not share random streams
    context: Any = None  # generate.EngineContext: the prompts that size a vLLM engine's context

    def build(self, worker_index: int) -> Policy:
        if self.devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.devices[worker_index % len(self.devices)]
        from ..config import ModelParams
        from ..generate import make_generator
        from .builder import model_policy

        generator = make_generator(
            ModelParams(**self.model),
            run_dir=self.run_dir,
            use_vllm=self.use_vllm,
            batch_size=self.batch_size,
            progress=False,  # many small calls: one bar each would bury the notebook's output
            seed=self.seed + worker_index,
            context=self.context,
        )
        return model_policy(generator, self.max_new_tokens)

    def describe(self) -> str:
        return f"model:{self.model.get('spec')}"


@dataclass
class SchemaTextSource:
    """The schema text of an example's database as the SQL prompt shows it."""

    schema_params: dict[str, Any] | None = None

    def __call__(self, example: Example) -> str:
        from ..config import SchemaParams
        from ..data.schema import schema_text_for

        params = SchemaParams(**self.schema_params) if self.schema_params else SchemaParams()
        return schema_text_for(example, params)


@dataclass
class ShardJob:
    index: int
    path: str
    examples: list[dict[str, Any]]
    policy: Any  # a Policy, or a source with .build(worker_index)
    settings: BuildSettings
    schema: SchemaTextSource
    semantics: str = "bird"
    sql_timeout: float = 2.0
    workers: int = 1  # how many shards the run has (names the decisions file)


def local_gpu_devices() -> list[str]:
    """The GPU ids this process may use (respecting CUDA_VISIBLE_DEVICES), or [] on CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        count = 0
    if count == 0:
        return []
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Shard files
# ---------------------------------------------------------------------------------------------


def shard_path(shard_dir: str | Path, index: int, workers: int) -> Path:
    return Path(shard_dir) / f"shard-{index:02d}-of-{workers:02d}.jsonl"


def split_round_robin(items: Sequence[Any], workers: int) -> list[list[Any]]:
    return [list(items[i::workers]) for i in range(workers)]


def read_shard(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The valid JSON records of a shard file and the number of broken lines skipped."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    records, broken = [], 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                broken += 1  # typically the last line, cut by a kill
                continue
            if isinstance(record, dict) and "question_id" in record:
                records.append(record)
            else:
                broken += 1
    return records, broken


def repair_shard(path: str | Path) -> set[str]:
    """Keep only a shard's valid lines (so appending cannot glue onto a cut line); return done ids."""
    path = Path(path)
    records, broken = read_shard(path)
    if broken or (path.is_file() and not path.read_bytes().endswith(b"\n") and path.stat().st_size):
        write_jsonl(path, records)
    return {str(r["question_id"]) for r in records}


def _run_job(job: ShardJob) -> int:
    """Build the trees of one shard not already in its file; returns how many were built."""
    from ..sql.judge import Judge

    done = repair_shard(job.path)
    todo = [Example.from_dict(e) for e in job.examples if str(e["question_id"]) not in done]
    if not todo:
        return 0
    policy = job.policy.build(job.index) if hasattr(job.policy, "build") else job.policy
    judge = Judge(semantics=job.semantics, timeout=job.sql_timeout)
    trees = build_trees(
        todo, policy, judge, job.schema, job.settings, on_tree=lambda t: append_jsonl(job.path, t)
    )
    return len(trees)


def decisions_path(shard_dir: str | Path, index: int, workers: int) -> Path:
    """Where worker ``index`` leaves the hardware decisions it took."""
    return Path(shard_dir) / f"decisions-{index:02d}-of-{workers:02d}.json"


def _save_decisions(job: ShardJob) -> None:
    """Write the hardware decisions this worker process took (none when it built no policy)."""
    from ..hardware import recorded_decisions

    write_json(decisions_path(Path(job.path).parent, job.index, job.workers), recorded_decisions())


def _worker_main(job: ShardJob) -> None:
    """Entry point of a spawned worker: run the job, hand its hardware decisions to the parent,
    exit non-zero with a traceback on failure."""
    try:
        _run_job(job)
        _save_decisions(job)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)


def _record_worker_decisions(shard_dir: Path, workers: int) -> None:
    """Record in this (the parent) process the hardware decisions the workers took, once each,
    marked as the workers' (each sees one GPU, as cuda:0); they reach the stage's manifest."""
    from ..hardware import Decision, log_decisions
    from ..io import read_json

    for index in range(workers):
        path = decisions_path(shard_dir, index, workers)
        if not path.is_file():
            continue
        for item in read_json(path):
            log_decisions(Decision(item["what"], item["choice"], f"{item['reason']} (tree shard workers)",
                                   bool(item.get("downgraded"))))


# ---------------------------------------------------------------------------------------------
# Run, resume, merge
# ---------------------------------------------------------------------------------------------


def _fingerprint(examples: Sequence[Example], policy: Any, settings: BuildSettings, workers: int, extra: dict) -> dict:
    ids = hashlib.sha256("\n".join(e.question_id for e in examples).encode()).hexdigest()
    describe = policy.describe() if hasattr(policy, "describe") else type(policy).__name__
    return {"workers": workers, "questions": ids, "policy": describe, "settings": asdict(settings), **extra}


def run_sharded(
    examples: Sequence[Example],
    policy: Any,
    settings: BuildSettings,
    shard_dir: str | Path,
    *,
    workers: int = 1,
    schema: SchemaTextSource | None = None,
    semantics: str = "bird",
    sql_timeout: float = 2.0,
    resume: bool = True,
    fingerprint: dict[str, Any] | None = None,
) -> list[Path]:
    """Build the trees of ``examples`` into ``workers`` shard files; return their paths.

    ``policy`` is a policy callable (picklable when ``workers > 1``) or a source with
    ``.build(worker_index)`` such as :class:`ModelPolicySource`. With ``resume`` and a matching
    ``run.json``, questions already in the shards are skipped; otherwise the shards start empty.
    ``fingerprint`` adds what else must match for a resume (e.g. the policy weights' stamp).
    """
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    schema = schema or SchemaTextSource()
    stamp = _fingerprint(examples, policy, settings, workers, {"semantics": semantics, "schema": schema.schema_params, **(fingerprint or {})})
    stamp_path = shard_dir / "run.json"
    previous = json.loads(stamp_path.read_text()) if stamp_path.is_file() else None
    if not resume or previous != stamp:
        for old in shard_dir.glob("shard-*.jsonl"):
            old.unlink()
        write_json(stamp_path, stamp)

    paths = [shard_path(shard_dir, i, workers) for i in range(workers)]
    jobs = [
        ShardJob(i, str(paths[i]), [e.to_dict() for e in part], policy, settings, schema, semantics, sql_timeout,
                 workers)
        for i, part in enumerate(split_round_robin(list(examples), workers))
    ]
    if workers == 1:
        _run_job(jobs[0])
        return paths

    for index in range(workers):
        decisions_path(shard_dir, index, workers).unlink(missing_ok=True)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(job,), name=f"tree-shard-{job.index}") for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    _record_worker_decisions(shard_dir, workers)
    failed = [(p.name, p.exitcode) for p in processes if p.exitcode != 0]
    if failed:
        raise ShardError(
            f"tree shard worker(s) failed: {failed} (see the traceback above); the finished "
            f"questions are kept in {shard_dir} and a re-run resumes from them"
        )
    return paths


def merge_shards(
    paths: Sequence[str | Path], out_path: str | Path, order: Sequence[str] | None = None
) -> dict[str, Any]:
    """Validate and deduplicate shard files into one trees file; return what was dropped.

    A tree is dropped when it does not parse or breaks a structural invariant (reported under
    ``invalid``); a repeated question id keeps its first tree. ``order`` (question ids) fixes
    the output order; ids of ``order`` without a tree are reported as ``missing``.
    """
    trees: dict[str, Tree] = {}
    invalid: list[dict[str, str]] = []
    duplicates = broken = 0
    for path in paths:
        records, bad = read_shard(path)
        broken += bad
        for number, record in enumerate(records, start=1):
            try:
                tree = Tree.from_dict(record, origin=f"{path}: tree {number}")
            except ValueError as exc:
                invalid.append({"question_id": str(record.get("question_id")), "problem": str(exc)})
                continue
            problems = structure_problems(tree)
            if problems:
                invalid.append({"question_id": tree.question_id, "problem": "; ".join(problems)})
                continue
            if tree.question_id in trees:
                duplicates += 1
                continue
            trees[tree.question_id] = tree
    ids = list(order) if order is not None else list(trees)
    ordered = [trees[q] for q in ids if q in trees]
    if order is not None:
        ordered += [t for q, t in trees.items() if q not in set(ids)]
    write_jsonl(out_path, ordered)
    return {
        "trees": len(ordered),
        "duplicates_dropped": duplicates,
        "broken_lines": broken,
        "invalid": invalid,
        "missing": [q for q in (order or []) if q not in trees],
    }


def read_trees(path: str | Path) -> list[Tree]:
    from ..io import iter_jsonl

    return [Tree.from_dict(r, origin=f"{path}: line {i}") for i, r in enumerate(iter_jsonl(path), start=1)]


__all__ = [
    "ModelPolicySource",
    "SchemaTextSource",
    "ShardError",
    "merge_shards",
    "read_shard",
    "read_trees",
    "repair_shard",
    "run_sharded",
    "shard_path",
    "split_round_robin",
]
